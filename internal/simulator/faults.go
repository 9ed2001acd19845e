package simulator

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Fault names, as used in ParseFaults' syntax and as keys of Stats.FaultsInjected.
const (
	FaultServerError = "5xx"
	FaultReset       = "reset"
	FaultTimeout     = "timeout"
	FaultSlowDrip    = "slowdrip"
	FaultExpire      = "expire"
	FaultToken       = "token"
	FaultStorm       = "storm"
)

// Defaults of the fault parameters, used when the corresponding field is zero.
const (
	DefaultServerErrorBurst = 3
	DefaultStormRetryAfter  = 2 * time.Second
	DefaultSlowDripDelay    = 200 * time.Millisecond
	DefaultSlowDripChunk    = 512
)

// Faults are the probabilities of injected failures, each rolled per eligible call, and their parameters.
// The zero value injects nothing.
//
// Which calls are eligible: 5xx, reset and timeout hit the machine-action, link and blob endpoints (a blob
// reset happens after part of the body was sent); storm hits the two API endpoints; expire hits link
// issuance; slowdrip hits blob downloads; token hits the token endpoint.
type Faults struct {
	// ServerError is the probability that a call starts a burst of ServerErrorBurst 500 answers (the
	// call itself and the next ones, whatever endpoint they go to).
	ServerError      float64
	ServerErrorBurst int
	// Reset is the probability that the connection is closed abruptly (TCP RST) instead of answered.
	Reset float64
	// Timeout is the probability that a call hangs: until the client gives up, the server stops, or
	// TimeoutAfter passes (then it answers 504, or 500 OperationTimedOut for a blob). Zero TimeoutAfter
	// means no limit.
	Timeout      float64
	TimeoutAfter time.Duration
	// SlowDrip is the probability that a blob download trickles: SlowDripChunk bytes every SlowDripDelay.
	SlowDrip      float64
	SlowDripDelay time.Duration
	SlowDripChunk int
	// Expire is the probability that a link is issued with se = now + ExpireTTL instead of now + LinkTTL;
	// the default 0 gives a link that is already expired, a negative TTL one that expired long ago.
	Expire    float64
	ExpireTTL time.Duration
	// Token is the probability that the token endpoint answers 500 or 503.
	Token float64
	// Storm is the probability that an API call starts a 429 storm: this call and every call to the same
	// tenant and endpoint for StormRetryAfter get 429, whatever the remaining budget.
	Storm           float64
	StormRetryAfter time.Duration
}

// withDefaults fills the parameters left at zero.
func (f Faults) withDefaults() Faults {
	if f.ServerErrorBurst == 0 {
		f.ServerErrorBurst = DefaultServerErrorBurst
	}
	if f.StormRetryAfter == 0 {
		f.StormRetryAfter = DefaultStormRetryAfter
	}
	if f.SlowDripDelay == 0 {
		f.SlowDripDelay = DefaultSlowDripDelay
	}
	if f.SlowDripChunk == 0 {
		f.SlowDripChunk = DefaultSlowDripChunk
	}
	return f
}

// probabilities lists the probability fields by name, in the order they are printed.
func (f *Faults) probabilities() []struct {
	name string
	p    *float64
} {
	return []struct {
		name string
		p    *float64
	}{
		{FaultServerError, &f.ServerError}, {FaultReset, &f.Reset}, {FaultTimeout, &f.Timeout},
		{FaultSlowDrip, &f.SlowDrip}, {FaultExpire, &f.Expire}, {FaultToken, &f.Token}, {FaultStorm, &f.Storm},
	}
}

// durations lists the duration fields by name and whether they may be negative.
func (f *Faults) durations() []struct {
	name     string
	d        *time.Duration
	negative bool
} {
	return []struct {
		name     string
		d        *time.Duration
		negative bool
	}{
		{"timeout_after", &f.TimeoutAfter, false}, {"slowdrip_delay", &f.SlowDripDelay, false},
		{"expire_ttl", &f.ExpireTTL, true}, {"storm_retry_after", &f.StormRetryAfter, false},
	}
}

