package quota

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lr-relay/lr-relay/internal/embedded"
	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

// startServer boots a real JetStream server on a random port (or on port, to
// restart one) storing in dir.
func startServer(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	return embeddedtest.Server(t, embedded.Options{StoreDir: dir, Port: port})
}

// connect opens a separate connection, as a separate replica process would.
func connect(t *testing.T, s *server.Server) jetstream.JetStream {
	t.Helper()
	return embeddedtest.Connect(t, s, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
}

// testConfig returns a complete SharedConfig (the package has no defaults) for
// a provisioned bucket.
func testConfig(bucket string, windows []Window, processes int) SharedConfig {
	return SharedConfig{
		Bucket: bucket, Windows: windows, Processes: processes, Provision: true, BucketReplicas: 1,
		OpTimeout: 2 * time.Second, ProbeInterval: 5 * time.Second,
	}
}

// grantRecorder collects instants from several limiters: the exact grant stamps (option), or the instants at
// which Shared.Wait handed grants to callers (useOption).
type grantRecorder struct {
	mu     sync.Mutex
	grants []time.Time
}

func (r *grantRecorder) add(_ Key, at time.Time) {
	r.mu.Lock()
	r.grants = append(r.grants, at)
	r.mu.Unlock()
}

func (r *grantRecorder) option() Option { return func(o *options) { o.onGrant = r.add } }

func (r *grantRecorder) useOption() Option { return func(o *options) { o.onUse = r.add } }

func (r *grantRecorder) snapshot() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := slices.Clone(r.grants)
	slices.SortFunc(g, func(a, b time.Time) int { return a.Compare(b) })
	return g
}

// meanDelay measures under-use during a backlog: for each grant, how long after
// the earliest instant the windows allowed it (given the grants before it) it
// actually happened.
func meanDelay(grants []time.Time, windows []Window) time.Duration {
	var total time.Duration
	for k := 1; k < len(grants); k++ {
		ideal := grants[k-1]
		for _, w := range windows {
			if k >= w.Limit {
				ideal = later(ideal, grants[k-w.Limit].Add(w.Length))
			}
		}
		total += grants[k].Sub(ideal)
	}
	if len(grants) < 2 {
		return 0
	}
	return total / time.Duration(len(grants)-1)
}

// greedyCount is how many grants the windows allow in d to a backlog that
// takes every slot the instant it opens.
func greedyCount(windows []Window, d time.Duration) int {
	var grants []time.Duration
	for {
		var at time.Duration
		if n := len(grants); n > 0 {
			at = grants[n-1]
		}
		for _, w := range windows {
			if n := len(grants); n >= w.Limit {
				at = max(at, grants[n-w.Limit]+w.Length)
			}
		}
		if at >= d {
			return len(grants)
		}
		grants = append(grants, at)
	}
}

func TestSharedHammer(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	windows := []Window{{20, 200 * time.Millisecond}, {60, time.Second}}
	rec := &grantRecorder{}
	const replicas, workers = 3, 4
	limiters := make([]*Shared, replicas)
	for i := range limiters {
		var err error
		limiters[i], err = NewShared(t.Context(), connect(t, srv), testConfig("lr-quota", windows, replicas), rec.option())
		if err != nil {
			t.Fatalf("NewShared: %v", err)
		}
	}
	const run = 2200 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), run)
	defer cancel()
	var wg sync.WaitGroup
	for _, l := range limiters {
		for range workers {
			wg.Go(func() {
				for {
					if err := l.Wait(ctx, Key{"tenant-a", "link"}); err != nil {
						if !errors.Is(err, context.DeadlineExceeded) {
							t.Errorf("Wait: %v", err)
						}
						return
					}
				}
			})
		}
	}
	wg.Wait()
	grants := rec.snapshot()
	checkWindows(t, grants, windows, 0)
	for _, l := range limiters {
		if l.Degraded() {
			t.Error("a limiter is degraded with a healthy store")
		}
	}
	// A backlog must get close to the most the windows allow in the run, each
	// grant close to the instant it became allowed.
	delay := meanDelay(grants, windows)
	most := greedyCount(windows, run)
	t.Logf("%d grants of %d possible, mean delay after the allowed instant %v", len(grants), most, delay)
	if len(grants)*10 < most*9 {
		t.Errorf("got %d grants in %v, want at least 90%% of the %d allowed", len(grants), run, most)
	}
	if delay > 30*time.Millisecond {
		t.Errorf("mean delay %v, want under 30ms", delay)
	}
}

