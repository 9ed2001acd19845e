package quota

import (
	"slices"
	"time"
)

// nextAllowed returns the earliest instant >= now at which one more grant keeps
// every window within its limit, given the ascending grant times in log and a
// pause that lasts until pausedUntil. Each window is widened by widen.
//
// A grant at t is allowed under (N, w) when fewer than N grants g satisfy
// t-g < w, that is when the Nth most recent grant is at least w old. Checked
// at every grant, this is the same as "no half-open interval of length w holds
// more than N grants", so the log is exact where a token bucket is not.
func nextAllowed(log []time.Time, windows []Window, widen time.Duration, pausedUntil, now time.Time) time.Time {
	at := now
	if pausedUntil.After(at) {
		at = pausedUntil
	}
	for _, w := range windows {
		if len(log) < w.Limit {
			continue
		}
		if t := log[len(log)-w.Limit].Add(w.Length + widen); t.After(at) {
			at = t
		}
	}
	return at
}

// estimateFree returns when m more grants, taken as early as the windows
// allow, could all have happened: for each window (N, w) the m-th grant waits
// for the grant that m-1 earlier ones push out of it. A window never holds more
// than N, so m is capped at N: "a whole window's worth", which is when a
// larger batch can start.
func estimateFree(log []time.Time, windows []Window, widen time.Duration, pausedUntil, now time.Time, m int) time.Time {
	at := now
	if pausedUntil.After(at) {
		at = pausedUntil
	}
	for _, w := range windows {
		if i := len(log) - w.Limit + min(m, w.Limit) - 1; m > 0 && i >= 0 {
			if t := log[i].Add(w.Length + widen); t.After(at) {
				at = t
			}
		}
	}
	return at
}

// room returns how many grants the windows allow at now (0 while paused).
func room(log []time.Time, windows []Window, widen time.Duration, pausedUntil, now time.Time) int {
	if pausedUntil.After(now) {
		return 0
	}
	n := -1
	for _, w := range windows {
		r := max(w.Limit-countSince(log, now, w.Length+widen), 0)
		if n < 0 || r < n {
			n = r
		}
	}
	return max(n, 0)
}

// pruneBefore drops the grants older than cutoff (they can no longer matter to
// any window) and returns the shortened log. Reslicing leaves the dead head in
// the backing array until append outgrows it and copies only the live part,
// which bounds memory by a small multiple of the largest limit.
func pruneBefore(log []time.Time, cutoff time.Time) []time.Time {
	i, _ := slices.BinarySearchFunc(log, cutoff, func(g, c time.Time) int { return g.Compare(c) })
	if i == len(log) {
		return log[:0]
	}
	return log[i:]
}

// countSince returns how many grants lie in (now-length, now].
func countSince(log []time.Time, now time.Time, length time.Duration) int {
	cutoff := now.Add(-length)
	i, _ := slices.BinarySearchFunc(log, cutoff, func(g, c time.Time) int {
		if g.After(c) {
			return 1
		}
		return -1
	})
	return len(log) - i
}

// longestWindow returns the largest Length among ws.
func longestWindow(ws []Window) time.Duration {
	var d time.Duration
	for _, w := range ws {
		d = max(d, w.Length)
	}
	return d
}

// removeStamps returns log without n of its grants stamped at, in a new slice
// (log may be shared).
func removeStamps(log []time.Time, at time.Time, n int) []time.Time {
	out := make([]time.Time, 0, len(log))
	for _, g := range log {
		if n > 0 && g.Equal(at) {
			n--
			continue
		}
		out = append(out, g)
	}
	return out
}

// minLimit returns the smallest Limit among ws.
func minLimit(ws []Window) int {
	n := 0
	for i, w := range ws {
		if i == 0 || w.Limit < n {
			n = w.Limit
		}
	}
	return n
}

// usableWindows drops windows that cannot be enforced, so that a bad
// configuration never panics or blocks forever; ValidateWindows is where such
// a configuration is rejected with a reason.
func usableWindows(ws []Window) []Window {
	out := make([]Window, 0, len(ws))
	for _, w := range ws {
		if w.validate() == nil {
			out = append(out, w)
		}
	}
	return out
}
