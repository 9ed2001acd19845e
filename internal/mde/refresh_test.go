package mde

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/testutil"
)

// timerClock is a fake clock with timers: AfterFunc timers fire, in order of their deadline and in the
// goroutine that calls Advance, when Advance moves the clock past them. Nothing moves by itself, so tests
// of the background refresh do not depend on the machine's speed.
type timerClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at time.Time
	f  func()
}

func newTimerClock() *timerClock {
	return &timerClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *timerClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc is the tokenCache's afterFunc.
func (c *timerClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	tm := &fakeTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, tm)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if i := slices.Index(c.timers, tm); i >= 0 {
			c.timers = slices.Delete(c.timers, i, i+1)
			return true
		}
		return false
	}
}

// pending is the number of armed timers.
func (c *timerClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// Advance moves the clock by d, firing every timer due on the way at its own moment.
func (c *timerClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for {
		next := -1
		for i, tm := range c.timers {
			if !tm.at.After(end) && (next < 0 || tm.at.Before(c.timers[next].at)) {
				next = i
			}
		}
		if next < 0 {
			break
		}
		tm := c.timers[next]
		c.timers = slices.Delete(c.timers, next, next+1)
		c.now = maxTime(c.now, tm.at)
		c.mu.Unlock()
		tm.f()
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// recordingCredential hands out tokens of a fixed lifetime and records when (on the fake clock) each was
// asked for.
type recordingCredential struct {
	life  time.Duration
	clock *timerClock

	mu sync.Mutex
	at []time.Time
}

func (c *recordingCredential) token(context.Context, context.Context) (string, time.Duration, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = append(c.at, c.clock.Now())
	return fmt.Sprintf("tok-%d", len(c.at)), c.life, nil
}
func (c *recordingCredential) files() string     { return "" }
func (c *recordingCredential) secrets() []string { return nil }

func (c *recordingCredential) requests() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.at)
}

// TestBackgroundRefreshSpreadsInStepTenants gives 200 tenants tokens issued in the same second with the same
// expiry, all in use, whose calls then come in step: every tenant calls at the same instants, every 5
// minutes, as when their quota windows free together. Without a background refresh each token is replaced at
// its tenant's first call after its jittered refresh point, so the calls' instants gather the refreshes into
// a few bursts. With it, each token is replaced at its own point: the requests are spread over the jitter
// interval (the last 20-10% of the lifetime), and no call waits for a token request.
func TestBackgroundRefreshSpreadsInStepTenants(t *testing.T) {
	const (
		tenants = 200
		life    = time.Hour
		every   = 5 * time.Minute
	)
	clock := newTimerClock()
	start := clock.Now()
	rng := rand.New(rand.NewPCG(3, 4))
	creds := make([]*recordingCredential, tenants)
	caches := make([]*tokenCache, tenants)
	for i := range caches {
		creds[i] = &recordingCredential{life: life, clock: clock}
		caches[i] = &tokenCache{cred: creds[i], now: clock.Now, jitter: rng.Float64, timeout: time.Second,
			log: zerolog.Nop(), afterFunc: clock.AfterFunc}
		t.Cleanup(caches[i].close)
	}
	callAll := func() {
		t.Helper()
		for _, c := range caches {
			if _, err := c.get(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	callAll() // every tenant's first token, used at once
	for s := 1; s <= int(life/time.Second); s++ {
		clock.Advance(time.Second)
		if s%int(every/time.Second) == 0 {
			before := 0
			for _, c := range creds {
				before += len(c.requests())
			}
			callAll()
			after := 0
			for _, c := range creds {
				after += len(c.requests())
			}
			if after != before {
				t.Errorf("at %s: the in-step calls made %d token requests, want 0 (refreshed in the background)", time.Duration(s)*time.Second, after-before)
			}
		}
	}
	perSecond := map[time.Duration]int{}
	var rel []time.Duration
	for i, c := range creds {
		reqs := c.requests()
		if len(reqs) != 2 {
			t.Fatalf("tenant %d: %d token requests in the token's lifetime, want 2 (the first and one refresh)", i, len(reqs))
		}
		at := reqs[1].Sub(start)
		rel = append(rel, at)
		perSecond[at.Truncate(time.Second)]++
	}
	slices.Sort(rel)
	busiest := 0
	for _, n := range perSecond {
		busiest = max(busiest, n)
	}
	if lo, hi := life*8/10, life*9/10; rel[0] < lo || rel[len(rel)-1] > hi {
		t.Errorf("refreshes between %s and %s after issue, want within [%s, %s]", rel[0], rel[len(rel)-1], lo, hi)
	}
	// 200 refreshes spread uniformly over 360 s average 0.6 per second; in-step calls every 5 minutes would
	// put a third of them (those falling due in 48-50 min) into the call at 50 min.
	if busiest > 6 {
		t.Errorf("busiest second had %d of %d refreshes, want at most 6", busiest, tenants)
	}
	p5, p95 := rel[len(rel)*5/100], rel[len(rel)*95/100]
	if spread := p95 - p5; spread < 4*time.Minute {
		t.Errorf("p5-p95 spread of the refreshes = %s, want at least 4m of the 6m jitter interval", spread)
	}
	t.Logf("%d tenants: refreshes from %s to %s after issue (p5-p95 %s), busiest second %d", tenants,
		rel[0].Round(time.Second), rel[len(rel)-1].Round(time.Second), (p95 - p5).Round(time.Second), busiest)
}

// newTimedHarness is newHarness on a timerClock, whose timers drive the background refresh.
func newTimedHarness(t *testing.T, opts ...Option) (*harness, *timerClock) {
	t.Helper()
	clock := newTimerClock()
	h := newHarness(t, nil, append([]Option{WithClock(clock.Now)}, opts...)...)
	h.client.tokens.afterFunc = clock.AfterFunc
	return h, clock
}

// call makes one API call and returns the Authorization header it carried.
func (h *harness) call() string {
	h.t.Helper()
	if _, err := h.client.GetResultLink(context.Background(), testActionID, 0); err != nil {
		h.t.Fatalf("GetResultLink: %v", err)
	}
	return h.request().Header.Get("Authorization")
}

// TestBackgroundRefreshIdleCostsNothing checks that a token nobody used is not refreshed in the background
// and arms no timer: a tenant whose credentials were only checked, and a tenant whose refreshed token was not
// used again, cost nothing until their next call, which fetches on demand.
func TestBackgroundRefreshIdleCostsNothing(t *testing.T) {
	h, clock := newTimedHarness(t)
	if err := h.client.CheckAuth(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := clock.pending(); n != 0 {
		t.Errorf("timers after CheckAuth = %d, want 0 (the token was not used)", n)
	}
	clock.Advance(59 * time.Minute)
	if n := h.tokenHits.Load(); n != 1 {
		t.Errorf("token requests after 59 idle minutes = %d, want 1", n)
	}
	// Used once: one timer, one background refresh at the refresh point, then nothing for the unused new token.
	clock.Advance(2 * time.Minute) // past the first token's expiry
	if got := h.call(); got != "Bearer tok-2" {
		t.Errorf("first call: Authorization %q, want Bearer tok-2 (fetched on demand)", got)
	}
	if n := clock.pending(); n != 1 {
		t.Errorf("timers after a call = %d, want 1", n)
	}
	clock.Advance(55 * time.Minute) // the harness's jitter is 0: refreshed 54 minutes after issue
	if n := h.tokenHits.Load(); n != 3 {
		t.Errorf("token requests after the refresh point of a used token = %d, want 3", n)
	}
	if n := clock.pending(); n != 0 {
		t.Errorf("timers after the background refresh = %d, want 0 (the new token is not used yet)", n)
	}
	clock.Advance(3 * time.Hour)
	if n := h.tokenHits.Load(); n != 3 {
		t.Errorf("token requests after 3 idle hours = %d, want 3", n)
	}
	if got := h.call(); got != "Bearer tok-4" || h.tokenHits.Load() != 4 {
		t.Errorf("call after the idle hours: Authorization %q, token requests %d; want Bearer tok-4 on demand, 4", got, h.tokenHits.Load())
	}
}

// TestBackgroundRefreshFailureKeepsToken checks that a background refresh that fails keeps the current
// token serving until it expires (no call fails or waits, the tenant stays healthy, one warning without the
// secret), and that the next call after the expiry fetches on demand.
func TestBackgroundRefreshFailureKeepsToken(t *testing.T) {
	h, clock := newTimedHarness(t)
	h.call()
	h.setToken(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 503, map[string]any{"error": "temporarily_unavailable", "error_description": "AADSTS50001 " + testSecret})
	})
	clock.Advance(54 * time.Minute)
	if n := h.tokenHits.Load(); n != 2 {
		t.Fatalf("token requests at the refresh point = %d, want 2 (one in the background)", n)
	}
	for _, d := range []time.Duration{time.Second, 3 * time.Minute, 2*time.Minute + 58*time.Second} { // to 59:59
		clock.Advance(d)
		if got := h.call(); got != "Bearer tok-1" {
			t.Errorf("call %s after the failure: Authorization %q, want Bearer tok-1", d, got)
		}
	}
	if n := h.tokenHits.Load(); n != 2 {
		t.Errorf("token requests before the expiry = %d, want 2", n)
	}
	if ok, why := h.client.AuthHealthy(); !ok {
		t.Errorf("AuthHealthy = false (%s), want true: a transient failure is not a rejection", why)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "mde token request failed"); n != 1 || !strings.Contains(logs, `"background":true`) {
		t.Errorf("failure logged %d times (want once, marked background):\n%s", n, logs)
	}
	if strings.Contains(logs, testSecret) {
		t.Errorf("the client secret reached the log:\n%s", logs)
	}
	h.setToken(h.defaultToken)
	clock.Advance(2 * time.Second) // the token has expired
	if got := h.call(); got != "Bearer tok-3" || h.tokenHits.Load() != 3 {
		t.Errorf("call after the expiry: Authorization %q, token requests %d; want Bearer tok-3, 3", got, h.tokenHits.Load())
	}
}

// TestBackgroundRefreshRejected checks that credentials rejected during a background refresh are handled as
// on the on-demand path: the tenant shows failing (AuthHealthy, lr_tenant_auth_ok), calls get the typed
// rejection without further token requests while paced.
func TestBackgroundRefreshRejected(t *testing.T) {
	h, clock := newTimedHarness(t, WithRegisterer(prometheus.NewRegistry()))
	h.call()
	gauge := func() float64 { return promtest.ToFloat64(h.client.metrics.auth.WithLabelValues("acme")) }
	if g := gauge(); g != 1 {
		t.Fatalf("lr_tenant_auth_ok = %v, want 1", g)
	}
	h.setToken(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 401, map[string]any{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.", "error_codes": []int{7000215}})
	})
	clock.Advance(54 * time.Minute)
	if n := h.tokenHits.Load(); n != 2 {
		t.Fatalf("token requests at the refresh point = %d, want 2", n)
	}
	if ok, why := h.client.AuthHealthy(); ok || !strings.Contains(why, "credentials rejected") {
		t.Errorf("AuthHealthy = %v, %q; want false, credentials rejected", ok, why)
	}
	if g := gauge(); g != 0 {
		t.Errorf("lr_tenant_auth_ok = %v, want 0", g)
	}
	clock.Advance(time.Second)
	_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
	var te *TokenError
	if !errors.As(err, &te) || !te.CredentialsRejected() {
		t.Errorf("call after the rejection: error %v, want the credentials rejection", err)
	}
	if n := h.tokenHits.Load(); n != 2 {
		t.Errorf("token requests = %d, want 2 (paced)", n)
	}
}

// TestBackgroundRefreshClose checks that Close stops the armed timer and cancels a background request in
// flight, that nothing is refreshed after it, and that no goroutine is left behind.
func TestBackgroundRefreshClose(t *testing.T) {
	t.Run("armed timer", func(t *testing.T) {
		h, clock := newTimedHarness(t)
		h.call()
		if n := clock.pending(); n != 1 {
			t.Fatalf("timers = %d, want 1", n)
		}
		h.client.Close()
		if n := clock.pending(); n != 0 {
			t.Errorf("timers after Close = %d, want 0", n)
		}
		clock.Advance(59 * time.Minute)
		if n := h.tokenHits.Load(); n != 1 {
			t.Errorf("token requests after Close = %d, want 1", n)
		}
		// Past the refresh point the on-demand path still works, and arms nothing.
		if got := h.call(); got != "Bearer tok-2" || clock.pending() != 0 {
			t.Errorf("call after Close: Authorization %q, timers %d; want Bearer tok-2 (on demand) and no timer", got, clock.pending())
		}
	})
	t.Run("request in flight", func(t *testing.T) {
		h, clock := newTimedHarness(t)
		h.call()
		before := runtime.NumGoroutine()
		arrived := make(chan struct{})
		h.setToken(func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-r.Context().Done() // hangs until the background request is cancelled
		})
		advanced := make(chan struct{})
		go func() { defer close(advanced); clock.Advance(54 * time.Minute) }()
		select {
		case <-arrived:
		case <-advanced: // Advance fires timers in its goroutine: it returned without a request
			t.Fatal("no background token request at the refresh point")
		}
		h.client.Close()
		<-advanced // the timer's refresh returned
		h.setToken(h.defaultToken)
		clock.Advance(2 * time.Hour)
		if n := h.tokenHits.Load(); n != 2 {
			t.Errorf("token requests = %d, want 2 (none after Close)", n)
		}
		if n := clock.pending(); n != 0 {
			t.Errorf("timers after Close = %d, want 0", n)
		}
		testutil.Eventually(t, 10*time.Second, func() error {
			if n := runtime.NumGoroutine(); n > before {
				return fmt.Errorf("%d goroutines, %d before the background refresh", n, before)
			}
			return nil
		})
	})
}

// TestBackgroundRefreshRealTimer runs the background refresh on the real clock with a two-second token: the
// default timer (time.AfterFunc) fires and the token is replaced before it expires, without a call.
func TestBackgroundRefreshRealTimer(t *testing.T) {
	h := newHarness(t, nil, WithClock(time.Now))
	h.setToken(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": 2,
			"access_token": fmt.Sprintf("tok-%d", h.tokenHits.Load())})
	})
	h.call()
	testutil.Eventually(t, 30*time.Second, func() error {
		if n := h.tokenHits.Load(); n != 2 {
			return fmt.Errorf("token requests = %d, want 2", n)
		}
		return nil
	})
	h.client.Close()
}
