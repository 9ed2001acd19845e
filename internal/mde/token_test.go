package mde

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lr-relay/lr-relay/internal/testutil"
)

func TestTokenCachedAcrossCalls(t *testing.T) {
	h := newHarness(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Go(func() {
			_, err := h.client.GetResultLink(context.Background(), testActionID, i)
			errs <- err
		})
		wg.Go(func() {
			_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("GetResultLink: %v", err)
		}
	}
	if got := h.tokenHits.Load(); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
	if got := h.apiHits.Load(); got != 40 {
		t.Errorf("api requests = %d, want 40", got)
	}
}

func TestTokenSingleflight(t *testing.T) {
	h := newHarness(t, nil)
	release := make(chan struct{})
	h.setToken(func(w http.ResponseWriter, r *http.Request) {
		<-release
		h.defaultToken(w, r)
	})
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
			errs <- err
		})
	}
	// Wait until the first token request has arrived; the other callers queue behind it (the token is taken
	// before the limiter, so a late caller finds it cached: either way one token request must serve all).
	testutil.Eventually(t, 5*time.Second, func() error {
		if h.tokenHits.Load() == 0 {
			return errors.New("no token request has arrived")
		}
		return nil
	})
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("GetResultLink: %v", err)
		}
	}
	if got := h.tokenHits.Load(); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
}

func TestTokenLeaderCancelled(t *testing.T) {
	h := newHarness(t, nil)
	arrived := make(chan struct{}, 4)
	release := make(chan struct{})
	h.setToken(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		if h.tokenHits.Load() == 1 {
			<-r.Context().Done() // the first request hangs until its caller gives up
			return
		}
		<-release
		h.defaultToken(w, r)
	})
	leaderCtx, cancel := context.WithCancel(context.Background())
	leaderErr := make(chan error, 1)
	go func() {
		_, err := h.client.GetResultLink(leaderCtx, testActionID, 0)
		leaderErr <- err
	}()
	<-arrived
	followerErr := make(chan error, 1)
	go func() {
		_, err := h.client.GetResultLink(context.Background(), testActionID, 1)
		followerErr <- err
	}()
	cancel()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) || isRetryable(err) {
		t.Errorf("leader error = %v, want context.Canceled and not retryable", err)
	}
	<-arrived // the follower takes over with its own request
	close(release)
	if err := <-followerErr; err != nil {
		t.Errorf("follower error = %v, want success after the leader gave up", err)
	}
}

func TestTokenRefreshNearExpiry(t *testing.T) {
	tests := []struct {
		name      string
		expiresIn any
		stillOK   time.Duration // clock advance after which the cached token is still used
		refresh   time.Duration // clock advance after which a new token is fetched
	}{
		// The harness's jitter is 0: the token is replaced when 10% of its lifetime is left.
		{"one hour", 3600, 53*time.Minute + 59*time.Second, 54 * time.Minute},
		{"string expires_in", "3599", 53*time.Minute + 59*time.Second, 54 * time.Minute},
		{"one minute", 60, 53 * time.Second, 54 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { // time.Sleep moves the bubble's fake clock
				h := newPipeHarness(t, nil)
				h.setToken(func(w http.ResponseWriter, r *http.Request) {
					writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": tt.expiresIn,
						"access_token": fmt.Sprintf("tok-%d", h.tokenHits.Load())})
				})
				call := func() string {
					t.Helper()
					if _, err := h.client.GetResultLink(context.Background(), testActionID, 0); err != nil {
						t.Fatalf("GetResultLink: %v", err)
					}
					return h.request().Header.Get("Authorization")
				}
				call()
				time.Sleep(tt.stillOK)
				if got := call(); got != "Bearer tok-1" || h.tokenHits.Load() != 1 {
					t.Errorf("after %s: auth %q, token requests %d; want Bearer tok-1, 1", tt.stillOK, got, h.tokenHits.Load())
				}
				time.Sleep(tt.refresh - tt.stillOK)
				// The token was used, so its replacement is fetched in the background at the refresh point;
				// a call made at that very moment may still get tok-1 while it runs. Wait for it.
				synctest.Wait()
				if got := call(); got != "Bearer tok-2" || h.tokenHits.Load() != 2 {
					t.Errorf("after %s: auth %q, token requests %d; want Bearer tok-2, 2", tt.refresh, got, h.tokenHits.Load())
				}
			})
		})
	}
}

func TestTokenErrors(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		wantCode   string
		wantInErr  string
		retryable  bool
		wantStatus int
	}{
		{"500", 500, `{"error":"temporarily_unavailable","error_description":"AADSTS50001: try again"}`, "temporarily_unavailable", "AADSTS50001", true, 500},
		{"503 html", 503, `<html>down</html>`, "", "503", true, 503},
		{"429", 429, `{"error":"too_many_requests"}`, "too_many_requests", "429", true, 429},
		{"401 invalid_client", 401, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Got '` + testSecret + `'.","error_codes":[7000215]}`, "invalid_client", "AADSTS7000215", false, 401},
		{"400 unauthorized_client", 400, `{"error":"unauthorized_client","error_description":"AADSTS700016: Application not found"}`, "unauthorized_client", "AADSTS700016", false, 400},
		{"400 body echoes secret", 400, `client_secret=` + testSecret, "", "400", false, 400},
		{"200 with error code", 200, `{"error":"invalid_scope","error_description":"AADSTS70011: bad scope"}`, "invalid_scope", "AADSTS70011", false, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			h.setToken(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(tt.body, "{") {
					w.Header().Set("Content-Type", "application/json")
				} else {
					w.Header().Set("Content-Type", "text/html")
				}
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			})
			_, err := h.client.GetAction(context.Background(), testActionID)
			var te *TokenError
			if !errors.As(err, &te) {
				t.Fatalf("error = %T %v, want *TokenError", err, err)
			}
			if te.Status != tt.wantStatus || te.Code != tt.wantCode {
				t.Errorf("TokenError status, code = %d, %q; want %d, %q", te.Status, te.Code, tt.wantStatus, tt.wantCode)
			}
			if te.Retryable() != tt.retryable || isRetryable(err) != tt.retryable {
				t.Errorf("Retryable, isRetryable = %v, %v; want %v", te.Retryable(), isRetryable(err), tt.retryable)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("Error() = %q, want it to contain %q", err, tt.wantInErr)
			}
			if strings.Contains(err.Error(), testSecret) || strings.Contains(h.logs.String(), testSecret) {
				t.Errorf("client secret leaked: error %q, logs %q", err, h.logs.String())
			}
			if n := h.apiHits.Load(); n != 0 {
				t.Errorf("api requests = %d, want 0 without a token", n)
			}
		})
	}
	t.Run("missing access_token", func(t *testing.T) {
		h := newHarness(t, nil)
		h.setToken(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 200, map[string]any{"token_type": "Bearer"})
		})
		_, err := h.client.GetAction(context.Background(), testActionID)
		var te *TokenError
		if !errors.As(err, &te) || isRetryable(err) {
			t.Errorf("error = %v, want a permanent *TokenError", err)
		}
	})
	t.Run("token endpoint unreachable", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.TokenURL = "http://127.0.0.1:1/{tenant}/token" })
		_, err := h.client.GetAction(context.Background(), testActionID)
		var te *TokenError
		if !errors.As(err, &te) || te.Status != 0 || !isRetryable(err) {
			t.Errorf("error = %v, want a retryable *TokenError with no status", err)
		}
	})
}
