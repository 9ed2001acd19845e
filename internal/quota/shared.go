package quota

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/provision"
)

// DefaultBucket is the KV bucket that Shared uses when SharedConfig.Bucket is
// empty.
const DefaultBucket = "lr-quota"

// SharedConfig configures a Shared limiter. Every replica sharing a budget
// must use the same Bucket and Windows.
type SharedConfig struct {
	// Bucket is the JetStream KV bucket holding one entry per key; empty means
	// DefaultBucket.
	Bucket string
	// Windows are the limits shared by all replicas together.
	Windows []Window
	// Replicas is how many processes share the budget. It only sizes the
	// fallback: while the bucket is unreachable each process allows itself
	// Limit/Replicas per window (at least 1), so that all of them together
	// stay within the limit. 0 means 1.
	Replicas int
	// SkewMargin widens every window to absorb the difference between the
	// replicas' clocks: grants are stamped with the granting replica's wall
	// clock, so two replicas whose clocks differ by s could otherwise grant
	// calls w-s apart. Set it to the worst clock offset expected (NTP keeps
	// hosts within a few milliseconds; 250ms is generous). It costs N calls per
	// w+SkewMargin instead of per w.
	SkewMargin time.Duration
	// Provision creates the bucket (or updates its configuration) at start;
	// without it the bucket must already exist.
	Provision bool
	// ReplicasKV is the number of JetStream replicas of the bucket when
	// Provision is set; 0 means 1.
	ReplicasKV int
	// OpTimeout bounds each KV request; a request that takes longer counts as
	// the store being unreachable. 0 means 2s.
	OpTimeout time.Duration
	// ProbeInterval is how often a degraded limiter tries the store again.
	// 0 means 5s.
	ProbeInterval time.Duration
}

// Validate reports every problem with the configuration at once.
func (c SharedConfig) Validate() error {
	var errs []error
	if err := ValidateWindows(c.Windows); err != nil {
		errs = append(errs, err)
	}
	if c.Bucket != "" && !validBucket(c.Bucket) {
		errs = append(errs, fmt.Errorf("bucket %q: use only letters, digits, '-' and '_'", c.Bucket))
	}
	for name, v := range map[string]int64{
		"replicas": int64(c.Replicas), "KV replicas": int64(c.ReplicasKV), "skew margin": int64(c.SkewMargin),
		"op timeout": int64(c.OpTimeout), "probe interval": int64(c.ProbeInterval),
	} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", name))
		}
	}
	return errors.Join(errs...)
}

func validBucket(b string) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ErrStoreUnreachable wraps the error that made a Shared limiter fall back to
// its local share; it is logged, never returned by Wait.
var ErrStoreUnreachable = errors.New("quota store unreachable")

// Shared is the Wait/Pause contract of Local for many processes sharing one
// budget. Each key is one KV entry holding every replica's grants within the
// longest window and the pause in force; a grant is a compare-and-swap update
// of that entry, so two replicas can never both take the last slot.
//
// A replica that crashes leaks nothing: its grants simply age out of the
// window. While the store cannot be reached, Wait falls back to a local share
// of Limit/Replicas per window that still counts the grants last seen in the
// store, and Degraded reports true; grants made in that mode are written back
// to the store once it answers again.
//
// Within one process waiters for a key are served in arrival order; across
// processes the order is whoever wins the compare-and-swap.
type Shared struct {
	kv        jetstream.KeyValue
	windows   []Window
	share     []Window
	widen     time.Duration
	keep      time.Duration
	opTimeout time.Duration
	probe     time.Duration
	opts      options
	metrics   *metrics
	queue     *fifo

	mu        sync.Mutex
	degraded  bool
	lastProbe time.Time
	fallback  *Local
	seeded    map[string]bool        // keys seeded into this episode's fallback
	lastSeen  map[string]sharedState // the last state read from or written to the store
	unsynced  map[string][]time.Time // fallback grants not yet in the store
	writes    writeTimes             // recent grant write round trips
}

