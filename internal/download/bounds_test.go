package download

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lr-relay/lr-relay/internal/testutil"
)

// dripServer sends one byte every `every` until the client goes away; done closes when the handler
// returns.
func dripServer(t *testing.T, every time.Duration) (*server, <-chan struct{}) {
	t.Helper()
	done := make(chan struct{})
	srv := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
				if _, err := io.WriteString(w, "."); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}
	})
	return srv, done
}

// pacedServer sends n chunks of size bytes, one every `every`.
func pacedServer(t *testing.T, n, size int, every time.Duration) *server {
	t.Helper()
	chunk := strings.Repeat("x", size)
	return newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; i < n; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
}

func meterOf(t *testing.T, b *Body) *rateMeter {
	t.Helper()
	g, ok := b.ReadCloser.(*guardedReader)
	if !ok || g.rate == nil {
		t.Fatalf("body has no rate meter")
	}
	return g.rate
}

func TestMinRate(t *testing.T) {
	t.Run("slow drip is abandoned", func(t *testing.T) {
		// One byte every 20 ms is 50 bytes/s, against a minimum of 1000 bytes/s over 300 ms. The idle
		// timeout never fires (a byte arrives long before it) and there is no total timeout: only the
		// minimum rate can end this body, which never ends by itself.
		srv, done := dripServer(t, 20*time.Millisecond)
		const window = 300 * time.Millisecond
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()},
			IdleTimeout: 10 * time.Second, MinRate: 1000, RateWindow: window})
		b, err := d.Open(ctxT(t), blobLink(srv.URL))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer b.Close()
		start := time.Now()
		got, err := io.ReadAll(b)
		assertErrNoSecret(t, err)
		if kind := kindOf(err); kind != KindTooSlow {
			t.Fatalf("kind = %v, want %v (err %v)", kind, KindTooSlow, err)
		}
		var e *Error
		if !errors.As(err, &e) || !e.Retryable() {
			t.Errorf("a too-slow body must be retryable: %v", err)
		}
		if !strings.Contains(err.Error(), "below the minimum of 1000 bytes/s") {
			t.Errorf("error %q does not say which minimum", err)
		}
		if len(got) == 0 {
			t.Errorf("no byte arrived before the body was abandoned")
		}
		if el := time.Since(start); el < window {
			t.Errorf("abandoned after %v, before one window (%v) of waiting", el, window)
		}
		// The bound: judged once a window has been waited, and the read that crossed it waited less
		// than the idle timeout.
		if m := meterOf(t, b); m.waited < window || m.waited >= window+d.cfg.IdleTimeout {
			t.Errorf("abandoned after %v of waiting, want within [%v, %v)", m.waited, window, window+d.cfg.IdleTimeout)
		}
		// The transfer is aborted, not drained: the server sees the connection go.
		testutil.Eventually(t, 10*time.Second, func() error {
			select {
			case <-done:
				return nil
			default:
				return errors.New("the drip handler has not seen the connection close")
			}
		})
	})

	t.Run("fast body is unaffected", func(t *testing.T) {
		// 16 KiB every 10 ms (about 1.6 MB/s) for one second, against 1000 bytes/s over 500 ms: the body
		// spans two windows and is judged on every read after the first one.
		srv := pacedServer(t, 100, 16<<10, 10*time.Millisecond)
		const window = 500 * time.Millisecond
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()},
			MinRate: 1000, RateWindow: window})
		b, err := d.Open(ctxT(t), blobLink(srv.URL))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer b.Close()
		got, err := io.ReadAll(b)
		if err != nil {
			t.Fatalf("ReadAll: %v", err)
		}
		if len(got) != 100*16<<10 {
			t.Errorf("got %d bytes, want %d", len(got), 100*16<<10)
		}
		if m := meterOf(t, b); m.waited < window {
			t.Errorf("only %v spent waiting: the minimum rate was never judged (window %v)", m.waited, window)
		}
	})

	t.Run("a slow consumer is not blamed on the link", func(t *testing.T) {
		// The server sends 128 KiB at once; the reader takes 1 KiB every 5 ms, i.e. about 200 KB/s of wall
		// clock, below the 1 MB/s minimum. Only time spent waiting for the link counts, so it succeeds.
		const size = 128 << 10
		srv := newServer(t, false, func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, strings.Repeat("y", size))
		})
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()},
			MinRate: 1 << 20, RateWindow: 100 * time.Millisecond})
		b, err := d.Open(ctxT(t), blobLink(srv.URL))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer b.Close()
		buf := make([]byte, 1<<10)
		total := 0
		for {
			n, err := b.Read(buf)
			total += n
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Read after %d bytes: %v", total, err)
			}
			time.Sleep(5 * time.Millisecond) // the consumer's own work, e.g. writing to the Object Store
		}
		if total != size {
			t.Errorf("got %d bytes, want %d", total, size)
		}
	})

	t.Run("off when zero", func(t *testing.T) {
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{"127.0.0.1"}})
		if d.cfg.MinRate != 0 {
			t.Fatalf("MinRate = %d, want 0", d.cfg.MinRate)
		}
		if newRateMeter(0, time.Second) != nil {
			t.Errorf("a zero minimum built a meter")
		}
	})
}

