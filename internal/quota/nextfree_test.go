package quota

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lr-relay/lr-relay/internal/testutil"
)

// TestLocalNextFree checks the estimate against what Wait then does: an idle
// key is free now, a full window is free when its oldest grant ages out, and
// n calls are free when the n-th oldest does.
func TestLocalNextFree(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		key := Key{"t", EndpointLinks}
		l := NewLocal([]Window{{3, time.Second}}, WithMargin(10*time.Millisecond))
		if at := l.NextFree(key, 1); !at.IsZero() {
			t.Fatalf("idle key: NextFree = %v, want now (zero)", at)
		}
		start := time.Now()
		for range 3 {
			if err := l.Wait(t.Context(), key); err != nil {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Grants at +0, +100ms, +200ms; now +300ms.
		want := func(after time.Duration) time.Time { return start.Add(after + time.Second + 10*time.Millisecond) }
		if at := l.NextFree(key, 1); !at.Equal(want(0)) {
			t.Errorf("NextFree(1) = +%v, want +%v", at.Sub(start), want(0).Sub(start))
		}
		if at := l.NextFree(key, 2); !at.Equal(want(100 * time.Millisecond)) {
			t.Errorf("NextFree(2) = +%v, want +%v", at.Sub(start), want(100*time.Millisecond).Sub(start))
		}
		if at, at3 := l.NextFree(key, 9), l.NextFree(key, 3); !at.Equal(at3) {
			t.Errorf("NextFree(9) = %v, want a whole window's worth, NextFree(3) = %v", at, at3)
		}
		if err := l.Wait(t.Context(), key); err != nil {
			t.Fatal(err)
		}
		if got := time.Since(start); got != want(0).Sub(start) {
			t.Errorf("Wait granted at +%v, the estimate said +%v", got, want(0).Sub(start))
		}
		l.Pause(key, time.Now().Add(time.Minute))
		if at := l.NextFree(Key{"t", EndpointLinks}, 1); at.Before(time.Now().Add(time.Minute)) {
			t.Errorf("NextFree during a pause = %v, want the pause's end", at)
		}
		if at := l.NextFree(Key{"other", EndpointLinks}, 1); !at.IsZero() {
			t.Errorf("another tenant's key: NextFree = %v, want now", at)
		}
	})
}

// TestSharedLeaseAndNextFree has several callers of one process wait on one
// key at once: every call is granted within the windows, with fewer writes
// than calls when they queue up, and NextFree sees the windows filled from the
// state last written, without a round trip.
func TestSharedLeaseAndNextFree(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	windows := []Window{{20, time.Second}}
	rec := &grantRecorder{}
	s, err := NewShared(t.Context(), connect(t, srv), testConfig("lease", windows, 1), rec.option(), WithMargin(200*time.Millisecond), withBatchAt(1))
	if err != nil {
		t.Fatal(err)
	}
	key := Key{"t", EndpointLinks}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := s.Wait(context.Background(), key); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	grants := rec.snapshot()
	if len(grants) != 20 {
		t.Fatalf("%d grants recorded for 20 calls, want 20 (no lease left unused)", len(grants))
	}
	checkWindows(t, grants, windows, 200*time.Millisecond)
	entry, err := s.kv.Get(t.Context(), kvKey(key))
	if err != nil {
		t.Fatal(err)
	}
	st, err := decodeState(entry.Value())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.log) != 20 {
		t.Errorf("store holds %d grants, want 20", len(st.log))
	}
	t.Logf("20 calls took %d writes", entry.Revision())
	if at := s.NextFree(key, 1); !at.After(time.Now()) {
		t.Errorf("NextFree after filling the window = %v, want later than now", at)
	}
	if at := s.NextFree(Key{"idle", EndpointLinks}, 1); !at.IsZero() {
		t.Errorf("idle key: NextFree = %v, want now", at)
	}
}

// TestSharedLeaseAheadReleased checks that grants taken ahead for callers that
// did not come are removed from the store by the next write, so an idle
// process does not sit on its tenant's budget.
func TestSharedLeaseAheadReleased(t *testing.T) {
	if !leaseAhead {
		t.Skip("grants ahead for callers not yet queued are switched off (see leaseAhead)")
	}
	srv := startServer(t, t.TempDir(), 0)
	clock := NewFakeClock(time.Now())
	s, err := NewShared(t.Context(), connect(t, srv), testConfig("ahead", []Window{{10, time.Minute}}, 1),
		WithClock(clock), WithMargin(20*time.Millisecond), withBatchAt(1))
	if err != nil {
		t.Fatal(err)
	}
	key := Key{"t", EndpointLinks}
	stored := func() int {
		entry, err := s.kv.Get(t.Context(), kvKey(key))
		if err != nil {
			t.Fatal(err)
		}
		st, err := decodeState(entry.Value())
		if err != nil {
			t.Fatal(err)
		}
		return len(st.log)
	}
	if err := s.Wait(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	if got := stored(); got != maxLeaseAhead {
		t.Fatalf("store holds %d grants after one call with the window free, want %d (one used, the rest leased)", got, maxLeaseAhead)
	}
	if err := s.Wait(t.Context(), key); err != nil { // within the lease: no write
		t.Fatal(err)
	}
	clock.Advance(time.Second) // the lease expires with 6 grants unused
	if err := s.Wait(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	// 2 used and 6 removed; with 8 of 10 free the new write takes maxLeaseAhead again.
	if got := stored(); got != 2+min(maxLeaseAhead, 8) {
		t.Errorf("store holds %d grants, want %d: the 2 used and the new write's %d", got, 2+min(maxLeaseAhead, 8), min(maxLeaseAhead, 8))
	}
}

// TestSharedNextFreeSeesOtherReplicas checks that a replica's estimate follows
// the grants of another replica without any call of its own (the bucket watch).
func TestSharedNextFreeSeesOtherReplicas(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	cfg := testConfig("watch", []Window{{5, time.Minute}}, 2)
	a, err := NewShared(t.Context(), connect(t, srv), cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewShared(t.Context(), connect(t, srv), cfg)
	if err != nil {
		t.Fatal(err)
	}
	key := Key{"t-1", EndpointLinks}
	if at := b.NextFree(key, 1); !at.IsZero() {
		t.Fatalf("before any call: NextFree = %v, want now", at)
	}
	for range 5 {
		if err := a.Wait(t.Context(), key); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if b.NextFree(key, 1).IsZero() {
			return errors.New("replica b still estimates the window free after replica a filled it")
		}
		return nil
	})
	if at := b.NextFree(key, 1); at.Before(time.Now().Add(50 * time.Second)) {
		t.Errorf("replica b's estimate %v, want about a minute from now", at)
	}
}
