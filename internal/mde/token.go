package mde

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
)

const (
	// refreshMinFraction and refreshMaxFraction bound where in a token's lifetime its replacement is
	// fetched, measured back from expiry: a uniformly random point in the last 10-20%. The random point
	// spreads the refreshes of many tenants whose tokens were issued in the same second (a deployment that
	// starts with 1000 tenants) over minutes instead of one burst, and leaves every token several minutes of
	// life when it is replaced, so a call never starts with a token that dies in flight.
	refreshMinFraction = 0.10
	refreshMaxFraction = 0.20
	// defaultTokenLifetime is assumed when the token endpoint states no lifetime; Entra tokens live about an
	// hour, and a 401 still forces a refresh if this guess is wrong.
	defaultTokenLifetime = time.Hour
	// rejectedPace is how long after the token endpoint rejected a tenant's credentials the next real attempt
	// waits, unless a credential file changed meanwhile. In between, callers get the rejection at once: a
	// tenant with a revoked secret costs one token request per 30 s, not one per event.
	rejectedPace = 30 * time.Second
)

// aadstsRE finds Entra's error number (AADSTS7000215 and the like) in an error description: it tells an
// operator exactly what is wrong without carrying any of the free text.
var aadstsRE = regexp.MustCompile(`AADSTS[0-9]{1,10}`)

// health is what the token cache knows about a tenant's credentials.
type health int

const (
	healthUnknown health = iota // no token yet, and no rejection
	healthOK                    // the last token request succeeded
	healthFailing               // the token endpoint rejected the credentials
)

// tokenCache hands out a cached access token and fetches a new one, one request at a time, when it is about
// to expire or has been refused by the API. After the credentials were rejected it paces further attempts
// (rejectedPace) and tracks the tenant's authentication health.
//
// A token that has been handed to an API call is replaced in the background at its jittered refresh point
// (refreshAt): the first hand-out arms one timer, and when it fires the replacement is fetched while callers
// keep using the current token. Tenants whose calls come in step (quota windows that free at the same
// instant) would otherwise all refresh at their first call after refreshAt, in the same second. A token that
// nobody used since it was obtained arms nothing: an idle tenant costs no timer and no request, and its next
// call fetches on demand.
type tokenCache struct {
	cred    credential
	now     func() time.Time
	jitter  func() float64 // uniform in [0, 1)
	timeout time.Duration
	log     zerolog.Logger
	metrics *metrics
	tenant  string
	// afterFunc arms the background refresh (time.AfterFunc when nil) and returns the function that stops it.
	afterFunc func(time.Duration, func()) (stop func() bool)

	mu        sync.Mutex
	token     string    // guarded by mu; "" when there is none
	refreshAt time.Time // guarded by mu
	expiresAt time.Time // guarded by mu; when the token dies
	flight    *flight   // guarded by mu; the token request in progress, if any
	// rejected is the last credentials rejection, returned without a request until retryAt unless the
	// credential files no longer match rejectedFiles. Guarded by mu.
	rejected      *TokenError
	retryAt       time.Time
	rejectedFiles string
	state         health // guarded by mu
	lastErr       error  // guarded by mu; the last failure, for the readiness detail

	// The background refresh, all guarded by mu. used: the token was handed to an API call (its timer is
	// armed). spare: a background refresh of the token is running or failed, so callers keep using the token
	// until expiresAt instead of waiting. stopTimer stops the armed timer (nil when none). closed: close was
	// called; nothing is armed or started any more. bgCtx ends with close and bounds background requests.
	used      bool
	spare     bool
	stopTimer func() bool
	closed    bool
	bgCtx     context.Context
	bgCancel  context.CancelFunc
	bg        sync.WaitGroup // background refreshes running
}

// flight is one token request that concurrent callers share. Its fields are written before done is closed.
type flight struct {
	done  chan struct{}
	token string
	err   error
	// abandoned is set when the request failed because its caller's context ended: the others should not
	// inherit that failure but try again themselves.
	abandoned bool
	// background is set for the refresh the timer started (no caller waits for it unless its token is gone).
	background bool
}

// get returns a valid access token for an API call, fetching one if needed. Concurrent callers wait for the
// same request. Handing a token to a call arms its background refresh.
func (t *tokenCache) get(ctx context.Context) (string, error) { return t.obtain(ctx, true) }

