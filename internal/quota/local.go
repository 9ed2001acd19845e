package quota

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Local is an exact sliding-window limiter for one process. Every key has its
// own log of grant times, pruned to the longest window, and its own FIFO queue
// of waiters. It is safe for concurrent use.
type Local struct {
	windows []Window
	margin  time.Duration
	keep    time.Duration // longest window plus margin: older grants are dropped
	clock   Clock
	opts    options
	metrics *metrics

	mu        sync.Mutex
	keys      map[Key]*keyState
	lastSweep time.Time
}

// keyState is guarded by Local.mu.
type keyState struct {
	log         []time.Time
	pausedUntil time.Time
	queue       []*waiter // FIFO; queue[0] is the only one that may be granted
}

// waiter is one blocked Wait call. wake has room for one signal so that a
// wake-up sent while the waiter is not yet listening is not lost.
type waiter struct {
	wake chan struct{}
}

func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// NewLocal returns a limiter that enforces every window in windows for each
// key. Windows with a Limit or Length <= 0 cannot be enforced and are ignored
// (with an error log); validate configuration with ParseWindows or
// ValidateWindows first. With no usable window, Wait grants at once (pauses
// still apply).
func NewLocal(windows []Window, opts ...Option) *Local {
	o := buildOptions(opts)
	return newLocal(windows, o, newMetrics(o.registerer), o.registerer != nil)
}

func newLocal(windows []Window, o options, m *metrics, collectUtilisation bool) *Local {
	usable := usableWindows(windows)
	if len(usable) != len(windows) {
		o.logger.Error().Str("windows", FormatWindows(windows)).Msg("quota: ignoring windows with a limit or length <= 0")
	}
	l := &Local{
		windows: usable,
		margin:  o.margin,
		keep:    longestWindow(usable) + o.margin,
		clock:   o.clock,
		opts:    o,
		metrics: m,
		keys:    make(map[Key]*keyState),
	}
	if collectUtilisation && o.registerer != nil {
		registerUtilisation(o.registerer, o.clock, l.utilisation)
	}
	return l
}

// Windows returns the windows that the limiter enforces.
func (l *Local) Windows() []Window { return slices.Clone(l.windows) }

// Wait blocks until one call for key is allowed under every window and any
// pause, records the grant and returns nil. Waiters for the same key are
// granted in arrival order. When ctx ends first, Wait returns ctx.Err() and
// takes nothing: the next waiter moves up at once.
func (l *Local) Wait(ctx context.Context, key Key) error {
	_, err := l.wait(ctx, key)
	return err
}

// wait is Wait that also returns the grant time it recorded.
func (l *Local) wait(ctx context.Context, key Key) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	start := l.clock.Now()
	w := &waiter{wake: make(chan struct{}, 1)}

	l.mu.Lock()
	l.sweepLocked(start)
	ks := l.stateLocked(key)
	ks.queue = append(ks.queue, w)
	for {
		if ks.queue[0] != w {
			l.mu.Unlock()
			select {
			case <-w.wake:
			case <-ctx.Done():
				l.leave(ks, w)
				return time.Time{}, ctx.Err()
			}
			l.mu.Lock()
			continue
		}
		now := l.clock.Now()
		ks.log = pruneBefore(ks.log, now.Add(-l.keep))
		at := nextAllowed(ks.log, l.windows, l.margin, ks.pausedUntil, now)
		if !at.After(now) {
			ks.log = append(ks.log, now)
			if l.opts.onGrant != nil {
				l.opts.onGrant(key, now)
			}
			ks.queue = ks.queue[1:]
			if len(ks.queue) > 0 {
				ks.queue[0].signal()
			}
			l.mu.Unlock()
			l.metrics.observeGrant(key, now.Sub(start))
			return now, nil
		}
		if tooLong(ctx, now, at) {
			if i := slices.Index(ks.queue, w); i >= 0 {
				ks.queue = slices.Delete(ks.queue, i, i+1)
				if i == 0 && len(ks.queue) > 0 {
					ks.queue[0].signal()
				}
			}
			l.mu.Unlock()
			return time.Time{}, &BusyError{Key: key, Until: at}
		}
		l.mu.Unlock()
		timer := l.clock.NewTimer(at.Sub(now))
		select {
		case <-timer.C():
		case <-w.wake: // a pause changed, or a seed arrived: look again
			timer.Stop()
		case <-ctx.Done():
			timer.Stop()
			l.leave(ks, w)
			return time.Time{}, ctx.Err()
		}
		l.mu.Lock()
	}
}