// NewShared binds (or, with cfg.Provision, creates) the bucket and returns a
// limiter. It fails on an invalid configuration or when the bucket cannot be
// reached at start: a replica should not begin work on a store it has never
// seen.
func NewShared(ctx context.Context, js jetstream.JetStream, cfg SharedConfig, opts ...Option) (*Shared, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("quota: shared config: %w", err)
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	replicas := max(cfg.Replicas, 1)
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 2 * time.Second
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = 5 * time.Second
	}
	o := buildOptions(opts)
	longest := longestWindow(cfg.Windows)

	var (
		kv  jetstream.KeyValue
		err error
	)
	kv, err = provision.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "lr-relay shared API quota: grant log per tenant/endpoint",
		History:     1,
		// An idle key's entry holds nothing that still counts after the
		// longest window; keep it a while longer for pauses.
		TTL:      2*longest + cfg.SkewMargin + o.margin + time.Hour,
		Storage:  jetstream.FileStorage,
		Replicas: max(cfg.ReplicasKV, 1),
	}, cfg.Provision)
	if err != nil {
		return nil, fmt.Errorf("quota: bind bucket %q: %w", cfg.Bucket, err)
	}

	share := make([]Window, len(cfg.Windows))
	for i, w := range cfg.Windows {
		share[i] = Window{Limit: max(w.Limit/replicas, 1), Length: w.Length}
	}
	m := newMetrics(o.registerer)
	m.registerDegraded(o.registerer)
	s := &Shared{
		kv:        kv,
		windows:   slices.Clone(cfg.Windows),
		share:     share,
		widen:     cfg.SkewMargin + o.margin,
		keep:      longest + cfg.SkewMargin + o.margin,
		opTimeout: cfg.OpTimeout,
		probe:     cfg.ProbeInterval,
		opts:      o,
		metrics:   m,
		queue:     newFIFO(),
		lastSeen:  make(map[string]sharedState),
		unsynced:  make(map[string][]time.Time),
	}
	if o.registerer != nil {
		registerUtilisation(o.registerer, o.clock, s.utilisation)
	}
	return s, nil
}

// Degraded reports whether the store is unreachable and Wait is using the
// local fallback share.
func (s *Shared) Degraded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.degraded
}

// Wait blocks until one call for key is allowed under every window for all
// replicas together and any pause, records the grant in the store and returns
// nil. It returns ctx.Err() when ctx ends first. Store failures are not
// returned: Wait then grants from the local fallback share.
func (s *Shared) Wait(ctx context.Context, key string) error {
	start := s.opts.clock.Now()
	unlock, err := s.queue.lock(ctx, key)
	if err != nil {
		return err
	}
	defer unlock()
	mayDiscard := true
	for {
		if fb := s.fallbackIfNoProbe(); fb != nil {
			return s.waitFallback(ctx, fb, key, start)
		}
		granted, at, err := s.try(ctx, key, mayDiscard)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errConflict):
			continue // another replica wrote first: read again
		case errors.Is(err, errLate):
			s.markHealthy() // the write went through: the store answers
			s.metrics.observeDiscard(key)
			// The slot stays unused; take the next one, whatever its write
			// takes, so that a store that turned slow for good costs one slot
			// per call until the floor catches up, never the whole budget.
			mayDiscard = false
			continue
		case err != nil:
			fb := s.markDegraded(err)
			return s.waitFallback(ctx, fb, key, start)
		}
		s.markHealthy()
		if granted {
			s.metrics.observeGrant(key, s.opts.clock.Now().Sub(start))
			return nil
		}
		timer := s.opts.clock.NewTimer(at.Sub(s.opts.clock.Now()))
		select {
		case <-timer.C():
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
	}
}

// errConflict means the compare-and-swap lost to another writer.
var errConflict = errors.New("quota: concurrent update")

// errLate means the grant was recorded, but so long after its stamp that the
// call must not be made (see try).
var errLate = errors.New("quota: grant recorded too late to use")