// counts lists the integer fields by name.
func (f *Faults) counts() []struct {
	name string
	n    *int
} {
	return []struct {
		name string
		n    *int
	}{{"5xx_burst", &f.ServerErrorBurst}, {"slowdrip_chunk", &f.SlowDripChunk}}
}

// Validate reports every out-of-range field at once.
func (f Faults) Validate() error {
	var problems []error
	for _, p := range f.probabilities() {
		if math.IsNaN(*p.p) || *p.p < 0 || *p.p > 1 {
			problems = append(problems, fmt.Errorf("%s=%v: probability must be between 0 and 1", p.name, *p.p))
		}
	}
	for _, d := range f.durations() {
		if *d.d < 0 && !d.negative {
			problems = append(problems, fmt.Errorf("%s=%s: duration must not be negative", d.name, *d.d))
		}
	}
	for _, c := range f.counts() {
		if *c.n < 0 {
			problems = append(problems, fmt.Errorf("%s=%d: must not be negative", c.name, *c.n))
		}
	}
	return errors.Join(problems...)
}

// ParseFaults parses the LR_SIM_FAULTS syntax: comma-separated name=value pairs, where the fault names
// (5xx, reset, timeout, slowdrip, expire, token, storm) take a probability between 0 and 1, and the
// parameters take a Go duration (timeout_after, slowdrip_delay, expire_ttl, storm_retry_after) or a count
// (5xx_burst, slowdrip_chunk). An empty string means no faults. Every problem is reported at once.
func ParseFaults(s string) (Faults, error) {
	var f Faults
	var problems []error
	seen := map[string]bool{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, value, ok := strings.Cut(item, "=")
		name, value = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value)
		if !ok {
			problems = append(problems, fmt.Errorf("%q: want name=value", item))
			continue
		}
		if seen[name] {
			problems = append(problems, fmt.Errorf("%s is given twice", name))
			continue
		}
		seen[name] = true
		if err := f.set(name, value); err != nil {
			problems = append(problems, err)
		}
	}
	if err := errors.Join(append(problems, f.Validate())...); err != nil {
		return Faults{}, err
	}
	return f, nil
}

func (f *Faults) set(name, value string) error {
	for _, p := range f.probabilities() {
		if p.name == name {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				return fmt.Errorf("%s=%s: not a probability: %w", name, value, err)
			}
			*p.p = v
			return nil
		}
	}
	for _, d := range f.durations() {
		if d.name == name {
			v, err := time.ParseDuration(value)
			if err != nil {
				return fmt.Errorf("%s=%s: not a duration: %w", name, value, err)
			}
			*d.d = v
			return nil
		}
	}
	for _, c := range f.counts() {
		if c.name == name {
			v, err := strconv.Atoi(value)
			if err != nil {
				return fmt.Errorf("%s=%s: not a count: %w", name, value, err)
			}
			*c.n = v
			return nil
		}
	}
	return fmt.Errorf("unknown fault %q (known: %s)", name, strings.Join(faultKeys(), ", "))
}

func faultKeys() []string {
	var f Faults
	var keys []string
	for _, p := range f.probabilities() {
		keys = append(keys, p.name)
	}
	for _, d := range f.durations() {
		keys = append(keys, d.name)
	}
	for _, c := range f.counts() {
		keys = append(keys, c.name)
	}
	return keys
}

// String formats f in ParseFaults' syntax, leaving out zero fields, so that ParseFaults(f.String()) == f.
func (f Faults) String() string {
	var parts []string
	for _, p := range f.probabilities() {
		if *p.p != 0 {
			parts = append(parts, p.name+"="+strconv.FormatFloat(*p.p, 'g', -1, 64))
		}
	}
	for _, c := range f.counts() {
		if *c.n != 0 {
			parts = append(parts, c.name+"="+strconv.Itoa(*c.n))
		}
	}
	for _, d := range f.durations() {
		if *d.d != 0 {
			parts = append(parts, d.name+"="+d.d.String())
		}
	}
	return strings.Join(parts, ",")
}
