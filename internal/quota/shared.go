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

// SharedConfig configures a Shared limiter. Every field is required (the
// defaults live in lr-relay's configuration); every replica sharing a budget
// must use the same Bucket, Windows and margin (WithMargin).
type SharedConfig struct {
	// Bucket is the JetStream KV bucket holding one entry per key.
	Bucket string
	// Windows are the limits shared by all replicas together.
	Windows []Window
	// Processes is how many processes share the budget (LR_QUOTA_REPLICAS). It
	// only sizes the fallback: while the bucket is unreachable each process
	// allows itself Limit/Processes per window (at least 1), so that all of
	// them together stay within the limit.
	Processes int
	// Provision creates the bucket (or updates its configuration) at start;
	// without it the bucket must already exist.
	Provision bool
	// BucketReplicas is the number of JetStream replicas of the bucket when
	// Provision is set (LR_STREAM_REPLICAS).
	BucketReplicas int
	// OpTimeout bounds each KV request; a request that takes longer counts as
	// the store being unreachable.
	OpTimeout time.Duration
	// ProbeInterval is how often a degraded limiter tries the store again.
	ProbeInterval time.Duration
}

// Validate reports every problem with the configuration at once.
func (c SharedConfig) Validate() error {
	var errs []error
	if err := ValidateWindows(c.Windows); err != nil {
		errs = append(errs, err)
	}
	if c.Bucket == "" || !validBucket(c.Bucket) {
		errs = append(errs, fmt.Errorf("bucket %q: want letters, digits, '-' and '_'", c.Bucket))
	}
	if c.Processes < 1 {
		errs = append(errs, fmt.Errorf("processes must be at least 1, got %d", c.Processes))
	}
	if c.Provision && c.BucketReplicas < 1 {
		errs = append(errs, fmt.Errorf("bucket replicas must be at least 1, got %d", c.BucketReplicas))
	}
	if c.OpTimeout <= 0 {
		errs = append(errs, fmt.Errorf("op timeout must be positive, got %s", c.OpTimeout))
	}
	if c.ProbeInterval <= 0 {
		errs = append(errs, fmt.Errorf("probe interval must be positive, got %s", c.ProbeInterval))
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
// Round trips: the limiter keeps the entry it last read or wrote (with its
// revision) and writes on top of it directly; only a lost compare-and-swap
// costs a read. While every window has ample room, one write takes a few
// grants at once (for the callers queued in this process and the next ones to
// come): the grants beyond the first are a lease, used without a round trip
// until the lease ends, and dropped (never used late) after. A batch is
// checked against the windows at the instant it is taken, and recorded at the
// instant its lease ends, the latest at which any of its calls may leave (see
// try), so no window can see more calls than the log allows.
//
// A replica that crashes leaks nothing: its grants simply age out of the
// window. While the store cannot be reached, Wait falls back to a local share
// of Limit/Processes per window that still counts the grants last seen in the
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
	minLimit  int // the smallest window's limit

	mu        sync.Mutex
	degraded  bool
	lastProbe time.Time
	fallback  *Local
	seeded    map[Key]bool // keys seeded into this episode's fallback
	keys      map[Key]*sharedKey
	lastSweep time.Time
	writes    writeTimes // recent grant write round trips
}

// sharedKey is what a Shared limiter knows of one key; guarded by Shared.mu.
type sharedKey struct {
	seen       sharedState // the last state read from or written to the store
	rev        uint64      // its revision; 0 when it must be read first
	unsynced   []time.Time // fallback grants not yet in the store
	leased     int         // grants recorded in the store and not yet used
	leaseStamp time.Time   // their stamp
	leaseEnd   time.Time   // after this they are not used, and the next write removes them
}

// NewShared binds (or, with cfg.Provision, creates) the bucket and returns a
// limiter. It fails on an invalid configuration or when the bucket cannot be
// reached at start: a replica should not begin work on a store it has never
// seen.
func NewShared(ctx context.Context, js jetstream.JetStream, cfg SharedConfig, opts ...Option) (*Shared, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("quota: shared config: %w", err)
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
		TTL:      2*longest + o.margin + time.Hour,
		Storage:  jetstream.FileStorage,
		Replicas: cfg.BucketReplicas,
	}, cfg.Provision)
	if err != nil {
		return nil, fmt.Errorf("quota: bind bucket %q: %w", cfg.Bucket, err)
	}

	share := make([]Window, len(cfg.Windows))
	for i, w := range cfg.Windows {
		share[i] = Window{Limit: max(w.Limit/cfg.Processes, 1), Length: w.Length}
	}
	m := newMetrics(o.registerer)
	m.registerDegraded(o.registerer)
	s := &Shared{
		kv:        kv,
		windows:   slices.Clone(cfg.Windows),
		share:     share,
		widen:     o.margin,
		keep:      longest + o.margin,
		opTimeout: cfg.OpTimeout,
		probe:     cfg.ProbeInterval,
		opts:      o,
		metrics:   m,
		queue:     newFIFO(),
		minLimit:  minLimit(cfg.Windows),
		keys:      make(map[Key]*sharedKey),
	}
	if o.registerer != nil {
		registerUtilisation(o.registerer, o.clock, s.utilisation)
	}
	s.watch(ctx)
	return s, nil
}

