package mde

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/quota"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

const (
	testTenantID = "11111111-2222-3333-4444-555555555555"
	testClientID = "client-app-id"
	testSecret   = "S3cr3t~Value.Of-The_Client"
	testScope    = "https://api.securitycenter.microsoft.com/.default"
	testActionID = "7f5d2a7c-3b3e-4f0c-9a57-1b1f6c2d7e01"
)

// fakeLimiter records what the client asks of its limiter; it never blocks, so throttle retries run at once.
type fakeLimiter struct {
	mu      sync.Mutex
	waits   []string // key.String() of each Wait
	pauses  []pauseCall
	waitErr error
	// busyAfterPause makes Wait answer as quota does under WithMaxWait while a pause is in force.
	busyAfterPause bool
}

type pauseCall struct {
	key   string // key.String()
	until time.Time
}

func (l *fakeLimiter) Wait(ctx context.Context, key quota.Key) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waits = append(l.waits, key.String())
	if l.waitErr != nil {
		return l.waitErr
	}
	if n := len(l.pauses); l.busyAfterPause && n > 0 {
		return &quota.BusyError{Key: key, Until: l.pauses[n-1].until}
	}
	return ctx.Err()
}

func (l *fakeLimiter) Pause(key quota.Key, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pauses = append(l.pauses, pauseCall{key.String(), until})
}

func (l *fakeLimiter) snapshot() ([]string, []pauseCall) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.waits...), append([]pauseCall(nil), l.pauses...)
}

// harness is one httptest server playing both the token endpoint and the API, plus a client pointed at it.
type harness struct {
	t         *testing.T
	srv       *httptest.Server
	lim       *fakeLimiter
	clock     *fakeClock
	logs      *testutil.SyncBuffer
	client    *Client
	tokenHits atomic.Int32
	apiHits   atomic.Int32

	mu       sync.Mutex
	tokenFn  http.HandlerFunc
	apiFn    http.HandlerFunc
	lastForm map[string][]string
	lastReq  *http.Request
}

// fakeClock is an injectable clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// both returns l as the limiter of every operation.
func (l *fakeLimiter) both() Limiters { return Limiters{Links: l, Actions: l} }

// newHarness starts the server on a loopback socket; mutate adjusts the Config before the client is built.
func newHarness(t *testing.T, mutate func(*Config), opts ...Option) *harness {
	t.Helper()
	h := &harness{clock: &fakeClock{now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}}
	return startHarness(t, h, func(hd http.Handler) *httptest.Server {
		srv := httptest.NewServer(hd)
		t.Cleanup(srv.Close)
		return srv
	}, mutate, append([]Option{WithClock(h.clock.Now)}, opts...)...)
}

// newPipeHarness is newHarness on an in-memory network, for tests that move time inside a testing/synctest
// bubble (where time.Sleep advances the clock that the client reads).
func newPipeHarness(t *testing.T, mutate func(*Config), opts ...Option) *harness {
	t.Helper()
	return startHarness(t, &harness{}, func(h http.Handler) *httptest.Server { return testutil.NewPipeServer(t, h) }, mutate, opts...)
}

// startHarness fills h (its clock, when set, is the client's: newHarness; the pipe harness uses the synctest
// bubble's time). Token refresh jitter is off, so expiry tests know when a token is renewed.
func startHarness(t *testing.T, h *harness, serve func(http.Handler) *httptest.Server, mutate func(*Config), opts ...Option) *harness {
	t.Helper()
	h.t, h.lim, h.logs = t, &fakeLimiter{}, &testutil.SyncBuffer{}
	h.tokenFn = h.defaultToken
	h.apiFn = func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"value": "https://x.blob.core.windows.net/c/b?sig=abc"})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /"+testTenantID+"/oauth2/v2.0/token", func(w http.ResponseWriter, r *http.Request) {
		h.tokenHits.Add(1)
		_ = r.ParseForm()
		h.mu.Lock()
		h.lastForm = r.PostForm
		fn := h.tokenFn
		h.mu.Unlock()
		fn(w, r)
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		h.apiHits.Add(1)
		h.mu.Lock()
		h.lastReq = r.Clone(context.Background())
		fn := h.apiFn
		h.mu.Unlock()
		fn(w, r)
	})
	h.srv = serve(mux)
	cfg := Config{
		APIURL:       h.srv.URL,
		TokenURL:     h.srv.URL + "/{tenant}/oauth2/v2.0/token",
		Scope:        testScope,
		TenantID:     testTenantID,
		ClientID:     testClientID,
		ClientSecret: testSecret,
		Tenant:       "acme",
		UserAgent:    "MdePartner-LrRelay-lr-relay/1.2.3",
		// The envconfig defaults of LR_MDE_MAX_THROTTLE_RETRIES and LR_MDE_REQUEST_TIMEOUT.
		MaxThrottleRetries: 5,
		RequestTimeout:     30 * time.Second,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	log := zerolog.New(h.logs).Level(zerolog.DebugLevel)
	c, err := New(cfg, h.srv.Client(), h.lim.both(), log, append([]Option{withJitter(func() float64 { return 0 })}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.client = c
	t.Cleanup(c.Close) // stops the background token refresh
	return h
}

// defaultToken issues tok-1, tok-2, ... valid for an hour.
func (h *harness) defaultToken(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, map[string]any{
		"token_type":   "Bearer",
		"expires_in":   3600,
		"access_token": fmt.Sprintf("tok-%d", h.tokenHits.Load()),
	})
}

func (h *harness) setToken(fn http.HandlerFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tokenFn = fn
}

func (h *harness) setAPI(fn http.HandlerFunc) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.apiFn = fn
}

func (h *harness) request() *http.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastReq
}

func (h *harness) form() map[string][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastForm
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func apiErrorBody(code, message, target string) map[string]any {
	return map[string]any{"error": map[string]any{"code": code, "message": message, "target": target}}
}
