package quota

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Window is one throttle rule: at most Limit calls in any interval of length
// Length.
type Window struct {
	// Limit is the most calls allowed in any interval of Length; it must be > 0.
	Limit int
	// Length is the span of the sliding window; it must be > 0.
	Length time.Duration
}

// ErrInvalidWindow is wrapped by every error that ParseWindows and
// ValidateWindows return, so that callers can tell a configuration mistake
// from other failures.
var ErrInvalidWindow = errors.New("invalid quota window")

// String formats w as ParseWindows reads it, for example "100/1m" or "10/500ms".
func (w Window) String() string {
	return strconv.Itoa(w.Limit) + "/" + formatDuration(w.Length)
}

// formatDuration writes d in the largest whole unit so that "1m" does not come
// back as "1m0s"; odd values fall back to time.Duration.String, which
// time.ParseDuration reads too.
func formatDuration(d time.Duration) string {
	units := []struct {
		unit time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}}
	for _, u := range units {
		if d > 0 && d%u.unit == 0 {
			return strconv.FormatInt(int64(d/u.unit), 10) + u.name
		}
	}
	return d.String()
}

// ParseWindows reads a comma-separated list of "LIMIT/DURATION" rules such as
// "100/1m,1500/1h" or "10/500ms"; DURATION uses time.ParseDuration syntax.
// Every problem is reported at once, each naming the offending item.
func ParseWindows(s string) ([]Window, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: empty list, want e.g. \"100/1m,1500/1h\"", ErrInvalidWindow)
	}
	var (
		out  []Window
		errs []error
	)
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		w, err := parseWindow(item)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: item %d %q: %w", ErrInvalidWindow, i+1, item, err))
			continue
		}
		out = append(out, w)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func parseWindow(item string) (Window, error) {
	limitText, lengthText, ok := strings.Cut(item, "/")
	if !ok {
		return Window{}, errors.New("want LIMIT/DURATION, e.g. 100/1m")
	}
	limit, err := strconv.Atoi(strings.TrimSpace(limitText))
	if err != nil {
		return Window{}, fmt.Errorf("limit %q is not an integer", limitText)
	}
	length, err := time.ParseDuration(strings.TrimSpace(lengthText))
	if err != nil {
		return Window{}, fmt.Errorf("duration %q: want a Go duration such as 1m, 1h, 500ms", lengthText)
	}
	w := Window{Limit: limit, Length: length}
	return w, w.validate()
}

func (w Window) validate() error {
	var errs []error
	if w.Limit <= 0 {
		errs = append(errs, fmt.Errorf("limit %d must be greater than 0", w.Limit))
	}
	if w.Length <= 0 {
		errs = append(errs, fmt.Errorf("duration %s must be greater than 0", w.Length))
	}
	return errors.Join(errs...)
}

// ValidateWindows reports every window that cannot be enforced (a Limit or
// Length that is not positive) and an empty list.
func ValidateWindows(ws []Window) error {
	if len(ws) == 0 {
		return fmt.Errorf("%w: no windows", ErrInvalidWindow)
	}
	var errs []error
	for i, w := range ws {
		if err := w.validate(); err != nil {
			errs = append(errs, fmt.Errorf("%w: window %d: %w", ErrInvalidWindow, i+1, err))
		}
	}
	return errors.Join(errs...)
}

// FormatWindows is the inverse of ParseWindows.
func FormatWindows(ws []Window) string {
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = w.String()
	}
	return strings.Join(parts, ",")
}
