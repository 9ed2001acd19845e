package simulator

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lr-relay/lr-relay/internal/action"
)

const testID = "0b6e5f9a-2c3d-4e5f-8a9b-0c1d2e3f4a5b"

func TestTokenErrors(t *testing.T) {
	e := newEnv(t, Config{})
	good := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {DefaultClientID},
		"client_secret": {DefaultClientSecret},
		"scope":         {"https://api.securitycenter.microsoft.com/.default"},
	}
	with := func(k, v string) url.Values {
		c := url.Values{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if v == "" {
			c.Del(k)
		} else {
			c.Set(k, v)
		}
		return c
	}
	tests := []struct {
		name       string
		tenant     string
		form       url.Values
		wantStatus int
		wantError  string
	}{
		{"ok", DefaultTenantID, good, http.StatusOK, ""},
		{"wrong secret", DefaultTenantID, with("client_secret", "nope"), http.StatusUnauthorized, "invalid_client"},
		{"missing secret", DefaultTenantID, with("client_secret", ""), http.StatusUnauthorized, "invalid_client"},
		{"unknown client", DefaultTenantID, with("client_id", "other"), http.StatusBadRequest, "unauthorized_client"},
		{"unknown tenant", "other-tenant", good, http.StatusBadRequest, "invalid_request"},
		{"wrong grant", DefaultTenantID, with("grant_type", "password"), http.StatusBadRequest, "unsupported_grant_type"},
		{"missing scope", DefaultTenantID, with("scope", ""), http.StatusBadRequest, "invalid_request"},
		{"scope without .default", DefaultTenantID, with("scope", "https://api.securitycenter.microsoft.com/Machine.Read"), http.StatusBadRequest, "invalid_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := http.PostForm(e.srv.URL+"/"+tt.tenant+"/oauth2/v2.0/token", tt.form)
			if err != nil {
				t.Fatalf("post: %v", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
			}
			var v struct {
				Error       string `json:"error"`
				Description string `json:"error_description"`
				AccessToken string `json:"access_token"`
				ExpiresIn   int    `json:"expires_in"`
				TokenType   string `json:"token_type"`
			}
			if err := json.Unmarshal(body, &v); err != nil {
				t.Fatalf("body %s: %v", body, err)
			}
			if v.Error != tt.wantError {
				t.Errorf("error = %q, want %q", v.Error, tt.wantError)
			}
			if strings.Contains(string(body), "demo-secret") || strings.Contains(string(body), "nope") {
				t.Errorf("body leaks the client secret: %s", body)
			}
			if tt.wantError == "" {
				if len(v.AccessToken) < 32 || v.TokenType != "Bearer" || v.ExpiresIn != 3600 {
					t.Errorf("token answer = %+v, want a Bearer token of at least 32 chars living 3600 s", v)
				}
			} else if !strings.HasPrefix(v.Description, "AADSTS") {
				t.Errorf("error_description = %q, want an AADSTS code first", v.Description)
			}
		})
	}
}