func TestSharedPauseAcrossReplicas(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	cfg := testConfig("lr-quota", []Window{{1, 300 * time.Millisecond}}, 1)
	recB := &grantRecorder{}
	a, err := NewShared(t.Context(), connect(t, srv), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewShared(t.Context(), connect(t, srv), cfg, recB.option())
	if err != nil {
		t.Fatal(err)
	}
	key := Key{"tenant-x", "link"}

	// B is granted once, then waits for the window; A pauses meanwhile.
	if err := b.Wait(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Wait(t.Context(), key) }()
	until := time.Now().Add(700 * time.Millisecond)
	a.Pause(key, until)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// A fresh call from B after the pause ended is not blocked.
	g := recB.snapshot()
	if len(g) != 2 {
		t.Fatalf("B recorded %d grants, want 2", len(g))
	}
	if g[1].Before(until) {
		t.Errorf("B granted %v before the end of A's pause", until.Sub(g[1]))
	}
	if got := b.PausedUntil(key); !got.IsZero() && got.Sub(until).Abs() > time.Millisecond {
		t.Errorf("B sees pause until %v, want %v", got, until)
	}
}

func TestSharedDegradedFallback(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir, 0)
	windows := []Window{{10, time.Second}}
	rec := &grantRecorder{}
	reg := prometheus.NewPedanticRegistry()
	l, err := NewShared(t.Context(), connect(t, srv), SharedConfig{
		Bucket: "lr-quota", Windows: windows, Processes: 2, Provision: true, BucketReplicas: 1,
		OpTimeout: 150 * time.Millisecond, ProbeInterval: 100 * time.Millisecond,
	}, rec.option(), WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	key := Key{"tenant-d", "link"}
	for range 4 {
		if err := l.Wait(t.Context(), key); err != nil {
			t.Fatal(err)
		}
	}
	srvPort := srv.Addr().(*net.TCPAddr).Port
	srv.Shutdown()
	srv.WaitForShutdown()

	ctx, cancel := context.WithTimeout(t.Context(), 1300*time.Millisecond)
	defer cancel()
	fallbackGrants := 0
	for l.Wait(ctx, key) == nil {
		fallbackGrants++
	}
	if !l.Degraded() {
		t.Fatal("Degraded() = false with the server stopped")
	}
	if got := gatherValues(t, reg)["lr_quota_degraded{}"]; got != 1 {
		t.Errorf("lr_quota_degraded = %v, want 1", got)
	}
	// The share is 5/1s and counts the 4 grants made just before the outage.
	share := []Window{{5, time.Second}}
	grants := rec.snapshot()
	checkWindows(t, grants, share, 0)
	t.Logf("fallback granted %d calls", fallbackGrants)
	if fallbackGrants < 2 {
		t.Errorf("fallback granted %d calls in 1.3s, want at least 2", fallbackGrants)
	}

	// The server comes back: the next calls find the store again and write
	// the fallback grants into it.
	startServer(t, dir, srvPort)
	testutil.Eventually(t, 10*time.Second, func() error {
		if !l.Degraded() {
			return nil
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		err := l.Wait(ctx, key)
		cancel()
		if err != nil {
			t.Fatalf("Wait after restart: %v", err)
		}
		return errors.New("still degraded after the server came back")
	})
	if got := gatherValues(t, reg)["lr_quota_degraded{}"]; got != 0 {
		t.Errorf("lr_quota_degraded = %v after recovery, want 0", got)
	}
	checkWindows(t, rec.snapshot(), windows, 0)
	l.mu.Lock()
	pending := 0
	for _, ks := range l.keys {
		if len(ks.unsynced) > 0 {
			pending++
		}
	}
	l.mu.Unlock()
	if pending != 0 {
		t.Errorf("%d keys still hold fallback grants not written to the store", pending)
	}
}

// offsetClock is a replica whose wall clock is off by d.
type offsetClock struct{ d time.Duration }

func (c offsetClock) Now() time.Time                 { return time.Now().Add(c.d) }
func (c offsetClock) NewTimer(d time.Duration) Timer { return RealClock{}.NewTimer(d) }

// TestSharedSkewMargin lets a replica whose clock runs 50ms behind fill the
// window, then asks one whose clock is right: without a margin the second
// would grant 50ms (true time) too early.
func TestSharedSkewMargin(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	windows := []Window{{5, 300 * time.Millisecond}}
	var (
		mu   sync.Mutex
		real []time.Time
	)
	trueTime := func(o *options) {
		o.onGrant = func(Key, time.Time) {
			mu.Lock()
			real = append(real, time.Now())
			mu.Unlock()
		}
	}
	cfg := testConfig("lr-quota", windows, 1)
	behind, err := NewShared(t.Context(), connect(t, srv), cfg, trueTime, WithClock(offsetClock{-50 * time.Millisecond}), WithMargin(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	right, err := NewShared(t.Context(), connect(t, srv), cfg, trueTime, WithMargin(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := behind.Wait(t.Context(), Key{"tenant-s", "link"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := right.Wait(t.Context(), Key{"tenant-s", "link"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if gap := real[5].Sub(real[0]); gap < 300*time.Millisecond {
		t.Errorf("6th grant %v after the 1st in true time, want at least 300ms", gap)
	}
	checkWindows(t, real, windows, 0)
}

func TestNewSharedMissingBucket(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	_, err := NewShared(t.Context(), connect(t, srv), SharedConfig{Windows: []Window{{1, time.Second}}, Bucket: "absent", Processes: 1, OpTimeout: time.Second, ProbeInterval: time.Second})
	if err == nil {
		t.Fatal("NewShared with an absent bucket and no Provision succeeded")
	}
	if _, err := NewShared(t.Context(), connect(t, srv), SharedConfig{}); err == nil {
		t.Fatal("NewShared with no windows succeeded")
	}
}