// obtain is get; use tells whether the token is for an API call (CheckAuth's is not: a tenant that only
// had its credentials checked stays idle and arms no refresh).
func (t *tokenCache) obtain(ctx context.Context, use bool) (string, error) {
	for {
		t.mu.Lock()
		if t.token != "" {
			now := t.now()
			// Before refreshAt the token is simply cached; after it, while a background refresh runs (or failed),
			// the token is used until it really expires rather than making the caller wait.
			if now.Before(t.refreshAt) || (t.spare && now.Before(t.expiresAt)) {
				tok := t.token
				if use {
					t.markUsed()
				}
				t.mu.Unlock()
				return tok, nil
			}
		}
		f := t.flight
		if f == nil {
			if rej := t.paced(); rej != nil {
				t.mu.Unlock()
				return "", rej
			}
			f = &flight{done: make(chan struct{})}
			t.flight = f
			t.mu.Unlock()
			t.fetch(ctx, f)
			if use && f.err == nil {
				t.use(f.token)
			}
			return f.token, f.err
		}
		t.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return "", &TokenError{Err: fmt.Errorf("waiting for token: %w", ctx.Err())}
		}
		if f.abandoned && ctx.Err() == nil {
			continue
		}
		if use && f.err == nil {
			t.use(f.token)
		}
		return f.token, f.err
	}
}

// use records that tok was handed to an API call, if it is still the current token.
func (t *tokenCache) use(tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tok != "" && t.token == tok {
		t.markUsed()
	}
}

// markUsed records the first hand-out of the current token to an API call and arms its background refresh
// at refreshAt (not when refreshAt has passed already: the caller then goes the on-demand way). Called with
// mu held.
func (t *tokenCache) markUsed() {
	if t.used {
		return
	}
	t.used = true
	d := t.refreshAt.Sub(t.now())
	if t.closed || d <= 0 {
		return
	}
	tok := t.token
	if t.stopTimer != nil {
		t.stopTimer()
	}
	f := func() { t.refreshInBackground(tok) }
	if t.afterFunc != nil {
		t.stopTimer = t.afterFunc(d, f)
	} else {
		t.stopTimer = time.AfterFunc(d, f).Stop
	}
}

// refreshInBackground is the timer of token tok: it fetches the replacement while callers keep using tok.
// Nothing happens when tok was replaced or dropped meanwhile, when a request is already in flight, or after
// close. A failure leaves tok in use until it expires (the next call after that fetches on demand), except a
// credentials rejection, which is handled as on the on-demand path: pacing, health failing, and callers get
// the rejection.
func (t *tokenCache) refreshInBackground(tok string) {
	t.mu.Lock()
	if t.closed || t.token != tok || !t.used || t.flight != nil {
		t.mu.Unlock()
		return
	}
	f := &flight{done: make(chan struct{}), background: true}
	t.flight, t.spare, t.stopTimer = f, true, nil
	if t.bgCtx == nil {
		t.bgCtx, t.bgCancel = context.WithCancel(context.Background())
	}
	ctx := t.bgCtx
	t.bg.Add(1)
	t.mu.Unlock()
	defer t.bg.Done()
	t.fetch(ctx, f)
}

// close stops the background refresh: the armed timer, and any background request (which it waits for).
// The on-demand path keeps working.
func (t *tokenCache) close() {
	t.mu.Lock()
	t.closed = true
	if t.stopTimer != nil {
		t.stopTimer()
		t.stopTimer = nil
	}
	cancel := t.bgCancel
	t.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	t.bg.Wait()
}

// paced returns the last rejection while the tenant is paced: less than rejectedPace since the credentials
// were rejected, and the credential files unchanged since (a rotated file earns an immediate attempt).
// Called with mu held; the file check reads the (small) credential files.
func (t *tokenCache) paced() *TokenError {
	if t.rejected == nil || !t.now().Before(t.retryAt) {
		return nil
	}
	if t.cred.files() != t.rejectedFiles {
		return nil
	}
	return t.rejected
}

// invalidate drops tok from the cache after the API refused it. A token that another caller has already
// replaced is left alone, so that a burst of 401s for one stale token costs one refresh, not many.
func (t *tokenCache) invalidate(tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token == tok {
		t.token = ""
	}
}