func TestTokenFlowAndAuth(t *testing.T) {
	e := newEnv(t, Config{
		ExtraTenants: []Credentials{{TenantID: "t2", ClientID: "c2", ClientSecret: "s2"}}})
	e.sim.AddAction(simpleAction(testID, []byte(`{}`), nil))
	tok := e.token()

	if status, _, body := e.get(e.actionURL(testID), tok); status != http.StatusOK {
		t.Fatalf("with a fresh token: status %d, body %s", status, body)
	}
	tests := []struct {
		name  string
		token string
	}{
		{"missing token", ""},
		{"unknown token", "0123456789abcdef"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := e.get(e.actionURL(testID), tt.token)
			if status != http.StatusUnauthorized {
				t.Fatalf("status = %d, want 401", status)
			}
			if got := apiErrorCode(t, body); got != "Unauthorized" {
				t.Errorf("code = %q, want Unauthorized", got)
			}
			if h.Get("WWW-Authenticate") == "" {
				t.Errorf("no WWW-Authenticate header")
			}
		})
	}
	t.Run("expired token", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newPipeEnv(t, Config{TokenTTL: time.Minute})
			e.sim.AddAction(simpleAction(testID, []byte(`{}`), nil))
			tok := e.token()
			time.Sleep(time.Minute - time.Nanosecond)
			if status, _, _ := e.get(e.actionURL(testID), tok); status != http.StatusOK {
				t.Errorf("status = %d, want 200 just before the token TTL", status)
			}
			time.Sleep(time.Nanosecond)
			if status, _, _ := e.get(e.actionURL(testID), tok); status != http.StatusUnauthorized {
				t.Errorf("status = %d, want 401 after the token TTL", status)
			}
			if st := e.sim.Stats(); st.Unauthorized != 1 {
				t.Errorf("Unauthorized = %d, want 1", st.Unauthorized)
			}
		})
	})
	t.Run("revoked token", func(t *testing.T) {
		fresh := e.token()
		e.sim.revokeTokens()
		if status, _, _ := e.get(e.actionURL(testID), fresh); status != http.StatusUnauthorized {
			t.Errorf("status = %d, want 401 after revokeTokens", status)
		}
	})
	t.Run("basic auth client credentials", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/"+DefaultTenantID+"/oauth2/v2.0/token",
			strings.NewReader("grant_type=client_credentials&scope=x%2F.default"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(DefaultClientID, DefaultClientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status = %d, want 200", resp.StatusCode)
		}
	})
	t.Run("other tenant cannot see a tenant's action", func(t *testing.T) {
		a := simpleAction("11111111-2222-4333-8444-555555555555", []byte(`{}`), nil)
		a.MachineAction.TenantID = DefaultTenantID
		e.sim.AddAction(a)
		t2 := e.tokenFor("t2", "c2", "s2")
		if status, _, _ := e.get(e.actionURL(a.MachineAction.ID), t2); status != http.StatusNotFound {
			t.Errorf("tenant t2: status = %d, want 404", status)
		}
		if status, _, _ := e.get(e.actionURL(a.MachineAction.ID), e.token()); status != http.StatusOK {
			t.Errorf("owning tenant: status = %d, want 200", status)
		}
	})
	st := e.sim.Stats()
	if st.Unauthorized != 3 || st.TokensIssued < 4 {
		t.Errorf("stats = %+v, want 3 unauthorized (the expired token has its own simulator) and at least 4 tokens issued", st)
	}
}

func TestActionEndpoint(t *testing.T) {
	e := newEnv(t, Config{})
	a := simpleAction(testID, []byte(`{}`), nil)
	a.MachineAction.TenantID = DefaultTenantID
	e.sim.AddAction(a)
	forbidden := simpleAction("99999999-9999-4999-8999-999999999999", nil, nil)
	forbidden.Forbidden = true
	e.sim.AddAction(forbidden)
	tok := e.token()

	t.Run("found", func(t *testing.T) {
		status, h, body := e.get(e.actionURL(strings.ToUpper(testID)), tok)
		if status != http.StatusOK {
			t.Fatalf("status = %d, body %s", status, body)
		}
		if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("Content-Type = %q", ct)
		}
		var got action.MachineAction
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if got.ID != testID || len(got.Commands) != 3 || got.Commands[1].Command.Param("Path") != `C:\Temp\evidence.log` {
			t.Errorf("action = %+v, want the one added", got)
		}
		var raw map[string]any
		_ = json.Unmarshal(body, &raw)
		if _, has := raw["tenantId"]; has {
			t.Errorf("answer carries tenantId; the API does not")
		}
		if raw["requestSource"] != "PublicApi" {
			t.Errorf("requestSource = %v, want the undocumented extras of real payloads", raw["requestSource"])
		}
	})
	tests := []struct {
		name       string
		id         string
		wantStatus int
		wantCode   string
	}{
		{"unknown", "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", http.StatusNotFound, "ResourceNotFound"},
		{"forbidden", forbidden.MachineAction.ID, http.StatusForbidden, "Forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := e.get(e.actionURL(tt.id), tok)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d", status, tt.wantStatus)
			}
			if got := apiErrorCode(t, body); got != tt.wantCode {
				t.Errorf("code = %q, want %q", got, tt.wantCode)
			}
		})
	}
}

