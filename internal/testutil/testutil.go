// Package testutil holds the helpers that the tests of several packages share: polling for a condition
// instead of sleeping for a guessed time, and a log sink that concurrent writers can share. Only _test.go
// files import it.
package testutil

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

// pollInterval is the pause between two calls of an Eventually condition: short, so that a test waits
// little longer than it must, and long enough not to steal the CPU from the code under test.
const pollInterval = 10 * time.Millisecond

// Eventually calls fn until it returns nil and fails the test with fn's last error once timeout has
// passed. It is nats-server's checkFor: the error says what was still wrong, so a failure explains itself.
// fn is always called at least once, and once more at the deadline. Call Eventually from the test's own
// goroutine, as it may call t.Fatalf. Inside a testing/synctest bubble the polling advances the fake clock.
func Eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if !time.Now().Before(deadline) {
			t.Fatalf("not done within %s: %v", timeout, err)
			return
		}
		time.Sleep(min(pollInterval, max(time.Until(deadline), time.Millisecond)))
	}
}

// SyncBuffer is a bytes.Buffer guarded by a mutex, for logs written by other goroutines (a zerolog logger,
// a subprocess's output) and read by the test. The zero value is ready to use.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the buffer.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns a copy of everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
