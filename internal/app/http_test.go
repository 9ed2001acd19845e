package app

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/config"
)

// TestHTTPServerBounds checks the operational endpoint against clients that would hold it: every timeout
// is set, and an oversized header block is refused with 431 instead of being read.
func TestHTTPServerBounds(t *testing.T) {
	srv, base := startHTTP(t, nil)
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 {
		t.Errorf("timeouts: header %s, read %s, write %s, idle %s; want all set",
			srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout)
	}
	if srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 64<<10 {
		t.Errorf("MaxHeaderBytes = %d, want a cap of at most 64 KiB", srv.MaxHeaderBytes)
	}

	get := func(header string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+"/-/healthy", nil)
		if err != nil {
			t.Fatal(err)
		}
		if header != "" {
			req.Header.Set("X-Filler", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get(""); code != http.StatusOK || body != "healthy\n" {
		t.Errorf("GET /-/healthy = %d %q, want 200 healthy", code, body)
	}
	if code, _ := get(strings.Repeat("a", 64<<10)); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("GET with 64 KiB of headers = %d, want 431", code)
	}
}

// startHTTP serves the app's HTTP endpoints with the default configuration plus env (every other LR_ variable
// of the test run's environment is cleared) and returns the server and its base URL.
func startHTTP(t *testing.T, env map[string]string) (*http.Server, string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, config.Prefix+"_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Config: cfg, Logger: zerolog.Nop(), Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := a.serveHTTP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return srv, "http://" + ln.Addr().String()
}