func TestLinkEndpointErrors(t *testing.T) {
	e := newEnv(t, Config{})
	a := simpleAction(testID, []byte(`{}`), []byte("x"))
	a.MachineAction.Commands = append(a.MachineAction.Commands,
		action.Command{Index: 3, CommandStatus: action.StatusCreated, Command: action.CommandSpec{Type: action.TypeRunScript}},
		action.Command{Index: 4, CommandStatus: action.StatusCompleted, Command: action.CommandSpec{Type: action.TypeRunScript}})
	e.sim.AddAction(a)
	forbidden := simpleAction("99999999-9999-4999-8999-999999999999", []byte(`{}`), nil)
	forbidden.Forbidden = true
	e.sim.AddAction(forbidden)
	tok := e.token()
	tests := []struct {
		name       string
		url        string
		wantStatus int
		wantCode   string
	}{
		{"PutFile has no result", e.linkURL(testID, 2), http.StatusBadRequest, "BadRequest"},
		{"Created command", e.linkURL(testID, 3), http.StatusBadRequest, "BadRequest"},
		{"completed but no content", e.linkURL(testID, 4), http.StatusNotFound, "ResourceNotFound"},
		{"index out of range", e.linkURL(testID, 9), http.StatusNotFound, "ResourceNotFound"},
		{"unknown action", e.linkURL("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", 0), http.StatusNotFound, "ResourceNotFound"},
		{"forbidden action", e.linkURL(forbidden.MachineAction.ID, 0), http.StatusForbidden, "Forbidden"},
		{"malformed index", e.srv.URL + "/api/machineactions/" + testID + "/GetLiveResponseResultDownloadLink(index=x)", http.StatusBadRequest, "BadRequest"},
		{"unknown function", e.srv.URL + "/api/machineactions/" + testID + "/Cancel", http.StatusBadRequest, "BadRequest"},
		{"unknown path", e.srv.URL + "/api/machines", http.StatusNotFound, "ResourceNotFound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := e.get(tt.url, tok)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", status, tt.wantStatus, body)
			}
			if got := apiErrorCode(t, body); got != tt.wantCode {
				t.Errorf("code = %q, want %q", got, tt.wantCode)
			}
		})
	}
}