// leave removes a cancelled waiter; if it was at the head, the next waiter is
// woken so that the slot it was waiting for is not lost.
func (l *Local) leave(ks *keyState, w *waiter) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.Index(ks.queue, w)
	if i < 0 {
		return
	}
	ks.queue = slices.Delete(ks.queue, i, i+1)
	if i == 0 && len(ks.queue) > 0 {
		ks.queue[0].signal()
	}
}

// Pause stops every grant for key until until, for example after a 429 whose
// Retry-After says the whole tenant's quota is spent. A pause never shortens
// one already in force.
func (l *Local) Pause(key Key, until time.Time) {
	l.mu.Lock()
	ks := l.stateLocked(key)
	extended := until.After(ks.pausedUntil)
	if extended {
		ks.pausedUntil = until
		if len(ks.queue) > 0 {
			ks.queue[0].signal()
		}
	}
	l.mu.Unlock()
	if extended {
		l.metrics.observePause(key)
		l.opts.logger.Info().Stringer("key", key).Time("until", until).Msg("quota: paused")
	}
}

// NextFree estimates, without blocking, when n more calls for key could be
// granted: the zero time when they could be now. The caller counts the calls
// it has already let start. The real Wait still enforces the windows.
func (l *Local) NextFree(key Key, n int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	ks, ok := l.keys[key]
	if !ok {
		return time.Time{}
	}
	now := l.clock.Now()
	at := estimateFree(ks.log, l.windows, l.margin, ks.pausedUntil, now, n)
	if !at.After(now) {
		return time.Time{}
	}
	return at
}

// PausedUntil returns the end of the pause in force for key, or the zero time.
func (l *Local) PausedUntil(key Key) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ks, ok := l.keys[key]; ok && ks.pausedUntil.After(l.clock.Now()) {
		return ks.pausedUntil
	}
	return time.Time{}
}

// seed merges grants made elsewhere (by other replicas, as last seen in the
// shared store) into key's log, so that a fallback limiter counts them too.
func (l *Local) seed(key Key, grants []time.Time, pausedUntil time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ks := l.stateLocked(key)
	merged := append(slices.Clone(ks.log), grants...)
	slices.SortFunc(merged, func(a, b time.Time) int { return a.Compare(b) })
	ks.log = merged
	if pausedUntil.After(ks.pausedUntil) {
		ks.pausedUntil = pausedUntil
	}
	if len(ks.queue) > 0 {
		ks.queue[0].signal()
	}
}

func (l *Local) stateLocked(key Key) *keyState {
	ks, ok := l.keys[key]
	if !ok {
		ks = &keyState{}
		l.keys[key] = ks
	}
	return ks
}

// sweepLocked forgets keys that no longer hold anything (no waiter, no grant
// inside the longest window, no pause), at most once per longest window, so
// that memory follows the set of active keys.
func (l *Local) sweepLocked(now time.Time) {
	if now.Sub(l.lastSweep) < l.keep {
		return
	}
	l.lastSweep = now
	cutoff := now.Add(-l.keep)
	for k, ks := range l.keys {
		ks.log = pruneBefore(ks.log, cutoff)
		if len(ks.queue) == 0 && len(ks.log) == 0 && !ks.pausedUntil.After(now) {
			delete(l.keys, k)
		}
	}
}

// utilisation reports, for every key and window, the share of the limit used
// in the window that ends at now.
func (l *Local) utilisation(now time.Time) []utilisation {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []utilisation
	for k, ks := range l.keys {
		for _, w := range l.windows {
			n := countSince(ks.log, now, w.Length+l.margin)
			out = append(out, utilisation{key: k, window: w, ratio: float64(n) / float64(w.Limit)})
		}
	}
	return out
}
