package simulator

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/testutil"
)

// TestConcurrentUse hammers every endpoint from several goroutines with faults on; run under -race it
// proves the locking, and the counters must add up.
func TestConcurrentUse(t *testing.T) {
	e := newEnv(t, Config{LinkLimits: "100000/1s", ActionLimits: "100000/1s",
		Faults: Faults{ServerError: 0.05, ServerErrorBurst: 2, SlowDrip: 0.05, SlowDripDelay: time.Millisecond, SlowDripChunk: 4096, Expire: 0.05}})
	actions := GenerateActions(10, 2, 2000, 5)
	for _, a := range actions {
		e.sim.AddAction(a)
	}
	const workers, rounds = 8, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			tok := e.token()
			for i := range rounds {
				a := actions[(w+i)%len(actions)]
				id := a.MachineAction.ID
				e.get(e.actionURL(id), tok)
				status, _, body := e.get(e.linkURL(id, i%2), tok)
				if status == http.StatusOK {
					var v struct{ Value string }
					_ = json.Unmarshal(body, &v)
					e.get(v.Value, "")
				}
				if i%10 == 0 {
					_ = e.sim.SetFaults(Faults{ServerError: 0.05, ServerErrorBurst: 2, Expire: float64(i%20) / 100})
				}
			}
		})
	}
	wg.Wait()
	st := e.sim.Stats()
	if st.ActionCalls != workers*rounds || st.LinkCalls != workers*rounds || st.TokenCalls != workers {
		t.Errorf("stats = %+v, want %d action calls, %d link calls, %d token calls", st, workers*rounds, workers*rounds, workers)
	}
	if st.Throttled != 0 || st.Unauthorized != 0 {
		t.Errorf("stats = %+v, want no 429 and no 401", st)
	}
	if got := len(e.sim.Admitted(DefaultTenantID, EndpointLinks)); got != workers*rounds {
		t.Errorf("admitted = %d, want %d", got, workers*rounds)
	}
}

// TestServe checks that Serve answers, and returns promptly on cancellation even while an authenticated
// request hangs in a timeout fault.
func TestServe(t *testing.T) {
	sim, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- sim.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()
	tok := tokenAt(t, base)
	if err := sim.SetFaults(Faults{Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	hung := make(chan struct{})
	go func() {
		defer close(hung)
		req, _ := http.NewRequest(http.MethodGet, base+"/api/machineactions/"+testID, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	testutil.Eventually(t, 5*time.Second, func() error {
		if sim.Stats().FaultsInjected[FaultTimeout] == 0 {
			return errors.New("no request hung yet")
		}
		return nil
	})
	start := time.Now()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("shutdown with a hung request took %s, want it released at once", d)
	}
	<-hung
}

func tokenAt(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.PostForm(base+"/"+DefaultTenantID+"/oauth2/v2.0/token", url.Values{
		"grant_type": {"client_credentials"}, "client_id": {DefaultClientID},
		"client_secret": {DefaultClientSecret}, "scope": {"x/.default"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.AccessToken == "" {
		t.Fatalf("token: %v", err)
	}
	return v.AccessToken
}

// TestNoSecretsInLogs runs a full flow, failures included, with debug logging and checks that neither the
// client secret, the bearer token nor a SAS signature reaches the log.
func TestNoSecretsInLogs(t *testing.T) {
	logs := &testutil.SyncBuffer{}
	e := newEnv(t, Config{Log: zerolog.New(logs).Level(zerolog.DebugLevel), LinkLimits: "1/1m"})
	e.sim.AddAction(simpleAction(testID, []byte(`{}`), []byte("f")))
	tok := e.token()
	link := e.link(testID, 0, tok)
	e.get(link, tok) // Authorization header on a blob: logged as a warning
	e.get(e.linkURL(testID, 1), tok)
	u, _ := url.Parse(link)
	sig := u.Query().Get("sig")
	u.RawQuery = strings.Replace(u.RawQuery, "sr=b", "sr=c", 1)
	e.get(u.String(), "")
	out := logs.String()
	for name, secret := range map[string]string{"client secret": DefaultClientSecret, "token": tok, "sig": sig, "escaped sig": url.QueryEscape(sig)} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains the %s", name)
		}
	}
	for _, want := range []string{"token issued", "download link issued", "call throttled", "Authorization header"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}
