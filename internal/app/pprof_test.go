package app

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPprofEndpoint checks that /debug/pprof/ is served on the app's HTTP address only when LR_PPROF is set,
// and that the default configuration leaves it off.
func TestPprofEndpoint(t *testing.T) {
	tests := []struct {
		name       string
		pprof      string // value of LR_PPROF; "" leaves the variable unset (the default)
		wantStatus int
	}{
		{"off by default", "", http.StatusNotFound},
		{"off when false", "false", http.StatusNotFound},
		{"on when true", "true", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			if tt.pprof != "" {
				env["LR_PPROF"] = tt.pprof
			}
			_, base := startHTTP(t, env)
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap?debug=1", "/debug/pprof/cmdline"} {
				status, body := get(t, base+path)
				if status != tt.wantStatus {
					t.Errorf("GET %s: status %d, want %d", path, status, tt.wantStatus)
				}
				if tt.wantStatus == http.StatusOK && path == "/debug/pprof/" && !strings.Contains(body, "goroutine") {
					t.Errorf("GET %s: the index lists no goroutine profile:\n%s", path, body)
				}
			}
			// The operational endpoints are there either way.
			if status, _ := get(t, base+"/-/healthy"); status != http.StatusOK {
				t.Errorf("GET /-/healthy: status %d, want 200", status)
			}
		})
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// TestPprofProfileOutlastsWriteTimeout checks that a CPU profile may run longer than the server's write
// timeout, which bounds every other response (net/http/pprof moves the deadline of its own response).
func TestPprofProfileOutlastsWriteTimeout(t *testing.T) {
	mux := http.NewServeMux()
	registerPprof(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, WriteTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	status, body := get(t, "http://"+ln.Addr().String()+"/debug/pprof/profile?seconds=2")
	if status != http.StatusOK || len(body) == 0 {
		t.Fatalf("2s profile behind a 1s write timeout: status %d, %d bytes: %.200s", status, len(body), body)
	}
}
