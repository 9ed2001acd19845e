package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/lr-relay/lr-relay/internal/quota"
	"github.com/lr-relay/lr-relay/internal/tenant"
)

// microsoftLimits are the published limits of both endpoints lr-relay calls, per application and tenant:
// 100 calls per minute and 1500 per hour.
func microsoftLimits() []struct {
	quota.Window
	per string
} {
	return []struct {
		quota.Window
		per string
	}{{quota.Window{Limit: 100, Length: time.Minute}, "a minute"}, {quota.Window{Limit: 1500, Length: time.Hour}, "an hour"}}
}

// validateRateLimits parses LR_RATE_LIMITS and LR_ACTION_RATE_LIMITS (the tenants file's own limits are
// checked with the file), so that a typo stops the start before NATS is dialled.
func (c Config) validateRateLimits() []error {
	var errs []error
	for _, v := range []struct{ name, value string }{
		{"LR_RATE_LIMITS", c.RateLimits}, {"LR_ACTION_RATE_LIMITS", c.ActionRateLimits},
	} {
		if _, err := quota.ParseWindows(v.value); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %s", v.name, v.value, oneLine(err)))
		}
	}
	return errs
}

// Warnings returns what is allowed but probably wrong, one sentence each: call budgets that let more calls
// through than Microsoft's published limits (the API would answer 429, and with several replicas that
// costs every replica a pause). main logs them at start; they never stop it.
func (c Config) Warnings() []string {
	var out []string
	for _, v := range []struct{ name, value string }{
		{"LR_RATE_LIMITS", c.RateLimits}, {"LR_ACTION_RATE_LIMITS", c.ActionRateLimits},
	} {
		if w := aboveMicrosoft(v.value); w != "" {
			out = append(out, v.name+"="+v.value+" "+w)
		}
	}
	if c.TenantsFile != "" {
		specs, _ := tenant.Load(c.TenantsFile)
		for _, s := range specs {
			for _, v := range []struct{ field, value string }{
				{"rateLimits", s.RateLimits}, {"actionRateLimits", s.ActionRateLimits},
			} {
				if w := aboveMicrosoft(v.value); v.value != "" && w != "" {
					out = append(out, fmt.Sprintf("LR_TENANTS_FILE %s: tenant %q: %s %s %s", c.TenantsFile, s.Name, v.field, v.value, w))
				}
			}
		}
	}
	return out
}

// aboveMicrosoft describes how the windows in spec exceed Microsoft's published limits, or returns "" when
// they do not (or do not parse: that is an error reported elsewhere).
//
// A sliding window of n calls per L lets at most n·⌈T/L⌉ calls into any interval of length T (cover the
// interval with ⌈T/L⌉ windows), and a set of windows lets in the least of its members' bounds. Comparing that
// with Microsoft's limit for T = 1 minute and T = 1 hour is exact for the usual specs ("100/1m,1500/1h",
// scaled-down test windows) and errs towards warning for unusual mixes.
func aboveMicrosoft(spec string) string {
	ws, err := quota.ParseWindows(spec)
	if err != nil {
		return ""
	}
	var over []string
	for _, m := range microsoftLimits() {
		allowed := -1
		for _, w := range ws {
			n := w.Limit * int((m.Length+w.Length-1)/w.Length)
			if allowed < 0 || n < allowed {
				allowed = n
			}
		}
		if allowed > m.Limit {
			over = append(over, fmt.Sprintf("up to %d calls in %s (Microsoft allows %d)", allowed, m.per, m.Limit))
		}
	}
	if len(over) == 0 {
		return ""
	}
	return "allows " + strings.Join(over, " and ") + ": above Microsoft's published limits, expect 429s"
}

// oneLine joins the lines of a joined error with "; ", for a message that names its variable once.
// The "invalid quota window" every item repeats is dropped: the variable's name says as much.
func oneLine(err error) string {
	var msgs []string
	for _, e := range errorsOf(err) {
		msgs = append(msgs, strings.TrimPrefix(e.Error(), quota.ErrInvalidWindow.Error()+": "))
	}
	return strings.Join(msgs, "; ")
}

// errorsOf returns the errors inside a joined error, or err itself.
func errorsOf(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
