package mde

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/quota"
)

func TestNewValidation(t *testing.T) {
	lim := &fakeLimiter{}
	t.Run("reports every problem", func(t *testing.T) {
		_, err := New(Config{RequestTimeout: -time.Second}, nil, Limiters{}, zerolog.Nop())
		if err == nil {
			t.Fatal("New(empty) error = nil, want errors")
		}
		for _, want := range []string{"APIURL", "TokenURL", "Scope", "ClientID", "ClientSecret", "Tenant", "UserAgent", "RequestTimeout", "Limiter"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not mention %s", err, want)
			}
		}
	})
	base := Config{
		APIURL: "https://api.securitycenter.microsoft.com/", TokenURL: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
		Scope: testScope, TenantID: testTenantID, ClientID: testClientID, ClientSecret: testSecret,
		Tenant: "acme", UserAgent: "MdePartner-LrRelay-lr-relay/1.2.3", MaxThrottleRetries: 5, RequestTimeout: 30 * time.Second,
	}
	bad := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"plain http to a real host", func(c *Config) { c.APIURL = "http://api.securitycenter.microsoft.com" }, "https"},
		{"relative api url", func(c *Config) { c.APIURL = "/api" }, "absolute"},
		{"token url needs tenant", func(c *Config) { c.TenantID = "" }, "TenantID"},
		{"ftp token url", func(c *Config) { c.TokenURL = "ftp://login.example/token" }, "https"},
		{"query in api url", func(c *Config) { c.APIURL = "https://api.example?x=1" }, "query"},
		{"unknown auth", func(c *Config) { c.Auth = "kerberos" }, "workload-identity"},
		{"certificate needs a file", func(c *Config) { c.Auth = AuthCertificate }, "ClientCertFile"},
		{"workload needs a token file", func(c *Config) { c.Auth = AuthWorkloadIdentity }, "FederatedTokenFile"},
		{"tenant required", func(c *Config) { c.Tenant = " " }, "Tenant is required"},
		{"user agent required", func(c *Config) { c.UserAgent = "" }, "UserAgent is required"},
		{"request timeout required", func(c *Config) { c.RequestTimeout = 0 }, "RequestTimeout"},
		{"negative throttle retries", func(c *Config) { c.MaxThrottleRetries = -1 }, "MaxThrottleRetries"},
		{"certificate needs https", func(c *Config) {
			c.Auth, c.ClientCertFile, c.TokenURL = AuthCertificate, "x.pem", "http://127.0.0.1:1/{tenant}/oauth2/v2.0/token"
		}, "https"},
		{"certificate needs the standard token path", func(c *Config) {
			c.Auth, c.ClientCertFile, c.TokenURL = AuthCertificate, "x.pem", "https://login.example/{tenant}/token"
		}, "oauth2/v2.0/token"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.mutate(&cfg)
			_, err := New(cfg, nil, lim.both(), zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	t.Run("values as given", func(t *testing.T) {
		c, err := New(base, nil, lim.both(), zerolog.Nop())
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if c.apiURL != "https://api.securitycenter.microsoft.com" {
			t.Errorf("apiURL = %q, want trailing slash trimmed", c.apiURL)
		}
		if want := "https://login.microsoftonline.com/" + testTenantID + "/oauth2/v2.0/token"; c.tokens.cred.(*secretCredential).conf.TokenURL != want {
			t.Errorf("token URL = %q, want %q", c.tokens.cred.(*secretCredential).conf.TokenURL, want)
		}
		if c.tenant != base.Tenant || c.userAgent != base.UserAgent || c.maxThrottle != base.MaxThrottleRetries || c.timeout != base.RequestTimeout {
			t.Errorf("client = %q %q %d %s, want %q %q %d %s", c.tenant, c.userAgent, c.maxThrottle, c.timeout,
				base.Tenant, base.UserAgent, base.MaxThrottleRetries, base.RequestTimeout)
		}
	})
	t.Run("loopback http allowed", func(t *testing.T) {
		cfg := base
		cfg.APIURL, cfg.TokenURL = "http://127.0.0.1:8080", "http://localhost:8081/{tenant}/token"
		if _, err := New(cfg, nil, lim.both(), zerolog.Nop()); err != nil {
			t.Errorf("New: %v, want loopback http accepted", err)
		}
	})
}

func TestGetResultLink(t *testing.T) {
	h := newHarness(t, nil)
	const link = "https://acct.blob.core.windows.net/investigation-actions-data/x/CustomPlaybookCommandOutput/0123?se=2021-02-04T16%3A13%3A50Z&sp=r&sv=2019-07-07&sr=b&sig=SIGNATURE"
	h.setAPI(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#Edm.String", "value": link})
	})
	got, err := h.client.GetResultLink(context.Background(), testActionID, 3)
	if err != nil {
		t.Fatalf("GetResultLink: %v", err)
	}
	if got != link {
		t.Errorf("link = %q, want %q", got, link)
	}
	r := h.request()
	if want := "/api/machineactions/" + testActionID + "/GetLiveResponseResultDownloadLink(index=3)"; r.RequestURI != want {
		t.Errorf("request URI = %q, want %q", r.RequestURI, want)
	}
	checks := map[string]string{"Authorization": "Bearer tok-1", "Accept": "application/json", "User-Agent": "MdePartner-LrRelay-lr-relay/1.2.3"}
	for k, want := range checks {
		if got := r.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if r.Method != http.MethodGet {
		t.Errorf("method = %s, want GET", r.Method)
	}
	waits, _ := h.lim.snapshot()
	if len(waits) != 1 || waits[0] != "acme/links" {
		t.Errorf("limiter waits = %q, want [acme/links]", waits)
	}
	f := h.form()
	wantForm := map[string]string{"grant_type": "client_credentials", "client_id": testClientID, "client_secret": testSecret, "scope": testScope}
	for k, want := range wantForm {
		if got := strings.Join(f[k], ","); got != want {
			t.Errorf("token form %s = %q, want %q", k, got, want)
		}
	}
}

func TestGetResultLinkBadAnswers(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"no value", `{"@odata.context": "x"}`},
		{"empty value", `{"value": ""}`},
		{"relative value", `{"value": "/just/a/path?sig=SIGNATURE"}`},
		{"not json", `<html>hello</html>`},
		{"too large", `{"value": "https://a.blob.core.windows.net/x?sig=SIGNATURE", "pad": "` + strings.Repeat("x", maxLinkBytes) + `"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.setAPI(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, tt.body)
			})
			_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error = %v, want ErrBadResponse", err)
			}
			if isRetryable(err) {
				t.Errorf("isRetryable(%v) = true, want false", err)
			}
			if strings.Contains(err.Error(), "SIGNATURE") {
				t.Errorf("error %q leaks the SAS signature", err)
			}
		})
	}
}

func TestInvalidArguments(t *testing.T) {
	tests := []struct {
		name  string
		call  func(*Client) error
		index int
	}{
		{"action id not a guid", func(c *Client) error { _, err := c.GetAction(context.Background(), "not-a-guid"); return err }, 0},
		{"action id with path", func(c *Client) error {
			_, err := c.GetAction(context.Background(), testActionID+"/../x")
			return err
		}, 0},
		{"link id not a guid", func(c *Client) error {
			_, err := c.GetResultLink(context.Background(), "{"+testActionID+"}", 0)
			return err
		}, 0},
		{"negative index", func(c *Client) error { _, err := c.GetResultLink(context.Background(), testActionID, -1); return err }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			err := tt.call(h.client)
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("error = %v, want ErrInvalidArgument", err)
			}
			waits, _ := h.lim.snapshot()
			if n := h.apiHits.Load() + h.tokenHits.Load(); n != 0 || len(waits) != 0 {
				t.Errorf("made %d requests and %d limiter waits, want none", n, len(waits))
			}
		})
	}
}

func TestGetAction(t *testing.T) {
	tests := []struct {
		file         string
		wantCommands bool
		wantN        int
		wantStatus   string
	}{
		{"action_with_commands.json", true, 2, "Succeeded"},
		{"action_without_commands.json", false, 0, "Pending"},
		{"action_empty_commands.json", true, 0, "Failed"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			body, err := os.ReadFile("testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, nil)
			h.setAPI(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(body)
			})
			got, err := h.client.GetAction(context.Background(), testActionID)
			if err != nil {
				t.Fatalf("GetAction: %v", err)
			}
			if got.HasCommands != tt.wantCommands || len(got.Commands) != tt.wantN || got.Status != tt.wantStatus {
				t.Errorf("HasCommands, len(Commands), Status = %v, %d, %q; want %v, %d, %q",
					got.HasCommands, len(got.Commands), got.Status, tt.wantCommands, tt.wantN, tt.wantStatus)
			}
			if r := h.request(); r.RequestURI != "/api/machineactions/"+testActionID {
				t.Errorf("request URI = %q, want /api/machineactions/%s", r.RequestURI, testActionID)
			}
			if waits, _ := h.lim.snapshot(); len(waits) != 1 || waits[0] != "acme/actions" {
				t.Errorf("limiter waits = %q, want [acme/actions]", waits)
			}
		})
	}
	t.Run("decodes commands", func(t *testing.T) {
		body, _ := os.ReadFile("testdata/action_with_commands.json")
		h := newHarness(t, nil)
		h.setAPI(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) })
		got, err := h.client.GetAction(context.Background(), testActionID)
		if err != nil {
			t.Fatalf("GetAction: %v", err)
		}
		c := got.Commands[1]
		if c.Index != 1 || c.Command.Type != action.TypeGetFile || c.Command.Param("Path") != `C:\windows\TEMP\OfficeClickToRun.dmp.zip` || !c.NeedsResult() {
			t.Errorf("command 1 = %+v, want a completed GetFile of the dump", c)
		}
		if got.ComputerDNSName != "host.contoso.local" || got.LastUpdateDateTimeUTC != "2021-02-04T15:43:50.7654321Z" {
			t.Errorf("action = %+v, want computer and update time decoded", got)
		}
	})
	t.Run("other action id", func(t *testing.T) {
		h := newHarness(t, nil)
		h.setAPI(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, map[string]any{"id": "00000000-0000-0000-0000-000000000000"})
		})
		if _, err := h.client.GetAction(context.Background(), testActionID); !errors.Is(err, ErrBadResponse) {
			t.Errorf("error = %v, want ErrBadResponse", err)
		}
	})
}

func TestAPIErrors(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		code      string
		retryable bool
	}{
		{"400 BadRequest", 400, "BadRequest", false},
		{"400 InvalidInput", 400, "InvalidInput", false},
		{"400 InvalidRequestBody", 400, "InvalidRequestBody", false},
		{"400 MissingRequiredParameter", 400, "MissingRequiredParameter", false},
		{"400 ODataError", 400, "ODataError", false},
		{"401 Unauthorized", 401, "Unauthorized", false},
		{"403 Forbidden", 403, "Forbidden", false},
		{"403 DisabledFeature", 403, "DisabledFeature", false},
		{"403 DisallowedOperation", 403, "DisallowedOperation", false},
		{"404 NotFound", 404, "NotFound", false},
		{"404 ResourceNotFound", 404, "ResourceNotFound", false},
		{"408 RequestTimeout", 408, "RequestTimeout", true},
		{"429 TooManyRequests", 429, "TooManyRequests", true},
		{"500 InternalServerError", 500, "InternalServerError", true},
		{"502 BadGateway", 502, "BadGateway", true},
		{"503 ServiceUnavailable", 503, "ServiceUnavailable", true},
		{"504 GatewayTimeout", 504, "GatewayTimeout", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.MaxThrottleRetries = 0 })
			const target = "0f8b3c5e-1111-2222-3333-444455556666"
			h.setAPI(func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, tt.status, apiErrorBody(tt.code, "Something went wrong.\nTry later.", target))
			})
			_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error = %T %v, want *APIError", err, err)
			}
			if ae.Status != tt.status || ae.Code != tt.code || ae.Target != target || ae.Op != "get result link" {
				t.Errorf("APIError = %+v, want status %d code %s target %s op %q", ae, tt.status, tt.code, target, "get result link")
			}
			if ae.Message != "Something went wrong. Try later." {
				t.Errorf("Message = %q, want the body's message on one line", ae.Message)
			}
			if got := ae.Retryable(); got != tt.retryable {
				t.Errorf("Retryable() = %v, want %v", got, tt.retryable)
			}
			if got := isRetryable(fmt.Errorf("wrapped: %w", err)); got != tt.retryable {
				t.Errorf("isRetryable(wrapped) = %v, want %v", got, tt.retryable)
			}
			msg := err.Error()
			for _, want := range []string{"get result link", fmt.Sprint(tt.status), tt.code, target} {
				if !strings.Contains(msg, want) {
					t.Errorf("Error() = %q, want it to contain %q", msg, want)
				}
			}
		})
	}
}

func TestNonJSONErrorBody(t *testing.T) {
	h := newHarness(t, nil)
	body := "<html><body>\n\t<h1>502 Bad Gateway</h1>\x00\x1b[31m" + strings.Repeat("padding ", 200) + "\xff</body></html>"
	h.setAPI(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(502)
		fmt.Fprint(w, body)
	})
	_, err := h.client.GetAction(context.Background(), testActionID)
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error = %T %v, want *APIError", err, err)
	}
	if ae.Status != 502 || ae.Code != "" || !ae.Retryable() {
		t.Errorf("APIError = %+v, want status 502, no code, retryable", ae)
	}
	if !strings.HasPrefix(ae.Message, "<html><body> <h1>502 Bad Gateway</h1>") {
		t.Errorf("Message = %q, want a one-line snippet of the body", ae.Message)
	}
	if n := len([]rune(ae.Message)); n > 203 {
		t.Errorf("Message has %d runes, want at most 203", n)
	}
	for _, r := range ae.Message {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			t.Errorf("Message %q contains control or invalid character %U", ae.Message, r)
			break
		}
	}
}

func TestUnauthorizedRefreshesOnce(t *testing.T) {
	t.Run("fresh token accepted", func(t *testing.T) {
		h := newHarness(t, nil)
		h.setAPI(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer tok-2" {
				writeJSON(w, 401, apiErrorBody("Unauthorized", "token expired", "t1"))
				return
			}
			writeJSON(w, 200, map[string]any{"value": "https://a.blob.core.windows.net/x"})
		})
		if _, err := h.client.GetResultLink(context.Background(), testActionID, 0); err != nil {
			t.Fatalf("GetResultLink: %v", err)
		}
		if tok, api := h.tokenHits.Load(), h.apiHits.Load(); tok != 2 || api != 2 {
			t.Errorf("token requests, api requests = %d, %d; want 2, 2", tok, api)
		}
		if waits, _ := h.lim.snapshot(); len(waits) != 2 {
			t.Errorf("limiter waits = %d, want 2 (the retry is an API call too)", len(waits))
		}
		// The fresh token is cached for the next call.
		if _, err := h.client.GetResultLink(context.Background(), testActionID, 1); err != nil {
			t.Fatalf("second GetResultLink: %v", err)
		}
		if tok := h.tokenHits.Load(); tok != 2 {
			t.Errorf("token requests after another call = %d, want 2", tok)
		}
	})
	t.Run("second 401 is permanent", func(t *testing.T) {
		h := newHarness(t, nil)
		h.setAPI(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 401, apiErrorBody("Unauthorized", "no permission", "t2"))
		})
		_, err := h.client.GetAction(context.Background(), testActionID)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != 401 {
			t.Fatalf("error = %v, want *APIError with status 401", err)
		}
		if isRetryable(err) {
			t.Errorf("isRetryable = true, want false")
		}
		if tok, api := h.tokenHits.Load(), h.apiHits.Load(); tok != 2 || api != 2 {
			t.Errorf("token requests, api requests = %d, %d; want 2, 2", tok, api)
		}
	})
}

func TestThrottling(t *testing.T) {
	now := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // where the clock of every synctest bubble starts
	tests := []struct {
		name       string
		retryAfter string
		want       time.Duration
	}{
		{"seconds", "7", 7 * time.Second},
		{"http date", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"missing", "", DefaultRetryAfter},
		{"garbage", "soon", DefaultRetryAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { // the client reads the bubble's clock, which stands at now
				h := newPipeHarness(t, nil)
				var mu sync.Mutex
				calls := 0
				h.setAPI(func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					calls++
					n := calls
					mu.Unlock()
					if n <= 2 {
						if tt.retryAfter != "" {
							w.Header().Set("Retry-After", tt.retryAfter)
						}
						writeJSON(w, 429, apiErrorBody("TooManyRequests", "slow down", "t"))
						return
					}
					writeJSON(w, 200, map[string]any{"value": "https://a.blob.core.windows.net/x"})
				})
				if _, err := h.client.GetResultLink(context.Background(), testActionID, 0); err != nil {
					t.Fatalf("GetResultLink: %v", err)
				}
				waits, pauses := h.lim.snapshot()
				if len(waits) != 3 {
					t.Errorf("limiter waits = %d, want 3", len(waits))
				}
				if len(pauses) != 2 {
					t.Fatalf("pauses = %+v, want 2", pauses)
				}
				for _, p := range pauses {
					if p.key != "acme/links" || !p.until.Equal(now.Add(tt.want)) {
						t.Errorf("pause = %s until %s, want acme/links until %s", p.key, p.until, now.Add(tt.want))
					}
				}
			})
		})
	}
	t.Run("retries exhausted", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.MaxThrottleRetries = 2 })
		h.setAPI(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "30")
			writeJSON(w, 429, apiErrorBody("TooManyRequests", "slow down", "t"))
		})
		_, err := h.client.GetAction(context.Background(), testActionID)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Status != 429 || ae.RetryAfter != 30*time.Second {
			t.Fatalf("error = %v, want *APIError 429 with RetryAfter 30s", err)
		}
		if !isRetryable(err) {
			t.Error("isRetryable = false, want true")
		}
		waits, pauses := h.lim.snapshot()
		if api := h.apiHits.Load(); api != 3 || len(waits) != 3 || len(pauses) != 3 {
			t.Errorf("api calls, waits, pauses = %d, %d, %d; want 3, 3, 3", api, len(waits), len(pauses))
		}
		if pauses[0].key != "acme/actions" {
			t.Errorf("pause key = %q, want acme/actions", pauses[0].key)
		}
	})
}

// TestThrottledWaitIsMarked: when the wait after a 429 is cut short (the limiter answers busy, as under
// quota.WithMaxWait), the error says both that the budget is busy until the pause ends and that a 429 came
// first, so that the relay sets the call aside and counts the 429. A busy answer without a 429 is not marked.
func TestThrottledWaitIsMarked(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxThrottleRetries = 5 })
	h.lim.busyAfterPause = true
	h.setAPI(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		writeJSON(w, 429, apiErrorBody("TooManyRequests", "slow down", "t"))
	})
	_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
	var be *quota.BusyError
	var th interface{ AfterThrottle() bool }
	if !errors.As(err, &be) || !be.Until.Equal(h.clock.Now().Add(30*time.Second)) {
		t.Fatalf("error = %v, want a *quota.BusyError until the 30s pause ends", err)
	}
	if !errors.As(err, &th) || !th.AfterThrottle() {
		t.Errorf("error = %v, want it marked as following a 429", err)
	}
	if n := h.apiHits.Load(); n != 1 {
		t.Errorf("api requests = %d, want 1 (the 429; the retry waits for the pause)", n)
	}

	// Busy before any call (the window is full): not marked.
	h2 := newHarness(t, nil)
	h2.lim.waitErr = &quota.BusyError{Key: quota.Key{Tenant: "acme", Endpoint: quota.EndpointLinks}, Until: time.Now().Add(time.Second)}
	_, err = h2.client.GetResultLink(context.Background(), testActionID, 0)
	if !errors.As(err, &be) || errors.As(err, &th) {
		t.Errorf("error = %v, want a busy answer not marked as following a 429", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name, in string
		want     time.Duration
	}{
		{"seconds", "12", 12 * time.Second},
		{"spaces", " 5 ", 5 * time.Second},
		{"zero floors to one second", "0", time.Second},
		{"negative floors", "-4", time.Second},
		{"huge caps at an hour", "99999999999", time.Hour},
		{"date", now.Add(2 * time.Minute).Format(http.TimeFormat), 2 * time.Minute},
		{"past date", now.Add(-time.Minute).Format(http.TimeFormat), time.Second},
		{"empty", "", DefaultRetryAfter},
		{"fraction", "1.5", DefaultRetryAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseRetryAfter(tt.in, now); got != tt.want {
				t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestLimiterError(t *testing.T) {
	h := newHarness(t, nil)
	h.lim.waitErr = context.Canceled
	_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
	if !errors.Is(err, context.Canceled) || isRetryable(err) {
		t.Errorf("error = %v (retryable %v), want context.Canceled, not retryable", err, isRetryable(err))
	}
	if n := h.apiHits.Load(); n != 0 {
		t.Errorf("api requests = %d, want 0", n)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	h := newHarness(t, nil, WithRegisterer(reg))
	// A second tenant's client registers against the same registry.
	h2 := newHarness(t, func(c *Config) { c.Tenant = "other" }, WithRegisterer(reg))
	h2.setAPI(func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 404, apiErrorBody("NotFound", "", "")) })
	for range 3 {
		if _, err := h.client.GetResultLink(context.Background(), testActionID, 0); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = h2.client.GetResultLink(context.Background(), testActionID, 0)
	m := h.client.metrics
	tests := []struct {
		name string
		c    prometheus.Counter
		want float64
	}{
		{"acme ok", m.requests.WithLabelValues("acme", "get_result_link", "ok"), 3},
		{"other client_error", m.requests.WithLabelValues("other", "get_result_link", "client_error"), 1},
		{"acme tokens", m.tokens.WithLabelValues("acme", "ok"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pb dto.Metric
			if err := tt.c.Write(&pb); err != nil {
				t.Fatal(err)
			}
			if got := pb.GetCounter().GetValue(); got != tt.want {
				t.Errorf("counter = %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("Gather: %v", err)
	}
}