func TestDownloadRoundTrip(t *testing.T) {
	script := TranscriptJSON("test.ps1", 0, testID, "hello <world> & more\n\x00\x00", nil)
	file := bytes.Repeat([]byte("evidence line\r\n"), 1000)
	e := newEnv(t, Config{})
	e.sim.AddAction(simpleAction(testID, script, file))
	tok := e.token()

	t.Run("RunScript bytes as stored", func(t *testing.T) {
		link := e.link(testID, 0, tok)
		u, err := url.Parse(link)
		if err != nil {
			t.Fatal(err)
		}
		host := strings.TrimPrefix(e.srv.URL, "http://")
		if u.Host != host || !strings.HasPrefix(u.Path, "/blob/"+testID+"/0/") || len(u.Path) != len("/blob/"+testID+"/0/")+32 {
			t.Errorf("link = %s, want http://%s/blob/<id>/0/<32 hex>", redact(link), host)
		}
		if !strings.Contains(u.RawQuery, "se=2") || !strings.Contains(u.RawQuery, "%3A") || !strings.Contains(u.RawQuery, "&sp=r&sv=2019-07-07&sr=b&sig=") {
			t.Errorf("query = %s, want se (URL-encoded RFC 3339), sp, sv, sr, sig in the real order", redact(link))
		}
		se, _ := time.Parse(time.RFC3339, u.Query().Get("se"))
		if d := time.Until(se); d < 29*time.Minute || d > 30*time.Minute {
			t.Errorf("se is %s from now, want about 30m", d)
		}
		status, h, body := e.get(link, "")
		if status != http.StatusOK || !bytes.Equal(body, script) {
			t.Fatalf("status %d, body %q; want 200 and %q", status, body, script)
		}
		if h.Get("Content-Disposition") != "" {
			t.Errorf("RunScript result has Content-Disposition %q", h.Get("Content-Disposition"))
		}
	})
	t.Run("GetFile gzip with name", func(t *testing.T) {
		status, h, body := e.get(e.link(testID, 1, tok), "")
		if status != http.StatusOK {
			t.Fatalf("status = %d", status)
		}
		_, params, err := mime.ParseMediaType(h.Get("Content-Disposition"))
		if err != nil || params["filename"] != "evidence.log.gz" {
			t.Errorf("Content-Disposition = %q, want attachment; filename=\"evidence.log.gz\"", h.Get("Content-Disposition"))
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("not gzip: %v", err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, file) {
			t.Errorf("gunzipped %d bytes (err %v), want the %d stored bytes", len(got), err, len(file))
		}
	})
	st := e.sim.Stats()
	if st.BlobDownloads != 2 || st.LinkCalls != 2 || st.BlobAuthHeaders != 0 {
		t.Errorf("stats = %+v, want 2 downloads, 2 link calls, no auth headers", st)
	}
	t.Run("Authorization header on a blob is recorded", func(t *testing.T) {
		if status, _, _ := e.get(e.link(testID, 0, tok), tok); status != http.StatusOK {
			t.Errorf("status = %d", status)
		}
		if got := e.sim.Stats().BlobAuthHeaders; got != 1 {
			t.Errorf("BlobAuthHeaders = %d, want 1", got)
		}
	})
}

func TestBlobRefusals(t *testing.T) {
	e := newEnv(t, Config{})
	e.sim.AddAction(simpleAction(testID, []byte(`{"exit_code":0}`), nil))
	tok := e.token()
	link := e.link(testID, 0, tok)
	u, _ := url.Parse(link)

	tamper := func(f func(q url.Values, u *url.URL)) string {
		c := *u
		q := c.Query()
		f(q, &c)
		c.RawQuery = q.Encode()
		return c.String()
	}
	tests := []struct {
		name        string
		url         string
		wantExpired bool
	}{
		{"signature changed", tamper(func(q url.Values, _ *url.URL) { q.Set("sig", "AAAA"+q.Get("sig")[4:]) }), false},
		{"signature missing", tamper(func(q url.Values, _ *url.URL) { q.Del("sig") }), false},
		{"expiry extended", tamper(func(q url.Values, _ *url.URL) { q.Set("se", "2099-01-01T00:00:00Z") }), false},
		{"permission changed", tamper(func(q url.Values, _ *url.URL) { q.Set("sp", "rw") }), false},
		{"other index", tamper(func(_ url.Values, u *url.URL) { u.Path = strings.Replace(u.Path, "/0/", "/1/", 1) }), false},
		{"no query", tamper(func(q url.Values, _ *url.URL) { clear(q) }), false},
		{"malformed expiry", tamper(func(q url.Values, _ *url.URL) { q.Set("se", "tomorrow") }), false},
		{"malformed path", e.srv.URL + "/blob/%2e%2e/x/y?se=2099-01-01T00:00:00Z&sp=r&sv=2019-07-07&sr=b&sig=eA%3D%3D", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := e.get(tt.url, "")
			checkAuthFailed(t, status, h, body, "")
		})
	}
	t.Run("expired", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newPipeEnv(t, Config{LinkTTL: time.Minute})
			e.sim.AddAction(simpleAction(testID, []byte(`{"exit_code":0}`), nil))
			link := e.link(testID, 0, e.token())
			time.Sleep(time.Minute)
			status, h, body := e.get(link, "")
			checkAuthFailed(t, status, h, body, "Signature not valid in the specified time frame")
			if st := e.sim.Stats(); st.Expired403 != 1 || st.BadSignature403 != 0 {
				t.Errorf("Expired403 = %d, BadSignature403 = %d; want 1 and 0", st.Expired403, st.BadSignature403)
			}
		})
	})
	st := e.sim.Stats()
	if st.Expired403 != 0 || st.BadSignature403 != len(tests) {
		t.Errorf("Expired403 = %d, BadSignature403 = %d; want 0 and %d", st.Expired403, st.BadSignature403, len(tests))
	}
}

func checkAuthFailed(t *testing.T, status int, h http.Header, body []byte, wantDetail string) {
	t.Helper()
	if status != http.StatusForbidden {
		t.Fatalf("status = %d, want 403", status)
	}
	const prefix = `<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.`
	if !strings.HasPrefix(string(body), prefix) || !strings.HasSuffix(string(body), "</Error>") {
		t.Errorf("body = %s, want Azure's AuthenticationFailed XML", body)
	}
	if !strings.Contains(string(body), wantDetail) {
		t.Errorf("body = %s, want it to contain %q", body, wantDetail)
	}
	if h.Get("x-ms-error-code") != "AuthenticationFailed" {
		t.Errorf("x-ms-error-code = %q", h.Get("x-ms-error-code"))
	}
}