// fetch performs the token request for flight f, stores the result and releases the waiters.
func (t *tokenCache) fetch(ctx context.Context, f *flight) {
	reqCtx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	start := t.now()
	files := t.cred.files() // before the request: a file rotated during it earns another attempt
	tok, life, err := t.cred.token(ctx, reqCtx)
	if err != nil {
		f.err = err
		f.abandoned = ctx.Err() != nil
		t.metrics.token("error")
		ev := t.log.Warn()
		if f.abandoned {
			ev = t.log.Debug()
		}
		ev.Err(f.err).Bool("background", f.background).Msg("mde token request failed")
		if !f.abandoned {
			t.failed(err, start, files)
		}
	} else {
		f.token = tok
		t.metrics.token("ok")
		t.log.Debug().Float64("lifetime_seconds", life.Seconds()).Bool("background", f.background).Msg("mde token obtained")
		t.mu.Lock()
		t.token = tok
		t.refreshAt = start.Add(life - refreshBefore(life, t.jitter()))
		t.expiresAt = start.Add(life)
		// The new token is armed at its first hand-out; the old one's timer, if still pending, goes.
		t.used, t.spare = false, false
		if t.stopTimer != nil {
			t.stopTimer()
			t.stopTimer = nil
		}
		t.rejected = nil
		t.lastErr = nil
		t.transition(healthOK, nil)
		t.mu.Unlock()
	}
	t.mu.Lock()
	t.flight = nil
	t.mu.Unlock()
	close(f.done)
}

// failed records a failed token request: a credentials rejection starts the pacing and marks the tenant
// failing; other failures (network, 5xx) leave the health as it was.
func (t *tokenCache) failed(err error, start time.Time, files string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastErr = err
	var te *TokenError
	if errors.As(err, &te) && te.CredentialsRejected() {
		t.rejected = te
		t.retryAt = start.Add(rejectedPace)
		t.spare = false // callers past refreshAt get the rejection, as when the refresh is made on demand
		t.rejectedFiles = files
		t.transition(healthFailing, te)
	}
}

// transition moves the health to s, logging once per change and setting lr_tenant_auth_ok. Called with mu
// held.
func (t *tokenCache) transition(s health, te *TokenError) {
	if s == t.state {
		return
	}
	prev := t.state
	t.state = s
	t.metrics.authOK(s == healthOK)
	switch s {
	case healthOK:
		if prev == healthFailing {
			t.log.Info().Msg("mde credentials accepted again")
		} else {
			t.log.Info().Msg("mde credentials accepted")
		}
	case healthFailing:
		t.log.Error().Str("code", te.Code).Int("aadsts", te.AADSTS).Int("status", te.Status).Err(te).
			Msg("mde credentials rejected; the tenant's events wait until they are fixed")
	}
}

// healthy reports the tenant's authentication health and, when it is not ok, why.
func (t *tokenCache) healthy() (bool, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.state == healthOK:
		return true, "ok"
	case t.state == healthFailing:
		return false, "credentials rejected: " + t.rejected.Error()
	case t.lastErr != nil:
		return false, "no token yet: " + t.lastErr.Error()
	}
	return false, "no token yet"
}

// refreshBefore is how long before expiry a token of lifetime life is replaced: a point drawn from
// [refreshMinFraction, refreshMaxFraction) of the lifetime by j, uniform in [0, 1).
func refreshBefore(life time.Duration, j float64) time.Duration {
	return time.Duration(float64(life) * (refreshMinFraction + (refreshMaxFraction-refreshMinFraction)*j))
}

// tokenLifetime reads expires_in as sent (a number, or a string in older Entra answers) rather than the
// Expiry that x/oauth2 computes from the wall clock, so that an injected clock governs refreshes.
func tokenLifetime(tk *oauth2.Token) time.Duration {
	switch v := tk.Extra("expires_in").(type) {
	case float64:
		return time.Duration(v) * time.Second
	case string:
		if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
			return time.Duration(n) * time.Second
		}
	}
	if !tk.Expiry.IsZero() {
		return time.Until(tk.Expiry)
	}
	return defaultTokenLifetime
}

// safeToken keeps the leading run of characters an error code or request id is made of, cut at the first
// other character and at n bytes, so that server-supplied text cannot carry anything else into logs. Callers
// redact secrets first: cutting, not filtering, means a redacted secret cannot be glued back together.
func safeToken(s string, n int) string {
	end := 0
	for end < len(s) && end < n {
		r := s[end]
		if r == '-' || r == '_' || r == '.' || r == ':' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
			end++
			continue
		}
		break
	}
	return s[:end]
}

// redact replaces every occurrence of the non-empty secrets in s.
func redact(s string, secrets ...string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[REDACTED]")
		}
	}
	return s
}
