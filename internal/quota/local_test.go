package quota

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// checkWindows fails t if any half-open interval of length w+widen holds more
// than Limit of the grants (in any order).
func checkWindows(t *testing.T, grants []time.Time, windows []Window, widen time.Duration) {
	t.Helper()
	g := slices.Clone(grants)
	slices.SortFunc(g, func(a, b time.Time) int { return a.Compare(b) })
	for _, w := range windows {
		for i := 0; i+w.Limit < len(g); i++ {
			if d := g[i+w.Limit].Sub(g[i]); d < w.Length+widen {
				t.Fatalf("window %v: grants %d..%d (%v .. %v) are %v apart: %d grants in an interval shorter than %v",
					w, i, i+w.Limit, g[i], g[i+w.Limit], d, w.Limit+1, w.Length+widen)
			}
		}
	}
}

type waitResult struct {
	arrive  time.Time
	granted time.Time
	err     error
}

// startWaiter starts Wait in a goroutine and, once it is queued (synctest.Wait
// returns only when every goroutine in the bubble is blocked), returns a
// function that collects the result.
func startWaiter(ctx context.Context, l *Local, key Key) func() waitResult {
	done := make(chan waitResult, 1)
	go func() {
		arrive := time.Now()
		err := l.Wait(ctx, key)
		done <- waitResult{arrive: arrive, granted: time.Now(), err: err}
	}()
	synctest.Wait()
	return func() waitResult { return <-done }
}

// TestLocalProperty runs random waiters with random arrival times and random
// cancellations under a fake clock (a synctest bubble) and checks, per key:
// no window ever holds more than its limit; waiters are served in arrival
// order; and every grant happens at the earliest instant the windows allow
// (no under-use): max(arrival, previous grant, Nth-last grant + w).
func TestLocalProperty(t *testing.T) {
	scenarios := []struct {
		name    string
		windows []Window
		waiters int
		span    time.Duration // arrivals spread over this time
		seeds   int
		keys    []Key
	}{
		{name: "small windows", windows: []Window{{3, time.Second}, {7, 5 * time.Second}}, waiters: 120, span: 40 * time.Second, seeds: 20},
		{name: "one window bursty", windows: []Window{{5, 200 * time.Millisecond}}, waiters: 150, span: 4 * time.Second, seeds: 20},
		{name: "mde windows", windows: []Window{{100, time.Minute}, {1500, time.Hour}}, waiters: 1700, span: 20 * time.Minute, seeds: 2, keys: []Key{{"tenant-a", "link"}}},
	}
	for _, sc := range scenarios {
		for seed := range sc.seeds {
			t.Run(fmt.Sprintf("%s/seed=%d", sc.name, seed), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					rng := rand.New(rand.NewPCG(uint64(seed), 42))
					keys := sc.keys
					if keys == nil {
						keys = []Key{{"tenant-a", "link"}, {"tenant-b", "link"}}
					}
					l := NewLocal(sc.windows)
					longest := longestWindow(sc.windows)
					start := time.Now()

					offsets := make([]time.Duration, sc.waiters)
					for i := range offsets {
						offsets[i] = time.Duration(rng.Int64N(int64(sc.span)))
						if rng.IntN(4) == 0 { // bursts: many arrivals at the same instant
							offsets[i] = offsets[i].Truncate(sc.span / 10)
						}
					}
					slices.Sort(offsets)

					collect := make(map[Key][]func() waitResult)
					for _, off := range offsets {
						time.Sleep(time.Until(start.Add(off)))
						key := keys[rng.IntN(len(keys))]
						ctx := t.Context()
						if rng.IntN(4) == 0 {
							var cancel context.CancelFunc
							ctx, cancel = context.WithTimeout(ctx, time.Duration(rng.Int64N(int64(longest))))
							defer cancel()
						}
						collect[key] = append(collect[key], startWaiter(ctx, l, key))
					}

					for _, key := range keys {
						var grants []time.Time
						cancelled := 0
						for _, c := range collect[key] {
							r := c()
							if r.err != nil {
								if !errors.Is(r.err, context.DeadlineExceeded) {
									t.Fatalf("Wait: %v, want nil or DeadlineExceeded", r.err)
								}
								cancelled++
								continue
							}
							// Granted in arrival order (FIFO) and at the earliest instant.
							want := r.arrive
							if n := len(grants); n > 0 {
								want = later(want, grants[n-1])
							}
							for _, w := range sc.windows {
								if n := len(grants); n >= w.Limit {
									want = later(want, grants[n-w.Limit].Add(w.Length))
								}
							}
							if !r.granted.Equal(want) {
								t.Fatalf("key %s grant %d at +%v, want +%v (arrived +%v)",
									key, len(grants), r.granted.Sub(start), want.Sub(start), r.arrive.Sub(start))
							}
							grants = append(grants, r.granted)
						}
						checkWindows(t, grants, sc.windows, 0)
						t.Logf("key %s: %d granted, %d cancelled", key, len(grants), cancelled)
					}
				})
			})
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// TestLocalBacklog checks utilisation exactly: a backlog gets Limit grants at
// once and each next one the instant the oldest grant leaves the window.
func TestLocalBacklog(t *testing.T) {
	tests := []struct {
		name    string
		windows []Window
		margin  time.Duration
		waiters int
		want    []time.Duration // offset of each grant from the start
	}{
		{
			name: "one window", windows: []Window{{3, time.Second}}, waiters: 7,
			want: []time.Duration{0, 0, 0, time.Second, time.Second, time.Second, 2 * time.Second},
		},
		{
			name: "two windows", windows: []Window{{3, time.Second}, {5, 10 * time.Second}}, waiters: 12,
			want: []time.Duration{0, 0, 0, time.Second, time.Second,
				10 * time.Second, 10 * time.Second, 10 * time.Second, 11 * time.Second, 11 * time.Second,
				20 * time.Second, 20 * time.Second},
		},
		{
			name: "margin widens", windows: []Window{{2, time.Second}}, margin: 100 * time.Millisecond, waiters: 5,
			want: []time.Duration{0, 0, 1100 * time.Millisecond, 1100 * time.Millisecond, 2200 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := NewLocal(tt.windows, WithMargin(tt.margin))
				start := time.Now()
				var collect []func() waitResult
				for range tt.waiters {
					collect = append(collect, startWaiter(t.Context(), l, Key{"t", "e"}))
				}
				var got []time.Duration
				for _, c := range collect {
					r := c()
					if r.err != nil {
						t.Fatalf("Wait: %v", r.err)
					}
					got = append(got, r.granted.Sub(start))
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("grant offsets:\n got %v\nwant %v", got, tt.want)
				}
			})
		})
	}
}