// TestRateMeterArithmetic replays the README's figures through the meter with the service defaults
// (32768 bytes/s over 30 s), without waiting for them.
func TestRateMeterArithmetic(t *testing.T) {
	const minRate, window = 32 << 10, MinRateWindow
	t.Run("one byte every 2 s is abandoned after 30 s of waiting", func(t *testing.T) {
		m := newRateMeter(minRate, window)
		for i := 1; i <= 100; i++ {
			if err := m.add(1, 2*time.Second); err != nil {
				if m.waited != window {
					t.Errorf("abandoned after %v, want %v", m.waited, window)
				}
				if !strings.Contains(err.Error(), "0.5 bytes/s") {
					t.Errorf("error %q does not give the measured rate", err)
				}
				return
			}
		}
		t.Fatal("a drip of one byte every 2 s was never abandoned")
	})
	t.Run("4 GiB at the rate the total timeout needs passes", func(t *testing.T) {
		// 4 GiB in 2 h is 596,523 bytes/s; deliver it in 64 KiB reads.
		m := newRateMeter(minRate, window)
		per := time.Second * (64 << 10) / 596523
		for i := 0; i < 65536; i++ { // 4 GiB
			if err := m.add(64<<10, per); err != nil {
				t.Fatalf("read %d: %v", i, err)
			}
		}
	})
	t.Run("a pause shorter than the window is averaged out", func(t *testing.T) {
		m := newRateMeter(minRate, window)
		for i := 0; i < 60; i++ { // 1 MiB/s for a minute
			if err := m.add(1<<20, time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.add(0, 20*time.Second); err != nil { // 20 s of silence (under the idle timeout)
			t.Errorf("a 20 s pause after a fast minute failed: %v", err)
		}
		if err := m.add(0, 20*time.Second); err == nil { // 40 s of silence: nothing in the last 30 s
			t.Errorf("40 s of silence passed")
		}
	})
	t.Run("at the minimum and 10% under it", func(t *testing.T) {
		// The meter counts a read's bytes in the slot where the read ended, so it may credit one read more
		// than the window holds: a steady rate a few percent under the minimum can pass, 10% under cannot.
		for _, tt := range []struct {
			perSecond int
			wantFail  bool
		}{{minRate, false}, {minRate * 9 / 10, true}} {
			m := newRateMeter(minRate, window)
			var failed bool
			for i := 0; i < 120 && !failed; i++ {
				failed = m.add(tt.perSecond, time.Second) != nil
			}
			if failed != tt.wantFail {
				t.Errorf("%d bytes/s: failed = %v, want %v", tt.perSecond, failed, tt.wantFail)
			}
		}
	})
}

func TestTotalTimeout(t *testing.T) {
	// 1 KiB every 5 ms meets the minimum rate easily and never goes idle; only the total timeout ends it.
	srv := pacedServer(t, 1<<20, 1<<10, 5*time.Millisecond)
	d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()},
		IdleTimeout: 10 * time.Second, MinRate: 10, RateWindow: 50 * time.Millisecond, TotalTimeout: 300 * time.Millisecond})
	b, err := d.Open(ctxT(t), blobLink(srv.URL))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	got, err := io.ReadAll(b)
	assertErrNoSecret(t, err)
	if kind := kindOf(err); kind != KindTimeout {
		t.Fatalf("kind = %v, want %v (err %v)", kind, KindTimeout, err)
	}
	var e *Error
	if !errors.As(err, &e) || !e.Retryable() {
		t.Errorf("a total timeout must be retryable: %v", err)
	}
	if !strings.Contains(err.Error(), "total timeout of 300ms") {
		t.Errorf("error %q does not name the total timeout", err)
	}
	if len(got) == 0 {
		t.Errorf("no byte arrived before the total timeout")
	}
}
