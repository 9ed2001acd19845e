package quota

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// windowViolation returns a description of the first window (N, w) in which more than N of the arrivals
// fall within a span shorter than w, or "" when there is none: what a server counting arrivals would answer
// with a 429.
func windowViolation(arrivals []time.Time, windows []Window) string {
	a := slices.Clone(arrivals)
	slices.SortFunc(a, func(x, y time.Time) int { return x.Compare(y) })
	for _, w := range windows {
		for i := w.Limit; i < len(a); i++ {
			if d := a[i].Sub(a[i-w.Limit]); d < w.Length {
				return fmt.Sprintf("%d calls arrived within %v, window %d/%v (arrivals %d..%d)", w.Limit+1, d, w.Limit, w.Length, i-w.Limit, i)
			}
		}
	}
	return ""
}

// TestSharedBatchesNeverLate is the property behind batched grants (leaseAhead, batchQueued): several
// processes share a key, callers come at random instants (bursts that take leases ahead, gaps that let
// leases expire unused, concurrent callers across processes that lose compare-and-swaps), and every call's
// arrival at the API is simulated as the instant Wait handed over its grant plus a network delay of either
// nothing or 90% of the margin, at random (the writes take no time here, so the margin is left for the
// network; the extremes are the worst case for a window). No window may ever see more calls arrive than its limit. The clock is
// fake and moves only while every caller sleeps on its timer, so the writes themselves take no time.
func TestSharedBatchesNeverLate(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	windows := []Window{{20, time.Second}, {200, 10 * time.Second}}
	const margin = 100 * time.Millisecond
	for seed := range uint64(6) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			clock := NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			rec := &grantRecorder{}
			const procs = 3
			var limiters []*Shared
			for range procs {
				l, err := NewShared(t.Context(), connect(t, srv), testConfig(fmt.Sprintf("prop%d", seed), windows, procs),
					WithClock(clock), WithMargin(margin), rec.useOption(), withBatchAt(1))
				if err != nil {
					t.Fatal(err)
				}
				limiters = append(limiters, l)
			}
			key := Key{"t", EndpointLinks}
			calls := 0
			for step := 0; step < 400; step++ {
				// Gaps: mostly within a lease (it lasts 50 ms here), sometimes past it or a window's edge.
				switch rng.IntN(10) {
				case 0, 1:
					clock.Advance(time.Duration(rng.Int64N(int64(2 * time.Second))))
				case 2, 3:
					clock.Advance(time.Duration(rng.Int64N(int64(200 * time.Millisecond))))
				default:
					clock.Advance(time.Duration(rng.Int64N(int64(50 * time.Millisecond))))
				}
				// One to three callers at once, each in a different process.
				callers := rng.Perm(procs)[:1+rng.IntN(procs)]
				calls += len(callers)
				done := make(chan error, len(callers))
				for _, p := range callers {
					go func() { done <- limiters[p].Wait(context.Background(), key) }()
				}
				for left := len(callers); left > 0; {
					select {
					case err := <-done:
						if err != nil {
							t.Fatal(err)
						}
						left--
					case <-time.After(2 * time.Millisecond):
						// Move the clock only once every caller still waiting sleeps on its timer.
						if clock.PendingTimers() == left {
							if at, ok := clock.NextDeadline(); ok {
								clock.Set(at)
							}
						}
					}
				}
			}
			uses := rec.snapshot()
			arrivals := make([]time.Time, len(uses))
			for i, u := range uses {
				// The extremes of the delay, the worst case for a window: none, or 90% of the margin.
				arrivals[i] = u
				if rng.IntN(2) == 0 {
					arrivals[i] = u.Add(margin * 9 / 10)
				}
			}
			if v := windowViolation(arrivals, windows); v != "" {
				t.Fatalf("seed %d: %s", seed, v)
			}
			entry, err := limiters[0].kv.Get(t.Context(), kvKey(key))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d calls, %d writes to the key, closest %d+1 arrivals %v apart", len(uses), entry.Revision(),
				windows[0].Limit, closest(arrivals, windows[0].Limit))
			if len(uses) != calls {
				t.Errorf("%d grants handed over for %d calls", len(uses), calls)
			}
			if entry.Revision() >= uint64(calls) {
				t.Errorf("%d calls took %d writes: no grant was batched, the property was not exercised", calls, entry.Revision())
			}
		})
	}
}

// closest returns the shortest span holding n+1 of the arrivals.
func closest(arrivals []time.Time, n int) time.Duration {
	a := slices.Clone(arrivals)
	slices.SortFunc(a, func(x, y time.Time) int { return x.Compare(y) })
	var least time.Duration
	for i := n; i < len(a); i++ {
		if d := a[i].Sub(a[i-n]); i == n || d < least {
			least = d
		}
	}
	return least
}

// TestSharedLeaseEndsAtItsStamp pins down how a batch is recorded: one write takes maxLeaseAhead grants
// stamped at the end of their lease (now + leaseLength), the grants beyond the first are handed over without
// a write until that instant and never after it, and the next write removes those left unused.
func TestSharedLeaseEndsAtItsStamp(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := NewFakeClock(start)
	windows := []Window{{100, time.Minute}}
	const margin = 100 * time.Millisecond
	lease := leaseLength(margin, windows)
	if lease != margin/2 {
		t.Fatalf("leaseLength = %v, want half the margin, %v", lease, margin/2)
	}
	uses := &grantRecorder{}
	s, err := NewShared(t.Context(), connect(t, srv), testConfig("leaseend", windows, 1),
		WithClock(clock), WithMargin(margin), uses.useOption(), withBatchAt(1))
	if err != nil {
		t.Fatal(err)
	}
	key := Key{"t", EndpointLinks}
	stored := func() (sharedState, uint64) {
		t.Helper()
		entry, err := s.kv.Get(t.Context(), kvKey(key))
		if err != nil {
			t.Fatal(err)
		}
		st, err := decodeState(entry.Value())
		if err != nil {
			t.Fatal(err)
		}
		return st, entry.Revision()
	}
	wait := func() {
		t.Helper()
		if err := s.Wait(t.Context(), key); err != nil {
			t.Fatal(err)
		}
	}

	wait()
	st, rev := stored()
	if len(st.log) != maxLeaseAhead {
		t.Fatalf("first write recorded %d grants, want %d", len(st.log), maxLeaseAhead)
	}
	for _, g := range st.log {
		if !g.Equal(start.Add(lease)) {
			t.Fatalf("batch stamped %v after it was taken, want %v (its lease's end)", g.Sub(start), lease)
		}
	}
	clock.Advance(lease * 3 / 5)
	wait()
	clock.Advance(lease * 2 / 5) // exactly the lease's end: still usable
	wait()
	if _, r := stored(); r != rev {
		t.Fatalf("calls within the lease wrote to the store (revision %d, then %d)", rev, r)
	}
	clock.Advance(time.Millisecond) // past it: the 5 grants left are dropped, never used late
	wait()
	st, _ = stored()
	if want := 3 + maxLeaseAhead; len(st.log) != want {
		t.Errorf("store holds %d grants, want %d: the 3 used and the new batch (the 5 unused removed)", len(st.log), want)
	}
	for i, u := range uses.snapshot()[:3] {
		if u.After(start.Add(lease)) {
			t.Errorf("grant %d of the first batch handed over %v after it was taken, after its stamp (%v)", i, u.Sub(start), lease)
		}
	}
}