// TestLocalFIFOAndCancel checks that waiters are served in arrival order and
// that a cancelled head hands its slot to the next waiter at once.
func TestLocalFIFOAndCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLocal([]Window{{1, time.Second}})
		start := time.Now()
		if err := l.Wait(t.Context(), Key{"t", "e"}); err != nil {
			t.Fatal(err)
		}
		ctxA, cancelA := context.WithCancel(t.Context())
		a := startWaiter(ctxA, l, Key{"t", "e"})
		b := startWaiter(t.Context(), l, Key{"t", "e"})
		c := startWaiter(t.Context(), l, Key{"t", "e"})
		time.Sleep(500 * time.Millisecond)
		cancelA()
		if r := a(); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled waiter: got %v, want context.Canceled", r.err)
		}
		rb, rc := b(), c()
		if rb.err != nil || rc.err != nil {
			t.Fatalf("b: %v, c: %v", rb.err, rc.err)
		}
		if got, want := rb.granted.Sub(start), time.Second; got != want {
			t.Errorf("b granted at +%v, want +%v (the slot a gave up)", got, want)
		}
		if got, want := rc.granted.Sub(start), 2*time.Second; got != want {
			t.Errorf("c granted at +%v, want +%v", got, want)
		}
	})
}

func TestLocalWaitCancelledBefore(t *testing.T) {
	l := NewLocal([]Window{{1, time.Hour}})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := l.Wait(ctx, Key{"t", "e"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	// The cancelled call took nothing.
	if err := l.Wait(t.Context(), Key{"t", "e"}); err != nil {
		t.Fatalf("first real call: %v", err)
	}
}

func TestLocalKeysIndependent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLocal([]Window{{1, time.Minute}})
		start := time.Now()
		for _, key := range []Key{{"a", "link"}, {"b", "link"}, {"a", "other"}} {
			if err := l.Wait(t.Context(), key); err != nil {
				t.Fatal(err)
			}
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("three keys took %v, want 0", d)
		}
	})
}

func TestLocalPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLocal([]Window{{2, time.Second}})
		start := time.Now()
		key := Key{"t", "e"}

		{ // pause before wait
			l.Pause(key, start.Add(3*time.Second))
			l.Pause(key, start.Add(time.Second)) // a shorter pause never shortens
			if got := l.PausedUntil(key); !got.Equal(start.Add(3 * time.Second)) {
				t.Errorf("PausedUntil = %v, want +3s", got.Sub(start))
			}
			if err := l.Wait(t.Context(), key); err != nil {
				t.Fatal(err)
			}
			if got := time.Since(start); got != 3*time.Second {
				t.Errorf("granted at +%v, want +3s", got)
			}
			if other := l.PausedUntil(Key{"t", "other"}); !other.IsZero() {
				t.Errorf("other key paused until %v", other)
			}
		}

		{ // pause while waiting
			// One more grant fills the window; the next would be due at +4s.
			if err := l.Wait(t.Context(), key); err != nil {
				t.Fatal(err)
			}
			w := startWaiter(t.Context(), l, key)
			time.Sleep(500 * time.Millisecond)
			l.Pause(key, start.Add(6*time.Second))
			r := w()
			if r.err != nil {
				t.Fatal(r.err)
			}
			if got := r.granted.Sub(start); got != 6*time.Second {
				t.Errorf("granted at +%v, want +6s (end of pause)", got)
			}
		}
	})
}