// watch follows every write to the bucket until ctx ends, so that the state kept per key (NextFree's estimate
// and the state written on top of) includes the other replicas' grants without a read. One watch per limiter,
// nothing per key. Without it (the watch could not start) the limiter only reads less up to date.
func (s *Shared) watch(ctx context.Context) {
	w, err := s.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		s.opts.logger.Warn().Err(err).Msg("quota: not following the shared bucket; estimates see other replicas' grants later")
		return
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				key, ok := parseKVKey(e.Key())
				if !ok {
					continue
				}
				st, err := decodeState(e.Value())
				if err != nil {
					continue
				}
				s.observe(key, st, e.Revision())
			}
		}
	}()
}

// observe keeps a state seen in the bucket if it is newer than the one kept.
func (s *Shared) observe(key Key, st sharedState, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keyLocked(key)
	if rev <= ks.rev {
		return
	}
	st.log = pruneBefore(st.log, s.opts.clock.Now().Add(-s.keep))
	ks.seen, ks.rev = st, rev
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
func (s *Shared) Wait(ctx context.Context, key Key) error {
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
		if s.takeLease(key) {
			s.used(key, start)
			return nil
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
			s.used(key, start)
			return nil
		}
		if now := s.opts.clock.Now(); tooLong(ctx, now, at) {
			return &BusyError{Key: key, Until: at}
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

// used records a grant handed to a caller of Wait that started at start.
func (s *Shared) used(key Key, start time.Time) {
	now := s.opts.clock.Now()
	if s.opts.onUse != nil {
		s.opts.onUse(key, now)
	}
	s.metrics.observeGrant(key, now.Sub(start))
}

// NextFree estimates, without blocking and without a round trip, when n more
// calls for key could be granted, from the state last seen in the store: the
// zero time when they could be now. The caller counts the calls it has
// already let start; grants by other replicas since the last look are not
// seen, so the estimate may be early. The real Wait still enforces the windows.
// An idle key costs nothing: no timer, no polling.
func (s *Shared) NextFree(key Key, n int) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks, ok := s.keys[key]
	if !ok {
		return time.Time{}
	}
	now := s.opts.clock.Now()
	m := n
	if ks.leased > 0 && !now.After(ks.leaseEnd) {
		m -= ks.leased
	}
	log := ks.seen.log
	if len(ks.unsynced) > 0 {
		log = mergeTimes(log, ks.unsynced)
	}
	at := estimateFree(log, s.windows, s.widen, ks.seen.pausedUntil, now, m)
	if !at.After(now) {
		return time.Time{}
	}
	return at
}

// maxLeaseAhead bounds the grants one write takes for callers not yet queued
// (while half of every window is free): enough to spare most round trips of a
// busy process, few enough that the entry stays small.
const maxLeaseAhead = 8

// leaseAhead lets one write take maxLeaseAhead grants for callers not yet
// queued, and batchQueued one grant for every caller of the key queued in this
// process; both only while half of every window is free. They were once off:
// batched grants were stamped when taken and used up to a margin later, so a
// window at the API could see them arrive later than the log said (429s in
// TestScaleManyTenants and the strict quota step). Now a batch is stamped at
// the end of its lease (see leaseLength), which no call of it leaves after.
//
// Batching is kept to windows of at least minBatchLimit calls, far above Defender's 100 per minute: with it on
// at small windows, TestScaleManyTenants (50 tenants, 2 processes, 4/1s,12/5s windows, the call-by-call tenant
// gate) met 8 and 19 429s in two runs out of two, against none with one grant per write. The argument above
// holds for the log; what it misses has not been found, so the real windows do not batch. Batches only save
// round trips at call rates those windows never allow (a lifted quota, as in BenchmarkRelayVsBaseline, or a
// raised one), where one late call is no share of the window worth a 429.
const (
	leaseAhead  = true
	batchQueued = true
	// minBatchLimit is the smallest window limit at which a write takes more than one grant.
	minBatchLimit = 1000
)

// leaseLength returns how long grants taken in one write may wait for their
// calls: half the margin, and at most a twentieth of the shortest window. A
// batch is recorded at its lease's end, so its slots free up that much later
// than they could: the lease is kept short against every window. Zero (no
// batching) without a margin.
func leaseLength(widen time.Duration, windows []Window) time.Duration {
	shortest := time.Duration(0)
	for i, w := range windows {
		if i == 0 || w.Length < shortest {
			shortest = w.Length
		}
	}
	return min(widen/2, shortest/20)
}

// errConflict means the compare-and-swap lost to another writer.
var errConflict = errors.New("quota: concurrent update")

// errLate means the grant was recorded, but so long after its stamp that the
// call must not be made (see try).
var errLate = errors.New("quota: grant recorded too late to use")

func (s *Shared) keyLocked(key Key) *sharedKey {
	ks, ok := s.keys[key]
	if !ok {
		ks = &sharedKey{}
		s.keys[key] = ks
	}
	return ks
}

// takeLease uses a grant leased by an earlier write, if one is left and still
// covered by the margin.
func (s *Shared) takeLease(key Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks, ok := s.keys[key]
	if !ok || ks.leased == 0 {
		return false
	}
	if s.opts.clock.Now().After(ks.leaseEnd) {
		return false // the next write removes them
	}
	ks.leased--
	return true
}

// try appends a grant to key's entry with a compare-and-swap on the state last
// seen (read first when there is none), if a call is allowed now. It returns
// granted=false and the instant to look again when the windows or a pause
// forbid a call now, errConflict when another writer came first, and errLate
// (when mayDiscard) for a grant whose write took too long to be used.
func (s *Shared) try(ctx context.Context, key Key, mayDiscard bool) (granted bool, at time.Time, err error) {
	k := kvKey(key)
	opCtx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()

	s.mu.Lock()
	ks := s.keyLocked(key)
	st, rev := ks.seen, ks.rev
	pending := slices.Clone(ks.unsynced)
	// Leased grants that expired unused (Wait takes a lease before it tries, so any left now are expired) are
	// removed from the log by this write: no call was made on them, so the slots are free again.
	unused, unusedStamp := ks.leased, ks.leaseStamp
	s.mu.Unlock()
	// The state last seen is written on top of directly while it leaves plenty of room (a quarter of every
	// window). Near a window's edge, where replicas contend for the last slots, the entry is read first, as a
	// cached state would mostly lose the compare-and-swap there; the read's round trip also stays between the
	// moment a slot frees and its grant, as a little slack on top of the margin.
	if rev != 0 && 4*room(st.log, s.windows, s.widen, st.pausedUntil, s.opts.clock.Now()) < s.minLimit {
		rev = 0
	}
	if rev == 0 {
		st = sharedState{}
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
				s.opts.logger.Error().Err(err).Stringer("key", key).Msg("quota: ignoring unreadable shared state")
				st = sharedState{}
			}
		}
	}

	now := s.opts.clock.Now()
	st.log = pruneBefore(mergeTimes(st.log, pending), now.Add(-s.keep))
	if unused > 0 {
		st.log = removeStamps(st.log, unusedStamp, unused)
	}
	s.remember(key, st, rev)

	at = nextAllowed(st.log, s.windows, s.widen, st.pausedUntil, now)
	if at.After(now) {
		// A state read from the cache can only be missing grants and pauses
		// (entries grow; what ages out no longer counts), so waiting on it is
		// safe; the write at the end of the wait finds out what changed.
		return false, at, nil
	}
	// One write grants this caller and, while half of every window is free,
	// the callers queued behind it in this process and up to maxLeaseAhead
	// grants for callers still to come, as far as the windows allow now.
	//
	// Why a batch is safe: its n grants are checked here, at now, against the
	// log (room counts every entry, those dated in the future included), and
	// recorded at lease end = now + leaseLength, the latest instant any of
	// them may be used; takeLease refuses them after it, and the next write
	// removes those left. So every call leaves between the instant its grant
	// was checked and its stamp (a direct grant: its stamp plus the write, as
	// before). For any N+1 calls within one window, take the one granted last:
	// the other N were in the log when it was checked, and the check found the
	// Nth latest stamp at least w+margin before now; that call left after that
	// stamp's call by at least w+margin less the spread of delays the margin
	// is there to cover. Stamps in the future only make later checks stricter.
	n := 1
	stamp := now
	if lease := leaseLength(s.widen, s.windows); lease > 0 {
		r := room(st.log, s.windows, s.widen, st.pausedUntil, now)
		want := 1
		batchAt := minBatchLimit
		if s.opts.minBatchLimit > 0 {
			batchAt = s.opts.minBatchLimit
		}
		if 2*r >= s.minLimit && s.minLimit >= batchAt {
			if batchQueued {
				want = s.queue.waiting(key)
			}
			if leaseAhead && !s.opts.noLeaseAhead {
				want = max(want, maxLeaseAhead)
			}
		}
		n = max(min(r, want), 1)
		if n > 1 {
			stamp = now.Add(lease)
		}
	}
	// Keep the log ascending even when another replica's clock is ahead of
	// ours, or a batch was stamped ahead: stamping our grant no earlier than
	// the last one only makes later checks more careful (and gives a lease
	// more time, still ending at its stamp).
	if l := len(st.log); l > 0 && st.log[l-1].After(stamp) {
		stamp = st.log[l-1]
	}
	st.log = slices.Grow(slices.Clone(st.log), n)
	for range n {
		st.log = append(st.log, stamp)
	}
	var newRev uint64
	if rev == 0 {
		newRev, err = s.kv.Create(opCtx, k, st.encode())
	} else {
		newRev, err = s.kv.Update(opCtx, k, st.encode(), rev)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists):
		s.forget(key)
		return false, time.Time{}, errConflict
	case err != nil:
		s.forget(key)
		return false, time.Time{}, fmt.Errorf("%w: update %s: %w", ErrStoreUnreachable, k, err)
	}
	if s.opts.onGrant != nil {
		for range n {
			s.opts.onGrant(key, stamp)
		}
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
	// nothing and loses nothing. Leased grants are used only until their
	// stamp.
	took := s.opts.clock.Now().Sub(now)
	floor := s.writes.add(took)
	late := mayDiscard && s.widen > 0 && took-floor > s.widen/2
	s.mu.Lock()
	ks = s.keyLocked(key)
	if newRev > ks.rev {
		ks.seen, ks.rev = st, newRev
	}
	ks.unsynced = slices.DeleteFunc(ks.unsynced, func(g time.Time) bool {
		return slices.ContainsFunc(pending, g.Equal)
	})
	ks.leased, ks.leaseStamp, ks.leaseEnd = 0, time.Time{}, time.Time{}
	if n > 1 {
		// After a late write the lease is over at once: the next write
		// removes its grants, unused.
		ks.leased, ks.leaseStamp, ks.leaseEnd = n-1, stamp, stamp
		if late {
			ks.leaseEnd = time.Time{}
		}
	}
	s.mu.Unlock()
	if late {
		return false, time.Time{}, errLate
	}
	return true, time.Time{}, nil
}

