package quota

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lr-relay/lr-relay/internal/testutil"
)

// TestUtilisationEveryLimiter registers several limiters on one registry, as
// lr-relay does (one per tenant and endpoint): each must show its windows'
// utilisation, and two limiters on the same key must not break the scrape.
func TestUtilisationEveryLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewPedanticRegistry()
		alpha := NewLocal([]Window{{10, time.Minute}}, WithRegisterer(reg))
		beta := NewLocal([]Window{{4, time.Second}}, WithRegisterer(reg))
		same := NewLocal([]Window{{10, time.Minute}}, WithRegisterer(reg))
		for _, w := range []struct {
			l   *Local
			key Key
		}{{alpha, Key{"alpha", "links"}}, {alpha, Key{"alpha", "links"}}, {beta, Key{"beta", "links"}}, {same, Key{"alpha", "links"}}} {
			if err := w.l.Wait(t.Context(), w.key); err != nil {
				t.Fatal(err)
			}
		}
		got := gatherValues(t, reg)
		want := map[string]float64{
			`lr_quota_utilisation_ratio{endpoint="links",tenant="alpha",window="10/1m"}`: 0.2,
			`lr_quota_utilisation_ratio{endpoint="links",tenant="beta",window="4/1s"}`:   0.25,
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				delete(got, k)
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("utilisation:\n got %v\nwant %v", got, want)
		}
	})
}

// slowWrites makes the grant writes of a limiter on a FakeClock "take" the
// given durations, one per write in order (the last one repeats), and records
// the stamps written.
type slowWrites struct {
	clock  *FakeClock
	delays []time.Duration

	mu     sync.Mutex
	stamps []time.Time
}

func (w *slowWrites) option() Option {
	return func(o *options) {
		o.noLeaseAhead = true // one write per grant, so that the delays line up with the calls
		o.onGrant = func(_ Key, at time.Time) {
			w.mu.Lock()
			defer w.mu.Unlock()
			d := w.delays[min(len(w.stamps), len(w.delays)-1)]
			w.stamps = append(w.stamps, at)
			w.clock.Advance(d)
		}
	}
}

// TestSharedDiscardsLateGrant lets grant writes take longer than half the
// margin beyond the fastest recent ones: the call must not be made on such a
// grant (Wait takes the next slot), at most once per Wait, and a store that is
// slow but steady must not lose slots.
func TestSharedDiscardsLateGrant(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	ms := time.Millisecond
	tests := []struct {
		name          string
		margin        time.Duration
		delays        []time.Duration
		waits         int
		wantWrites    int
		wantDiscarded float64
	}{
		{"fast store", 40 * ms, []time.Duration{0}, 3, 3, 0},
		{"one stall", 40 * ms, []time.Duration{0, 30 * ms, 0}, 3, 4, 1},
		{"stall within half the margin", 40 * ms, []time.Duration{0, 20 * ms, 0}, 3, 3, 0},
		{"steady slow store loses one slot, once", 40 * ms, []time.Duration{30 * ms}, 4, 5, 1},
		{"a second slow write in one Wait is used", 40 * ms, []time.Duration{0, 30 * ms, 30 * ms, 0}, 3, 4, 1},
		{"no margin, nothing to protect", 0, []time.Duration{0, 30 * ms, 0}, 3, 3, 0},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := NewFakeClock(time.Now())
			w := &slowWrites{clock: clock, delays: tc.delays}
			reg := prometheus.NewPedanticRegistry()
			s, err := NewShared(t.Context(), connect(t, srv),
				testConfig(fmt.Sprintf("late-%d", i), []Window{{100, time.Second}}, 1),
				WithClock(clock), WithRegisterer(reg), w.option(), WithMargin(tc.margin))
			if err != nil {
				t.Fatal(err)
			}
			for range tc.waits {
				if err := s.Wait(t.Context(), Key{"t", "links"}); err != nil {
					t.Fatal(err)
				}
			}
			got := gatherValues(t, reg)
			w.mu.Lock()
			if len(w.stamps) != tc.wantWrites {
				t.Errorf("%d grants written for %d calls, want %d", len(w.stamps), tc.waits, tc.wantWrites)
			}
			w.mu.Unlock()
			if v := got[`lr_quota_grants_discarded_total{endpoint="links",tenant="t"}`]; v != tc.wantDiscarded {
				t.Errorf("lr_quota_grants_discarded_total = %v, want %v", v, tc.wantDiscarded)
			}
			if v := got[`lr_quota_calls_granted_total{endpoint="links",tenant="t"}`]; v != float64(tc.waits) {
				t.Errorf("lr_quota_calls_granted_total = %v, want %d (a discarded grant is not a call)", v, tc.waits)
			}
		})
	}
}

// TestSharedDiscardedGrantCounts checks that a discarded grant still holds its
// slot: the window of 2 is full after one call whose first grant came late.
func TestSharedDiscardedGrantCounts(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	start := time.Now()
	clock := NewFakeClock(start)
	w := &slowWrites{clock: clock, delays: []time.Duration{30 * time.Millisecond, 0}}
	s, err := NewShared(t.Context(), connect(t, srv),
		testConfig("lr-quota", []Window{{2, time.Second}}, 1),
		WithClock(clock), w.option(), WithMargin(40*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(t.Context(), Key{"t", "links"}); err != nil {
		t.Fatal(err)
	}
	done := make(chan time.Time, 1)
	go func() {
		if err := s.Wait(context.Background(), Key{"t", "links"}); err != nil {
			t.Error(err)
		}
		done <- clock.Now()
	}()
	testutil.Eventually(t, 10*time.Second, func() error {
		if clock.PendingTimers() == 0 {
			return errors.New("the second call did not wait for the window")
		}
		return nil
	})
	// The discarded grant at +0 ages out at +1s plus the 40ms margin.
	clock.Set(start.Add(time.Second + 40*time.Millisecond))
	if at := <-done; at.Before(start.Add(time.Second + 40*time.Millisecond)) {
		t.Errorf("second call granted at +%v, want at least +1.04s", at.Sub(start))
	}
}