// try reads key's entry, and if a call is allowed now appends it with a
// compare-and-swap. It returns granted=false and the instant to look again
// when the windows or a pause forbid a call now, and errLate (when mayDiscard)
// for a grant whose write took too long to be used.
func (s *Shared) try(ctx context.Context, key string, mayDiscard bool) (granted bool, at time.Time, err error) {
	k := kvKey(key)
	opCtx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()

	var (
		st  sharedState
		rev uint64
	)
	entry, err := s.kv.Get(opCtx, k)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return false, time.Time{}, fmt.Errorf("%w: get %s: %w", ErrStoreUnreachable, k, err)
	default:
		rev = entry.Revision()
		if st, err = decodeState(entry.Value()); err != nil {
			// Only a foreign writer produces this; start the key afresh
			// rather than blocking it for good.
			s.opts.logger.Error().Err(err).Str("key", key).Msg("quota: ignoring unreadable shared state")
			st = sharedState{}
		}
	}

	now := s.opts.clock.Now()
	s.mu.Lock()
	pending := slices.Clone(s.unsynced[key])
	s.mu.Unlock()
	st.log = pruneBefore(mergeTimes(st.log, pending), now.Add(-s.keep))
	s.remember(key, st)

	at = nextAllowed(st.log, s.windows, s.widen, st.pausedUntil, now)
	if at.After(now) {
		return false, at, nil
	}
	// Keep the log ascending even when another replica's clock is ahead of
	// ours: stamping our grant no earlier than the last one only makes later
	// checks more careful.
	stamp := now
	if n := len(st.log); n > 0 && st.log[n-1].After(stamp) {
		stamp = st.log[n-1]
	}
	st.log = append(slices.Clone(st.log), stamp)
	if rev == 0 {
		_, err = s.kv.Create(opCtx, k, st.encode())
	} else {
		_, err = s.kv.Update(opCtx, k, st.encode(), rev)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
		return false, time.Time{}, errConflict
	case err != nil:
		return false, time.Time{}, fmt.Errorf("%w: update %s: %w", ErrStoreUnreachable, k, err)
	}
	s.mu.Lock()
	s.lastSeen[key] = st
	s.unsynced[key] = slices.DeleteFunc(s.unsynced[key], func(g time.Time) bool {
		return slices.ContainsFunc(pending, g.Equal)
	})
	if len(s.unsynced[key]) == 0 {
		delete(s.unsynced, key)
	}
	s.mu.Unlock()
	if s.opts.onGrant != nil {
		s.opts.onGrant(key, stamp)
	}
	// The windows are kept on the stamps, but the server counts arrivals, and
	// the call leaves only now, after the write's round trip. The margin absorbs
	// the spread of the delay between stamp and arrival: a write that took half
	// the margin longer than the fastest recent ones (a stall of the store or
	// of this process) would eat into what the network needs, and a call i
	// arriving that much late lets call i+Limit arrive less than a window after
	// it: a 429, which pauses the whole tenant. Leaving this one slot unused
	// costs one call instead, and the log, which still holds the stamp, only
	// errs on the careful side. A store that is slow but steady spreads
	// nothing and loses nothing.
	took := s.opts.clock.Now().Sub(now)
	if floor := s.writes.add(took); mayDiscard && s.widen > 0 && took-floor > s.widen/2 {
		return false, time.Time{}, errLate
	}
	return true, time.Time{}, nil
}

func (s *Shared) remember(key string, st sharedState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(st.log) == 0 && !st.pausedUntil.After(s.opts.clock.Now()) {
		delete(s.lastSeen, key) // nothing left to count: forget idle keys
		return
	}
	s.lastSeen[key] = sharedState{pausedUntil: st.pausedUntil, log: slices.Clone(st.log)}
}

// fallbackIfNoProbe returns the fallback limiter while degraded, unless it is
// time to try the store again (then nil, and the caller tries it).
func (s *Shared) fallbackIfNoProbe() *Local {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.degraded {
		return nil
	}
	now := s.opts.clock.Now()
	if now.Sub(s.lastProbe) >= s.probe {
		s.lastProbe = now
		return nil
	}
	return s.fallback
}

// markDegraded switches to the local share (once per outage) and returns the
// fallback limiter.
func (s *Shared) markDegraded(cause error) *Local {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastProbe = s.opts.clock.Now()
	if s.degraded {
		return s.fallback
	}
	s.degraded = true
	o := s.opts
	o.registerer = nil
	o.margin = s.widen
	s.fallback = newLocal(s.share, o, newMetrics(nil), false)
	s.seeded = make(map[string]bool)
	s.metrics.degraded.Set(1)
	s.opts.logger.Warn().Err(cause).Str("share", FormatWindows(s.share)).
		Msg("quota: shared store unreachable, granting from the local fallback share")
	return s.fallback
}

