package quota

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Option configures a Local or a Shared limiter.
type Option func(*options)

type options struct {
	clock      Clock
	registerer prometheus.Registerer
	logger     zerolog.Logger
	margin     time.Duration
	// noLeaseAhead, for tests of single grants, turns off Shared's grants for callers not yet queued.
	noLeaseAhead bool
	// minBatchLimit, for tests of batching at small windows, replaces minBatchLimit (0: the constant).
	minBatchLimit int
	// onGrant, for tests, sees every grant with the exact time recorded.
	onGrant func(key Key, at time.Time)
	// onUse, for tests, sees every grant Shared.Wait hands to a caller, at the instant it does.
	onUse func(key Key, at time.Time)
}

func buildOptions(opts []Option) options {
	o := options{clock: RealClock{}, logger: zerolog.Nop()}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.margin < 0 {
		o.margin = 0
	}
	return o
}

// WithClock replaces the system clock, for tests.
func WithClock(c Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithRegisterer registers the limiter's metrics (namespace "lr", subsystem
// "quota"). Without it no metric is registered anywhere.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.registerer = r }
}

// WithLogger sets the logger for pauses and degraded-mode changes.
func WithLogger(l zerolog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithMargin widens every window by d (LR_QUOTA_SKEW_MARGIN; it is the one
// margin setting of Local and Shared). A call granted at t reaches the server
// somewhat later, after a variable network and TLS delay; a server that counts
// arrival times could then see two calls that were granted w apart arrive less
// than w apart, and answer the N+1th with a 429. With a margin at least as large
// as the spread of that delay (say 1-2 s for a 1-minute window), grants are at
// least w+d apart per N, so arrivals stay at least w apart. The cost is a little
// throughput: N calls per w+d instead of per w. For Shared it also absorbs the
// offset between the replicas' clocks (grants are stamped with the granting
// replica's wall clock), and bounds how long a leased grant may wait for its
// call (see Shared).
func WithMargin(d time.Duration) Option {
	return func(o *options) { o.margin = d }
}
