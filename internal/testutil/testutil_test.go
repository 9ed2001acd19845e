package testutil

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recorder is a testing.TB that records Fatalf instead of stopping the goroutine.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestEventually(t *testing.T) {
	t.Run("returns once fn succeeds", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := &recorder{TB: t}
			calls := 0
			start := time.Now()
			Eventually(r, time.Second, func() error {
				calls++
				if calls < 5 {
					return fmt.Errorf("call %d", calls)
				}
				return nil
			})
			if r.failed != "" {
				t.Errorf("failed with %q, want success", r.failed)
			}
			if calls != 5 {
				t.Errorf("fn called %d times, want 5", calls)
			}
			if got, want := time.Since(start), 4*pollInterval; got != want {
				t.Errorf("waited %s, want %s (four poll intervals)", got, want)
			}
		})
	})
	t.Run("fails with the last error at the deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			r := &recorder{TB: t}
			calls := 0
			start := time.Now()
			Eventually(r, 95*time.Millisecond, func() error {
				calls++
				return fmt.Errorf("still wrong after %d calls", calls)
			})
			if want := "still wrong after 11 calls"; !strings.Contains(r.failed, want) {
				t.Errorf("failure = %q, want it to hold %q", r.failed, want)
			}
			if got := time.Since(start); got != 95*time.Millisecond {
				t.Errorf("gave up after %s, want exactly the 95ms timeout", got)
			}
		})
	})
	t.Run("calls fn once even with no time", func(t *testing.T) {
		r := &recorder{TB: t}
		Eventually(r, 0, func() error { return errors.New("no") })
		if r.failed == "" {
			t.Error("did not fail, want a failure")
		}
	})
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
			}
		})
	}
	wg.Wait()
	if got := strings.Count(b.String(), "\n"); got != 800 {
		t.Errorf("got %d lines, want 800", got)
	}
}

func TestNewPipeServer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := NewPipeServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", r.Host, time.Now().UTC().Format(time.RFC3339))
		}))
		get := func() string {
			t.Helper()
			resp, err := srv.Client().Get(srv.URL + "/x")
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			return string(b)
		}
		if got, want := get(), "127.0.0.1:0 2000-01-01T00:00:00Z"; got != want {
			t.Errorf("first answer = %q, want %q", got, want)
		}
		other := &http.Client{Transport: &http.Transport{}}
		if _, err := other.Get(srv.URL); err == nil {
			t.Error("a client other than the server's reached it, want an error")
		}
		time.Sleep(time.Hour) // an idle keep-alive connection must not stop the fake clock
		if got, want := get(), "127.0.0.1:0 2000-01-01T01:00:00Z"; got != want {
			t.Errorf("answer an hour later = %q, want %q", got, want)
		}
	})
}
