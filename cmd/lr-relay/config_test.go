package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lr-relay/lr-relay/internal/testutil"
)

func TestRunHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var out, errb bytes.Buffer
		if code := run([]string{"run", arg}, &out, &errb); code != exitOK {
			t.Errorf("run %s: exit %d, want 0; stderr: %s", arg, code, errb.String())
		}
		for _, want := range []string{"lr-relay run", "LR_WORKERS", "LR_TENANTS_FILE"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("run %s: stdout lacks %q", arg, want)
			}
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"run", "--workers=3"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), `unexpected argument "--workers=3"`) {
		t.Errorf("run --workers=3: exit %d, stderr %q; want exit %d naming the argument", code, errb.String(), exitUsage)
	}
}

// natsListener stands in for a NATS server and counts the connections made to it, to show that a bad
// configuration stops lr-relay before it dials.
func natsListener(t *testing.T) (url string, dialled *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dialled = new(atomic.Int32)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return "nats://" + ln.Addr().String(), dialled
}

// clearLR unsets every LR_ variable for the test, so that the developer's environment does not leak in.
func clearLR(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(strings.ToUpper(k), "LR_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

func TestRunChecksEverythingBeforeConnecting(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		errs []string
	}{
		{name: "every problem at once", env: map[string]string{
			"LR_RATE_LIMITS": "100/1x", "LR_MDE_CLOUD": "gcc-hihg", "LR_TENANTS_FILE": "/nonexistent/tenants.yaml",
			"LR_MDE_CLIENT_ID": "c", "LR_WORKERS": "0", "LR_WORKS": "3",
		}, errs: []string{
			"warning: LR_WORKS is not a known variable; did you mean LR_WORKERS?",
			`LR_RATE_LIMITS="100/1x"`, `LR_MDE_CLOUD="gcc-hihg"`, "did you mean gcc-high?",
			"LR_TENANTS_FILE: cannot read /nonexistent/tenants.yaml", "LR_MDE_TENANT_ID: LR_MDE_AUTH=secret needs the Entra tenant id",
			"LR_MDE_CLIENT_SECRET_FILE: LR_MDE_AUTH=secret needs LR_MDE_CLIENT_SECRET_FILE", "LR_WORKERS: must be between 1 and 1024",
		}},
		{name: "type errors at once", env: map[string]string{"LR_WORKERS": "eight", "LR_ACK_WAIT": "5"},
			errs: []string{`LR_WORKERS="eight": must be an integer`, `LR_ACK_WAIT="5": must be a duration such as 30s or 5m`}},
		{name: "no tenant", env: map[string]string{},
			errs: []string{"no tenant configured: set LR_MDE_TENANT_ID"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearLR(t)
			url, dialled := natsListener(t)
			t.Setenv("LR_NATS_URL", url)
			t.Setenv("LR_HTTP_ADDR", "")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			if code := run([]string{"run"}, &out, &errb); code != exitUsage {
				t.Errorf("exit %d, want %d; stderr: %s", code, exitUsage, errb.String())
			}
			for _, e := range tt.errs {
				if !strings.Contains(errb.String(), e) {
					t.Errorf("stderr lacks %q:\n%s", e, errb.String())
				}
			}
			if n := dialled.Load(); n != 0 {
				t.Errorf("lr-relay dialled NATS %d times before refusing its configuration", n)
			}
		})
	}
}

func TestWarningsArePrinted(t *testing.T) {
	clearLR(t)
	t.Setenv("LR_WORKS", "3")
	var out, errb bytes.Buffer
	run([]string{"fetch", "--action", "nope"}, &out, &errb)
	if !strings.Contains(errb.String(), "lr-relay: warning: LR_WORKS is not a known variable; did you mean LR_WORKERS?") {
		t.Errorf("fetch stderr lacks the warning:\n%s", errb.String())
	}
}

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
	binaryOut  []byte
)

// testVersion is what the test binary is stamped with, as the Dockerfile stamps the image's.
const testVersion = "9.8.7-ldflags-test"

