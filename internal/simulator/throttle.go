package simulator

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Window is one throttle limit: at most Limit admitted calls in any interval of length Per.
type Window struct {
	Limit int
	Per   time.Duration
}

// String formats w in the syntax ParseWindows accepts.
func (w Window) String() string { return strconv.Itoa(w.Limit) + "/" + formatDuration(w.Per) }

// ParseWindows parses a comma-separated list of limits such as "100/1m,1500/1h" (a count, a slash and a Go
// duration). It reports every malformed item at once.
func ParseWindows(spec string) ([]Window, error) {
	var out []Window
	var problems []error
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		n, d, ok := strings.Cut(item, "/")
		if !ok {
			problems = append(problems, fmt.Errorf("window %q: want <count>/<duration>, like 100/1m", item))
			continue
		}
		limit, err := strconv.Atoi(strings.TrimSpace(n))
		if err != nil || limit <= 0 {
			problems = append(problems, fmt.Errorf("window %q: count must be a positive integer", item))
			continue
		}
		per, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil || per <= 0 {
			problems = append(problems, fmt.Errorf("window %q: duration must be positive, like 1m or 15s", item))
			continue
		}
		out = append(out, Window{Limit: limit, Per: per})
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no window in %q", spec)
	}
	return out, nil
}

// MaxInWindow returns the largest number of times that fall into any half-open interval (t-d, t] of
// length d: the figure that a quota of N per d must keep at or below N. ts must be sorted.
func MaxInWindow(ts []time.Time, d time.Duration) int {
	best, lo := 0, 0
	for hi := range ts {
		for ts[lo].Add(d).Compare(ts[hi]) <= 0 {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// historyCap bounds the admitted-call history kept for Admitted.
const historyCap = 1 << 16

// slidingLog is an exact sliding-window log of admitted calls for one (tenant, endpoint), plus the
// Retry-After deadline currently in force.
type slidingLog struct {
	times      []time.Time // admitted arrivals within the longest window, sorted
	history    []time.Time // admitted arrivals, newest historyCap
	retryUntil time.Time
}

// verdict is the throttle's decision for one call.
type verdict struct {
	admitted    bool
	retryAfter  time.Duration // whole seconds, >= 1s, when not admitted
	duringRetry bool          // the call came while a Retry-After was in force
}

// admit decides one call at now. A call is admitted when every window holds fewer than its limit; only
// admitted calls enter the log. A refused call sets a Retry-After deadline at the moment the window frees,
// rounded up to whole seconds as the header is; calls before that deadline are refused without
// extending it.
func (l *slidingLog) admit(now time.Time, ws []Window) verdict {
	if now.Before(l.retryUntil) {
		return verdict{retryAfter: ceilSeconds(l.retryUntil.Sub(now)), duringRetry: true}
	}
	var longest time.Duration
	for _, w := range ws {
		longest = max(longest, w.Per)
	}
	l.prune(now.Add(-longest))
	var wait time.Duration
	for _, w := range ws {
		cutoff := now.Add(-w.Per)
		first := sort.Search(len(l.times), func(i int) bool { return l.times[i].After(cutoff) })
		if n := len(l.times) - first; n >= w.Limit {
			// The window frees when enough of its oldest calls age out to leave Limit-1.
			frees := l.times[first+n-w.Limit].Add(w.Per)
			wait = max(wait, frees.Sub(now))
		}
	}
	if wait > 0 {
		ra := ceilSeconds(wait)
		l.retryUntil = now.Add(ra)
		return verdict{retryAfter: ra}
	}
	l.record(now)
	return verdict{admitted: true}
}

// storm imposes a Retry-After of d from now regardless of the windows.
func (l *slidingLog) storm(now time.Time, d time.Duration) verdict {
	ra := ceilSeconds(d)
	l.retryUntil = now.Add(ra)
	return verdict{retryAfter: ra}
}

func (l *slidingLog) record(now time.Time) {
	// Keep the log sorted even when times arrive out of order (concurrent requests read the clock first).
	i := sort.Search(len(l.times), func(i int) bool { return l.times[i].After(now) })
	l.times = slices.Insert(l.times, i, now)
	j := sort.Search(len(l.history), func(i int) bool { return l.history[i].After(now) })
	l.history = slices.Insert(l.history, j, now)
	if len(l.history) > historyCap {
		l.history = slices.Delete(l.history, 0, len(l.history)-historyCap)
	}
}

// prune drops calls at or before cutoff, which no window can see any more.
func (l *slidingLog) prune(cutoff time.Time) {
	k := sort.Search(len(l.times), func(i int) bool { return l.times[i].After(cutoff) })
	if k > 0 {
		l.times = slices.Delete(l.times, 0, k)
	}
}

// ceilSeconds rounds d up to whole seconds, at least one, as Retry-After is expressed.
func ceilSeconds(d time.Duration) time.Duration {
	s := (d + time.Second - 1) / time.Second
	return max(s, 1) * time.Second
}

// formatDuration prints d compactly ("1m", "1h", "15s", "250ms").
func formatDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	case d%time.Second == 0:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
	return d.String()
}
