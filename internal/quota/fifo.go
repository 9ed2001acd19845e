package quota

import (
	"context"
	"slices"
	"sync"
)

// fifo is a per-key FIFO mutex whose Lock can be cancelled. Shared uses it so
// that only the oldest waiter of a key in this process talks to the store:
// waiters are served in arrival order and the store sees one contender per
// process instead of one per goroutine.
type fifo struct {
	mu   sync.Mutex
	keys map[Key][]*waiter // [0] holds the lock
}

func newFIFO() *fifo { return &fifo{keys: make(map[Key][]*waiter)} }

// lock blocks until the caller is first for key, and returns the function that
// hands the turn to the next waiter. When ctx ends first it returns ctx.Err()
// and leaves the queue without holding anyone up.
func (f *fifo) lock(ctx context.Context, key Key) (unlock func(), err error) {
	w := &waiter{wake: make(chan struct{}, 1)}
	f.mu.Lock()
	f.keys[key] = append(f.keys[key], w)
	first := f.keys[key][0] == w
	f.mu.Unlock()
	unlock = func() { f.remove(key, w) }
	if first {
		return unlock, nil
	}
	for {
		select {
		case <-w.wake:
			f.mu.Lock()
			first = f.keys[key][0] == w
			f.mu.Unlock()
			if first {
				return unlock, nil
			}
		case <-ctx.Done():
			f.remove(key, w)
			return nil, ctx.Err()
		}
	}
}

// remove takes w out of key's queue and, if w held the lock, wakes the next.
func (f *fifo) remove(key Key, w *waiter) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.keys[key]
	i := slices.Index(q, w)
	if i < 0 {
		return
	}
	q = slices.Delete(q, i, i+1)
	if len(q) == 0 {
		delete(f.keys, key)
		return
	}
	f.keys[key] = q
	if i == 0 {
		q[0].signal()
	}
}

// waiting returns how many callers hold or wait for key's turn.
func (f *fifo) waiting(key Key) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.keys[key])
}
