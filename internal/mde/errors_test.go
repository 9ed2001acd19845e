package mde

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// isRetryable reports whether err is worth retrying later, so that one check covers every error the client
// returns. It decides on types only: *APIError and *TokenError answer for themselves; the client's own
// per-request timeout, network timeouts, refused or reset connections and truncated bodies are transient.
// The caller's own cancellation or deadline is not: the caller chose to stop. It lives in the tests because
// no caller uses it: the relay decides on the error types' own Retryable methods.
func isRetryable(err error) bool {
	if err == nil {
		return false
	}
	var api *APIError
	if errors.As(err, &api) {
		return api.Retryable()
	}
	var tok *TokenError
	if errors.As(err, &tok) {
		return tok.Retryable()
	}
	return isTransient(err)
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"api 503", &APIError{Status: 503}, true},
		{"api 404 wrapped", fmt.Errorf("x: %w", &APIError{Status: 404}), false},
		{"token network", &TokenError{Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, true},
		{"token 401", &TokenError{Status: 401, Code: "invalid_client"}, false},
		{"token caller cancelled", &TokenError{Err: context.Canceled}, false},
		{"own timeout", &timeoutError{op: "x", timeout: time.Second, err: context.DeadlineExceeded}, true},
		{"caller deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), false},
		{"caller cancel", context.Canceled, false},
		{"connection reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"unexpected eof", fmt.Errorf("reading body: %w", io.ErrUnexpectedEOF), true},
		{"bad response", ErrBadResponse, false},
		{"invalid argument", ErrInvalidArgument, false},
		{"plain", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isRetryable(tt.err); got != tt.want {
				t.Errorf("isRetryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestTransportFailures(t *testing.T) {
	t.Run("per-request timeout is retryable", func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.RequestTimeout = 100 * time.Millisecond })
		h.setAPI(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
		if err == nil || !isRetryable(err) {
			t.Errorf("error = %v, want a retryable timeout", err)
		}
	})
	t.Run("caller deadline is not retryable", func(t *testing.T) {
		h := newHarness(t, nil)
		h.setAPI(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := h.client.GetResultLink(ctx, testActionID, 0)
		if !errors.Is(err, context.DeadlineExceeded) || isRetryable(err) {
			t.Errorf("error = %v, want context.DeadlineExceeded, not retryable", err)
		}
	})
	t.Run("truncated body is retryable", func(t *testing.T) {
		h := newHarness(t, nil)
		h.setAPI(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "500")
			fmt.Fprint(w, `{"value": "https://a`)
		})
		_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
		if !errors.Is(err, io.ErrUnexpectedEOF) || !isRetryable(err) {
			t.Errorf("error = %v, want a retryable io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("connection dropped is retryable", func(t *testing.T) {
		h := newHarness(t, nil)
		h.setAPI(func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		})
		_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
		if err == nil || !isRetryable(err) {
			t.Errorf("error = %v, want retryable", err)
		}
	})
	t.Run("api unreachable is retryable", func(t *testing.T) {
		h := newHarness(t, nil)
		// Fetch a token first, then point the client at a closed port.
		if _, err := h.client.GetResultLink(context.Background(), testActionID, 0); err != nil {
			t.Fatal(err)
		}
		h.client.apiURL = "http://127.0.0.1:1"
		_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
		if err == nil || !isRetryable(err) {
			t.Errorf("error = %v, want retryable", err)
		}
	})
}

// leakMarkers are the client secret, fragments of it, and the tokens the harness issues.
var leakMarkers = []string{testSecret, "S3cr3t", "Of-The_Client", "tok-1", "tok-2", "tok-3"}

// TestSecretsNeverLeak drives every error path with servers that echo the client secret and the bearer token
// back, and checks neither shows up in any error string or log line.
func TestSecretsNeverLeak(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request) string {
		return "secret " + testSecret + " auth " + r.Header.Get("Authorization")
	}
	tests := []struct {
		name  string
		token http.HandlerFunc
		api   http.HandlerFunc
	}{
		{"api json message echoes token", nil, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 400, apiErrorBody("BadRequest", echo(w, r), strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")))
		}},
		{"api html echoes token", nil, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			fmt.Fprint(w, "<pre>"+echo(w, r)+"</pre>")
		}},
		{"api 401 twice echoes token", nil, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 401, apiErrorBody("Unauthorized", echo(w, r), ""))
		}},
		{"api 429 echoes token", nil, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 429, apiErrorBody(echo(w, r), echo(w, r), ""))
		}},
		{"token endpoint json echoes form", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, 401, map[string]any{"error": "invalid_client " + testSecret, "error_description": r.PostForm.Encode(), "error_uri": testSecret})
		}, nil},
		{"token endpoint text echoes form", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(502)
			fmt.Fprint(w, r.PostForm.Encode())
		}, nil},
		{"token endpoint form 200 with error", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
			fmt.Fprint(w, "error=invalid_request&error_description="+testSecret)
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.MaxThrottleRetries = 1 })
			if tt.token != nil {
				h.setToken(tt.token)
			}
			if tt.api != nil {
				h.setAPI(tt.api)
			}
			var errs []error
			_, err := h.client.GetResultLink(context.Background(), testActionID, 0)
			errs = append(errs, err)
			_, err = h.client.GetAction(context.Background(), testActionID)
			errs = append(errs, err)
			for _, err := range errs {
				if err == nil {
					t.Fatal("error = nil, want a failure")
				}
				for cause := err; cause != nil; cause = errors.Unwrap(cause) {
					msg := cause.Error()
					for _, s := range leakMarkers {
						if strings.Contains(msg, s) {
							t.Errorf("error %q contains secret %q", msg, s)
						}
					}
				}
			}
			logs := h.logs.String()
			for _, s := range leakMarkers {
				if strings.Contains(logs, s) {
					t.Errorf("logs contain secret %q: %s", s, logs)
				}
			}
		})
	}
}