// remember keeps st (at revision rev, 0 for unknown) as the state last seen.
func (s *Shared) remember(key Key, st sharedState, rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.clock.Now()
	if now.Sub(s.lastSweep) >= s.keep {
		s.lastSweep = now
		s.sweepLocked(now)
	}
	ks := s.keyLocked(key)
	if rev < ks.rev {
		return // the watch brought a newer state meanwhile
	}
	ks.seen, ks.rev = st, rev
}

// forget drops the cached revision of key, so that the next try reads it.
func (s *Shared) forget(key Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ks, ok := s.keys[key]; ok {
		ks.rev = 0
	}
}

// sweepLocked forgets keys that hold nothing that still counts, so that memory
// follows the set of active keys.
func (s *Shared) sweepLocked(now time.Time) {
	for k, ks := range s.keys {
		ks.seen.log = pruneBefore(ks.seen.log, now.Add(-s.keep))
		if len(ks.seen.log) == 0 && len(ks.unsynced) == 0 && !ks.seen.pausedUntil.After(now) && s.queue.waiting(k) == 0 {
			delete(s.keys, k)
		}
	}
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
	s.fallback = newLocal(s.share, o, newMetrics(nil), false)
	s.seeded = make(map[Key]bool)
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
func (s *Shared) waitFallback(ctx context.Context, fb *Local, key Key, start time.Time) error {
	s.mu.Lock()
	if !s.seeded[key] && s.seeded != nil && s.fallback == fb {
		s.seeded[key] = true
		ks := s.keyLocked(key)
		fb.seed(key, mergeTimes(slices.Clone(ks.seen.log), ks.unsynced), ks.seen.pausedUntil)
	}
	s.mu.Unlock()
	at, err := fb.wait(ctx, key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	ks := s.keyLocked(key)
	// Pruning keeps the memory of this key bounded through a long outage.
	ks.unsynced = pruneBefore(append(ks.unsynced, at), at.Add(-s.keep))
	ks.rev = 0 // the store may have moved on meanwhile
	ks.leased = 0
	s.mu.Unlock()
	s.metrics.observeGrant(key, s.opts.clock.Now().Sub(start))
	return nil
}

// Pause stops every grant for key, in every replica, until until: it is
// written to the store (so every replica honours it at its next look) and to
// this process's fallback. A store failure is logged and the pause still
// applies here. A pause never shortens one already in force.
func (s *Shared) Pause(key Key, until time.Time) {
	s.metrics.observePause(key)
	s.opts.logger.Info().Stringer("key", key).Time("until", until).Msg("quota: paused")
	s.mu.Lock()
	ks := s.keyLocked(key)
	if until.After(ks.seen.pausedUntil) {
		ks.seen.pausedUntil = until
	}
	ks.leased = 0
	fb := s.fallback
	s.mu.Unlock()
	if fb != nil {
		fb.Pause(key, until)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opTimeout)
	defer cancel()
	if err := s.storePause(ctx, key, until); err != nil {
		s.opts.logger.Warn().Err(err).Stringer("key", key).Msg("quota: pause not shared, applied locally only")
	}
	s.forget(key)
}

func (s *Shared) storePause(ctx context.Context, key Key, until time.Time) error {
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
func (s *Shared) PausedUntil(key Key) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ks, ok := s.keys[key]; ok && ks.seen.pausedUntil.After(s.opts.clock.Now()) {
		return ks.seen.pausedUntil
	}
	return time.Time{}
}

// utilisation reports the share of each window used, as last seen in the
// store (all replicas together). Scrapes also forget idle keys.
func (s *Shared) utilisation(now time.Time) []utilisation {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now)
	var out []utilisation
	for k, ks := range s.keys {
		log := mergeTimes(ks.seen.log, ks.unsynced)
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