// buildBinary builds lr-relay once, with the version set the way the Dockerfile sets it.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	binaryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lr-relay-test-")
		if err != nil {
			binaryErr = err
			return
		}
		binaryPath = filepath.Join(dir, "lr-relay")
		cmd := exec.Command("go", "build", "-ldflags", "-X "+versionVariable+"="+testVersion, "-o", binaryPath, ".")
		binaryOut, binaryErr = cmd.CombinedOutput()
	})
	if binaryErr != nil {
		t.Fatalf("go build: %v\n%s", binaryErr, binaryOut)
	}
	return binaryPath
}

// versionVariable is the -X target; deploy/deploy_test.go checks that the Dockerfile uses the same.
const versionVariable = "github.com/lr-relay/lr-relay/internal/app.Version"

func TestVersionFromLdflags(t *testing.T) {
	bin := buildBinary(t)
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != testVersion {
		t.Errorf("lr-relay version = %q, want %q from -ldflags -X %s", got, testVersion, versionVariable)
	}
}

// TestVersionReachesUserAgent runs the stamped binary's fetch against a stand-in Defender API: the API call
// carries the version in its User-Agent, as Microsoft asks of partners.
func TestVersionReachesUserAgent(t *testing.T) {
	bin := buildBinary(t)
	var mu sync.Mutex
	var agents []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/token") {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"access_token":"t","token_type":"Bearer","expires_in":3600}`)
			return
		}
		mu.Lock()
		agents = append(agents, r.UserAgent())
		mu.Unlock()
		http.NotFound(w, r)
	}))
	defer srv.Close()
	cmd := exec.Command(bin, "fetch", "--action", "7f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b")
	cmd.Env = []string{"LR_MDE_API_URL=" + srv.URL, "LR_MDE_TOKEN_URL=" + srv.URL + "/{tenant}/token",
		"LR_MDE_TENANT_ID=t", "LR_MDE_CLIENT_ID=c", "LR_MDE_CLIENT_SECRET=s", "LR_HTTP_ADDR="}
	out, _ := cmd.CombinedOutput() // the action is not found: fetch fails after the call
	mu.Lock()
	defer mu.Unlock()
	if len(agents) == 0 {
		t.Fatalf("fetch made no API call:\n%s", out)
	}
	for _, ua := range agents {
		if !strings.HasSuffix(ua, "/"+testVersion) {
			t.Errorf("User-Agent %q, want it to end in /%s", ua, testVersion)
		}
	}
}

// TestRunLogsWarnings starts the real binary with a typo in its environment and a NATS URL nobody answers:
// the configuration is valid, so it starts (and keeps trying NATS), and its first log lines carry the
// warnings.
func TestRunLogsWarnings(t *testing.T) {
	bin := buildBinary(t)
	url, _ := natsListener(t)
	cmd := exec.Command(bin, "run")
	cmd.Env = []string{"LR_NATS_URL=" + url, "LR_HTTP_ADDR=", "LR_WORKS=3", "LR_RATE_LIMITS=200/1m",
		"LR_MDE_TENANT_ID=t", "LR_MDE_CLIENT_ID=c", "LR_MDE_CLIENT_SECRET=s3cret"}
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, want := range []string{
			`"level":"warn"`, `LR_WORKS is not a known variable; did you mean LR_WORKERS?`,
			`LR_RATE_LIMITS=200/1m allows up to 200 calls in a minute (Microsoft allows 100)`,
		} {
			if !strings.Contains(stderr.String(), want) {
				return fmt.Errorf("stderr lacks %s:\n%s", want, stderr.String())
			}
		}
		return nil
	})
	if strings.Contains(stderr.String(), "s3cret") {
		t.Error("the log repeats the client secret")
	}
}

// TestMain removes the binary buildBinary built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binaryPath != "" {
		os.RemoveAll(filepath.Dir(binaryPath))
	}
	os.Exit(code)
}
