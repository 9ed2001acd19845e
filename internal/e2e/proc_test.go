package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lr-relay/lr-relay/internal/testutil"
)

// The crash tests run the real lr-relay binary, built once per test binary.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func relayBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lr-relay-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "lr-relay")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/lr-relay/lr-relay/cmd/lr-relay").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("go build: %s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("building lr-relay: %v", buildErr)
	}
	return binPath
}

// proc is one lr-relay process.
type proc struct {
	name string
	cmd  *exec.Cmd
	logs *testutil.SyncBuffer
	done chan struct{}
	err  error
}

// startProc starts `lr-relay run` with the env's variables plus extra. Its logs go to the env's log buffer
// (for the secret check) and to its own.
//
// Under the race detector these tests are skipped: the relay processes are plain binaries (nothing of theirs
// is race-checked), while the detector slows the JetStream server and the simulator in this process several
// times over, which distorts exactly what these tests measure (calls against a sliding window, timings of
// kills and restarts). The plain `go test ./...` pass, which CI runs first, runs them.
func (e *env) startProc(t testing.TB, name string, extra map[string]string) *proc {
	t.Helper()
	if raceEnabled {
		t.Skip("process tests run in the plain (non -race) pass; see startProc")
	}
	cmd := exec.Command(relayBinary(t), "run")
	cmd.Env = os.Environ()
	for k, v := range e.vars(extra) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{name: name, cmd: cmd, logs: &testutil.SyncBuffer{}, done: make(chan struct{})}
	w := &teeWriter{a: p.logs, b: e.logs}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill(); p.wait(10 * time.Second) })
	return p
}

func (p *proc) kill() { _ = p.cmd.Process.Signal(syscall.SIGKILL) }
func (p *proc) term() { _ = p.cmd.Process.Signal(syscall.SIGTERM) }

// wait waits for the process to end and reports whether it did within d.
func (p *proc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the last n lines of the process's logs.
func (p *proc) tail(n int) string {
	lines := strings.Split(p.logs.String(), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

type teeWriter struct{ a, b *testutil.SyncBuffer }

func (w *teeWriter) Write(p []byte) (int, error) {
	_, _ = w.a.Write(p)
	return w.b.Write(p)
}
