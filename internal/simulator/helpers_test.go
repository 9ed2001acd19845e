package simulator

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

// env is a simulator behind a real HTTP server.
type env struct {
	t   testing.TB
	sim *Simulator
	srv *httptest.Server
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	sim, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(func() {
		sim.Close()
		srv.Close()
	})
	return &env{t: t, sim: sim, srv: srv}
}

// newPipeEnv is newEnv on an in-memory network, for tests that move time inside a testing/synctest bubble.
func newPipeEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	sim, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	srv := testutil.NewPipeServer(t, sim.Handler())
	t.Cleanup(sim.Close) // runs before the server's Close, as in newEnv
	return &env{t: t, sim: sim, srv: srv}
}

// revokeTokens forgets every issued token, so the next API call answers 401.
func (s *Simulator) revokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// token obtains a token with the real oauth2 client, for the default demo credentials.
func (e *env) token() string {
	e.t.Helper()
	return e.tokenFor(DefaultTenantID, DefaultClientID, DefaultClientSecret)
}

func (e *env) tokenFor(tenant, client, secret string) string {
	e.t.Helper()
	cc := clientcredentials.Config{
		ClientID:     client,
		ClientSecret: secret,
		TokenURL:     e.srv.URL + "/" + tenant + "/oauth2/v2.0/token",
		Scopes:       []string{"https://api.securitycenter.microsoft.com/.default"},
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.srv.Client())
	tok, err := cc.Token(ctx)
	if err != nil {
		e.t.Fatalf("token: %v", err)
	}
	return tok.AccessToken
}

// get performs a GET and returns status, headers and body; a transport error fails the test.
func (e *env) get(rawURL, token string) (int, http.Header, []byte) {
	e.t.Helper()
	resp, err := e.do(rawURL, token)
	if err != nil {
		e.t.Fatalf("GET %s: %v", redact(rawURL), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("read body of %s: %v", redact(rawURL), err)
	}
	return resp.StatusCode, resp.Header, body
}

func (e *env) do(rawURL, token string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.srv.Client().Do(req)
}

func (e *env) actionURL(id string) string { return e.srv.URL + "/api/machineactions/" + id }

func (e *env) linkURL(id string, index int) string {
	return e.srv.URL + "/api/machineactions/" + id + "/GetLiveResponseResultDownloadLink(index=" + strconv.Itoa(index) + ")"
}

// link fetches a download link and fails the test unless it is a 200.
func (e *env) link(id string, index int, token string) string {
	e.t.Helper()
	status, _, body := e.get(e.linkURL(id, index), token)
	if status != http.StatusOK {
		e.t.Fatalf("link %s[%d]: status %d, body %s", id, index, status, body)
	}
	var v struct {
		Context string `json:"@odata.context"`
		Value   string `json:"value"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		e.t.Fatalf("link body %s: %v", body, err)
	}
	return v.Value
}

// apiErrorCode decodes the MDE error body.
func apiErrorCode(t *testing.T, body []byte) string {
	t.Helper()
	var v struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Target  string `json:"target"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("error body %q is not the MDE error shape: %v", body, err)
	}
	if !action.IsGUID(v.Error.Target) {
		t.Errorf("error target = %q, want a GUID", v.Error.Target)
	}
	return v.Error.Code
}

// redact removes the sig value from a link so that test output never shows it.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable url>"
	}
	q := u.Query()
	if q.Has("sig") {
		q.Set("sig", "REDACTED")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// simpleAction is a finished action with one RunScript (index 0), one GetFile (index 1) and one PutFile
// (index 2) command.
func simpleAction(id string, script []byte, file []byte) Action {
	return Action{
		MachineAction: action.MachineAction{
			ID: id, Type: "LiveResponse", Status: "Succeeded",
			Commands: []action.Command{
				runScript(action.StatusCompleted, "test.ps1", "-x"),
				{Index: 1, CommandStatus: action.StatusCompleted, Command: action.CommandSpec{Type: action.TypeGetFile, Params: []action.Param{{Key: "Path", Value: `C:\Temp\evidence.log`}}}},
				{Index: 2, CommandStatus: action.StatusCompleted, Command: action.CommandSpec{Type: action.TypePutFile, Params: []action.Param{{Key: "FileName", Value: "tool.exe"}}}},
			},
		},
		Results: map[int]Content{0: {Data: script}, 1: {Data: file}},
	}
}

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// checkGolden compares got with testdata/name, or rewrites it with -update.
func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; run go test -update and review the diff\ngot:\n%s", path, got)
	}
}

func hexEncode(b []byte) []byte {
	out := make([]byte, hex.EncodedLen(len(b)))
	hex.Encode(out, b)
	return out
}
