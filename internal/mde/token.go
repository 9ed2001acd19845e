package mde

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const (
	// refreshMargin is how long before expiry a token is replaced, so that a call never starts with a token
	// that dies in flight and clocks that disagree a little do not matter.
	refreshMargin = 2 * time.Minute
	// defaultTokenLifetime is assumed when the token endpoint states no lifetime; Entra tokens live about an
	// hour, and a 401 still forces a refresh if this guess is wrong.
	defaultTokenLifetime = time.Hour
)

// aadstsRE finds Entra's error number (AADSTS7000215 and the like) in an error description: it tells an
// operator exactly what is wrong without carrying any of the free text.
var aadstsRE = regexp.MustCompile(`AADSTS[0-9]{1,10}`)

// tokenCache hands out a cached access token and fetches a new one, one request at a time, when it is about
// to expire or has been refused by the API.
type tokenCache struct {
	conf    clientcredentials.Config
	http    *http.Client
	timeout time.Duration
	log     zerolog.Logger
	metrics *metrics
	tenant  string

	mu        sync.Mutex
	token     string    // guarded by mu; "" when there is none
	refreshAt time.Time // guarded by mu
	flight    *flight   // guarded by mu; the token request in progress, if any
}

// flight is one token request that concurrent callers share. Its fields are written before done is closed.
type flight struct {
	done  chan struct{}
	token string
	err   error
	// abandoned is set when the request failed because its caller's context ended: the others should not
	// inherit that failure but try again themselves.
	abandoned bool
}

// get returns a valid access token, fetching one if needed. Concurrent callers wait for the same request.
func (t *tokenCache) get(ctx context.Context) (string, error) {
	for {
		t.mu.Lock()
		if t.token != "" && time.Now().Before(t.refreshAt) {
			tok := t.token
			t.mu.Unlock()
			return tok, nil
		}
		f := t.flight
		if f == nil {
			f = &flight{done: make(chan struct{})}
			t.flight = f
			t.mu.Unlock()
			t.fetch(ctx, f)
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
		return f.token, f.err
	}
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
	start := time.Now()
	tk, err := t.conf.Token(context.WithValue(reqCtx, oauth2.HTTPClient, t.http))
	if err != nil {
		f.err = t.tokenError(ctx, reqCtx, err)
		f.abandoned = ctx.Err() != nil
		t.metrics.token("error")
		ev := t.log.Warn()
		if f.abandoned {
			ev = t.log.Debug()
		}
		ev.Err(f.err).Msg("mde token request failed")
	} else {
		life := tokenLifetime(tk)
		margin := min(refreshMargin, life/2)
		f.token = tk.AccessToken
		t.metrics.token("ok")
		t.log.Debug().Dur("lifetime", life).Msg("mde token obtained")
		t.mu.Lock()
		t.token = tk.AccessToken
		t.refreshAt = start.Add(life - margin)
		t.mu.Unlock()
	}
	t.mu.Lock()
	t.flight = nil
	t.mu.Unlock()
	close(f.done)
}

// tokenLifetime reads expires_in as sent (a number, or a string in older Entra answers) rather than the
// Expiry that x/oauth2 computes on receipt, so that the lifetime counts from when the request was sent.
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

// tokenError turns whatever x/oauth2 returned into a *TokenError that is safe to log. An
// *oauth2.RetrieveError is never kept: its Error() prints the endpoint's body.
func (t *tokenCache) tokenError(ctx, reqCtx context.Context, err error) *TokenError {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		te := &TokenError{Code: safeToken(redact(re.ErrorCode, t.conf.ClientSecret), 64)}
		if re.Response != nil {
			te.Status = re.Response.StatusCode
		}
		if id := aadstsRE.FindString(re.ErrorDescription); id != "" {
			te.Err = errors.New(id)
		}
		return te
	}
	if ctx.Err() == nil && (reqCtx.Err() != nil || isTimeout(err)) {
		return &TokenError{Err: &timeoutError{op: "get token", timeout: t.timeout, err: err}}
	}
	if s := t.conf.ClientSecret; s != "" && strings.Contains(err.Error(), s) {
		// Not expected from x/oauth2 (the secret travels in the body), but never worth the risk.
		err = errors.New(redact(err.Error(), s))
	}
	return &TokenError{Err: err}
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
