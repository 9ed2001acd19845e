package quota

import (
	"context"
	"errors"
	"testing"
	"time"
)

// limiterWaiter is what both limiters offer.
type limiterWaiter interface {
	Wait(ctx context.Context, key Key) error
}

// checkMaxWait: one grant, then a wait under WithMaxWait that would be an hour long returns a *BusyError
// naming when the window frees, grants nothing and leaves no waiter behind; a wait the bound allows blocks
// and is granted.
func checkMaxWait(t *testing.T, l limiterWaiter, key Key, window time.Duration) {
	t.Helper()
	start := time.Now()
	if err := l.Wait(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		err := l.Wait(WithMaxWait(t.Context(), time.Second), key)
		var be *BusyError
		if !errors.As(err, &be) {
			t.Fatalf("wait under a 1s bound with the window full for %s: got %v, want a *BusyError", window, err)
		}
		if be.Until.Before(start.Add(window)) || be.Until.After(time.Now().Add(window+time.Second)) {
			t.Errorf("BusyError until %v, want about %s after the first grant at %v", be.Until, window, start)
		}
		if be.Key != key || !be.Retryable() {
			t.Errorf("BusyError %+v: wrong key or not retryable", be)
		}
	}
	// Nothing was granted by the refused waits: a wait the bound allows is granted once the window frees.
	ctx, cancel := context.WithTimeout(WithMaxWait(t.Context(), 10*time.Minute), 30*time.Second)
	defer cancel()
	if window < time.Minute {
		if err := l.Wait(ctx, key); err != nil {
			t.Fatalf("wait within the bound: %v", err)
		}
		if got := time.Since(start); got < window {
			t.Errorf("granted %v after the first grant, inside the %s window", got, window)
		}
	}
}

func TestLocalMaxWait(t *testing.T) {
	l := NewLocal([]Window{{1, time.Hour}})
	checkMaxWait(t, l, Key{"a", EndpointLinks}, time.Hour)
	// The refused waiters left the queue: another key's and this key's state is clean.
	if n := len(l.keys[Key{"a", EndpointLinks}].queue); n != 0 {
		t.Errorf("%d waiters left in the queue", n)
	}
	short := NewLocal([]Window{{1, 1500 * time.Millisecond}})
	checkMaxWait(t, short, Key{"a", EndpointLinks}, 1500*time.Millisecond)
}

func TestSharedMaxWait(t *testing.T) {
	srv := startServer(t, t.TempDir(), 0)
	s, err := NewShared(t.Context(), connect(t, srv), testConfig("lr-quota", []Window{{1, 1500 * time.Millisecond}}, 1))
	if err != nil {
		t.Fatal(err)
	}
	checkMaxWait(t, s, Key{"a", EndpointLinks}, 1500*time.Millisecond)
}