func TestLocalFakeClock(t *testing.T) {
	clock := NewFakeClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	start := clock.Now()
	l := NewLocal([]Window{{2, time.Second}}, WithClock(clock))
	for range 2 {
		if err := l.Wait(t.Context(), Key{"t", "e"}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan time.Time)
	go func() {
		if err := l.Wait(t.Context(), Key{"t", "e"}); err != nil {
			t.Error(err)
		}
		done <- clock.Now()
	}()
	for clock.PendingTimers() == 0 {
		time.Sleep(time.Millisecond) // poll: the waiter has gone to sleep
	}
	if at, _ := clock.NextDeadline(); !at.Equal(start.Add(time.Second)) {
		t.Errorf("waiter sleeps until +%v, want +1s", at.Sub(start))
	}
	clock.Advance(999 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("granted before the window allowed it")
	default:
	}
	clock.Advance(time.Millisecond)
	if got := <-done; !got.Equal(start.Add(time.Second)) {
		t.Errorf("granted at +%v, want +1s", got.Sub(start))
	}
}

func TestLocalMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		l := NewLocal([]Window{{10, time.Minute}, {100, time.Hour}}, WithRegisterer(reg))
		for range 2 {
			if err := l.Wait(t.Context(), Key{"tenant1", "link"}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(61 * time.Second)
		if err := l.Wait(t.Context(), Key{"tenant1", "link"}); err != nil {
			t.Fatal(err)
		}
		l.Pause(Key{"tenant1", "link"}, time.Now().Add(time.Second))
		got := gatherValues(t, reg)
		want := map[string]float64{
			`lr_quota_calls_granted_total{endpoint="link",tenant="tenant1"}`:               3,
			`lr_quota_paused_total{endpoint="link",tenant="tenant1"}`:                      1,
			`lr_quota_utilisation_ratio{endpoint="link",tenant="tenant1",window="100/1h"}`: 0.03,
			`lr_quota_utilisation_ratio{endpoint="link",tenant="tenant1",window="10/1m"}`:  0.1,
			`lr_quota_window_limit{endpoint="link",tenant="tenant1",window="100/1h"}`:      100,
			`lr_quota_window_limit{endpoint="link",tenant="tenant1",window="10/1m"}`:       10,
			`lr_quota_wait_seconds_count{endpoint="link",tenant="tenant1"}`:                3,
		}
		if !maps.Equal(got, want) {
			t.Errorf("metrics:\n got %v\nwant %v", got, want)
		}
		// A second limiter on the same registry reuses the collectors.
		NewLocal([]Window{{1, time.Second}}, WithRegisterer(reg))
	})
}

func TestLocalIgnoresBadWindows(t *testing.T) {
	l := NewLocal([]Window{{0, time.Second}, {-1, 0}})
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	for range 3 {
		if err := l.Wait(ctx, Key{"t", "e"}); err != nil {
			t.Fatalf("no usable window should grant at once: %v", err)
		}
	}
}

// TestLocalConcurrentRealClock hammers one key from many goroutines on the
// real clock, under -race, and checks the recorded grant times.
func TestLocalConcurrentRealClock(t *testing.T) {
	windows := []Window{{20, 100 * time.Millisecond}, {50, 400 * time.Millisecond}}
	var (
		mu     sync.Mutex
		grants []time.Time
		wg     sync.WaitGroup
	)
	l := NewLocal(windows, func(o *options) {
		o.onGrant = func(_ Key, at time.Time) {
			mu.Lock()
			grants = append(grants, at)
			mu.Unlock()
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 900*time.Millisecond)
	defer cancel()
	for range 16 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := l.Wait(ctx, Key{"t", "e"}); err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(grants) < 100 {
		t.Errorf("only %d grants in 900ms, want at least 100", len(grants))
	}
	checkWindows(t, grants, windows, 0)
}

// gatherValues flattens a registry into "name{labels}" -> value, with
// histograms reduced to their _count, for exact comparisons in tests (the
// client's testutil package needs a module this repository does not require).
func gatherValues(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(map[string]float64)
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			name := f.GetName()
			var v float64
			switch {
			case m.GetCounter() != nil:
				v = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				v = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				name += "_count"
				v = float64(m.GetHistogram().GetSampleCount())
			}
			out[name+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}