func (s *Shared) markHealthy() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.degraded {
		return
	}
	s.degraded = false
	s.fallback = nil
	s.seeded = nil
	s.metrics.degraded.Set(0)
	s.opts.logger.Info().Msg("quota: shared store reachable again")
}

// waitFallback grants from the local share, counting the grants last seen in
// the store for key, and remembers the grant for the store.
func (s *Shared) waitFallback(ctx context.Context, fb *Local, key string, start time.Time) error {
	s.mu.Lock()
	if !s.seeded[key] && s.seeded != nil && s.fallback == fb {
		s.seeded[key] = true
		last := s.lastSeen[key]
		fb.seed(key, mergeTimes(slices.Clone(last.log), s.unsynced[key]), last.pausedUntil)
	}
	s.mu.Unlock()
	at, err := fb.wait(ctx, key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	// Pruning keeps the memory of this key bounded through a long outage.
	s.unsynced[key] = pruneBefore(append(s.unsynced[key], at), at.Add(-s.keep))
	s.mu.Unlock()
	s.metrics.observeGrant(key, s.opts.clock.Now().Sub(start))
	return nil
}

// Pause stops every grant for key, in every replica, until until: it is
// written to the store (so every replica honours it at its next look) and to
// this process's fallback. A store failure is logged and the pause still
// applies here. A pause never shortens one already in force.
func (s *Shared) Pause(key string, until time.Time) {
	s.metrics.observePause(key)
	s.opts.logger.Info().Str("key", key).Time("until", until).Msg("quota: paused")
	s.mu.Lock()
	last := s.lastSeen[key]
	if until.After(last.pausedUntil) {
		last.pausedUntil = until
		s.lastSeen[key] = last
	}
	fb := s.fallback
	s.mu.Unlock()
	if fb != nil {
		fb.Pause(key, until)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opTimeout)
	defer cancel()
	if err := s.storePause(ctx, key, until); err != nil {
		s.opts.logger.Warn().Err(err).Str("key", key).Msg("quota: pause not shared, applied locally only")
	}
}

func (s *Shared) storePause(ctx context.Context, key string, until time.Time) error {
	k := kvKey(key)
	for {
		var (
			st  sharedState
			rev uint64
		)
		entry, err := s.kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("%w: get %s: %w", ErrStoreUnreachable, k, err)
		default:
			rev = entry.Revision()
			if st, err = decodeState(entry.Value()); err != nil {
				st = sharedState{}
			}
		}
		if !until.After(st.pausedUntil) {
			return nil
		}
		st.pausedUntil = until
		if rev == 0 {
			_, err = s.kv.Create(ctx, k, st.encode())
		} else {
			_, err = s.kv.Update(ctx, k, st.encode(), rev)
		}
		switch {
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
			continue
		case err != nil:
			return fmt.Errorf("%w: update %s: %w", ErrStoreUnreachable, k, err)
		}
		return nil
	}
}

// PausedUntil returns the end of the pause last seen for key, or the zero
// time.
func (s *Shared) PausedUntil(key string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.lastSeen[key].pausedUntil; p.After(s.opts.clock.Now()) {
		return p
	}
	return time.Time{}
}

// utilisation reports the share of each window used, as last seen in the
// store (all replicas together).
func (s *Shared) utilisation(now time.Time) []utilisation {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []utilisation
	for k, st := range s.lastSeen {
		log := mergeTimes(st.log, s.unsynced[k])
		for _, w := range s.windows {
			n := countSince(log, now, w.Length+s.widen)
			out = append(out, utilisation{key: k, window: w, ratio: float64(n) / float64(w.Limit)})
		}
	}
	return out
}

// writeTimes keeps the last few grant write round trips, whose minimum is the
// floor against which a slow write is judged.
type writeTimes struct {
	mu   sync.Mutex
	ring [8]time.Duration
	n    int
}

// add records d and returns the smallest of the recorded round trips before
// it (0 when there are none).
func (w *writeTimes) add(d time.Duration) (floor time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := min(w.n, len(w.ring))
	for i := range seen {
		if i == 0 || w.ring[i] < floor {
			floor = w.ring[i]
		}
	}
	w.ring[w.n%len(w.ring)] = max(d, 0)
	w.n++
	return floor
}
