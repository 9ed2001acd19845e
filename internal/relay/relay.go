// Package relay consumes "live response finished" events from a shared durable JetStream consumer, turns every
// command into one result event, and decides each source message's fate in one place (handle).
//
// Delivery guarantee: a source event is acked only after every one of its results has its PubAck. Every result
// is published with Nats-Msg-Id <actionId>.<index> to its own subject, and before a command is worked on the
// results stream is asked for the last message on that subject, so a redelivery never publishes a result twice,
// even long after the stream's duplicate window. Permanent failures are dead-lettered (with the original
// payload) and only then terminated; transient ones are handed back with NakWithDelay on a backoff schedule.
package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/command"

	"github.com/lr-relay/lr-relay/internal/result"
)

// Tenant is one Defender tenant the relay serves.
type Tenant struct {
	// Name is lr-relay's name for the tenant; it is the subject token of its results ("default" for the
	// tenant configured by the LR_MDE_* variables).
	Name string
	// ID is the tenant's configured Entra tenant id (results carry it when the event has none).
	ID  string
	API command.API
	// NextCall, when set, estimates without blocking (and without a round trip) when the tenant could make n
	// more result-link calls; the zero time or a time not after now means now. The relay sets aside an event
	// whose tenant has no budget now instead of holding a worker on it (see tenantGate).
	NextCall func(n int) time.Time
}

// Router finds the tenant of an event from its tenantId ("" when the event has none).
type Router func(tenantID string) (*Tenant, bool)

// Validator checks documents against schemas/.
type Validator interface {
	ValidateEvent(doc []byte) error
	ValidateResult(doc []byte) error
	ValidateDeadLetter(doc []byte) error
}

// Options configures a Relay.
type Options struct {
	JS              jetstream.JetStream
	Streams         StreamConfig
	Workers         int
	MaxDeliver      int
	Backoff         []time.Duration
	ShutdownTimeout time.Duration
	// Commands does the work on each command.
	Commands   *command.Processor
	Router     Router
	Validator  Validator
	Logger     zerolog.Logger
	Registerer prometheus.Registerer
	// TenantWorkers caps the workers one tenant may hold at once (0: no gate at all, for a single tenant).
	// TenantParked is how many events per tenant wait in this process for a slot or for their tenant's budget;
	// beyond that they are deferred, until their tenant's budget frees or by DeferDelay (see tenantGate).
	TenantWorkers int
	TenantParked  int
	DeferDelay    time.Duration
	// Deferrals records deliveries handed back by the tenant gate, so they do not count toward MaxDeliver.
	Deferrals *Deferrals
	// Payloads keeps the payload of a dead-lettered event that is too large to fit its record whole.
	Payloads PayloadStore
	// MaxPayload is the server's max payload: every result and dead-letter record is made to fit it.
	MaxPayload int
	// MaxEventBytes, MaxCommands and MaxResultBytesPerEvent bound what one event may ask for
	// (LR_MAX_EVENT_BYTES, LR_MAX_COMMANDS, LR_MAX_RESULT_BYTES_PER_EVENT); an event over a bound is
	// dead-lettered with input_too_large before any API call.
	MaxEventBytes          int
	MaxCommands            int
	MaxResultBytesPerEvent int
	// AuthRetryDelay is how long an event waits when its tenant's credentials are rejected.
	AuthRetryDelay time.Duration
	// MaxThrottleRetries (LR_MDE_MAX_THROTTLE_RETRIES) is how many 429s an event's calls absorb while it is set
	// aside for its tenant's pause before the event is retried as a failure.
	MaxThrottleRetries int
	// TenantNames are the configured tenants: their per-tenant counters start at zero.
	TenantNames []string
	// Version is lr-relay's version, written into dead-letter records.
	Version string
	// OnResult, when set, is called after each result's PubAck (the demo prints results with it).
	OnResult func(*result.Event)
	// OnDeadLetter, when set, is called after each dead-letter record's PubAck.
	OnDeadLetter func(*DeadLetter)
}

// PayloadStore keeps large dead-letter payloads (the Object Store).
type PayloadStore interface {
	Put(ctx context.Context, name string, meta map[string]string, data []byte) (*result.ObjectRef, error)
}

// maxParkedTotal and maxParkedBytes bound the events one process keeps parked in all (see tenantGate): events
// of up to LR_MAX_EVENT_BYTES each must not add up to more memory than a process should hold for them.
const (
	maxParkedTotal = 2000
	maxParkedBytes = 64 << 20
)

// Relay is the pipeline. Create it with New, start it with Run.
type Relay struct {
	o       Options
	log     zerolog.Logger
	metrics *metrics
	results jetstream.Stream
	gate    *tenantGate
	// slots holds one token per event being worked on (LR_WORKERS), pulled or resumed from parking.
	slots chan struct{}

	warnings sync.Map // tenant name -> *rate.Sometimes

	mu       sync.Mutex
	consumer jetstream.Consumer
	ackWait  time.Duration
	ready    bool
}

// New checks the options and returns a Relay. It does not touch the network. Every option must be set: the
// defaults live in the configuration (internal/config), not here.
func New(o Options) (*Relay, error) {
	var errs []error
	for _, c := range []struct {
		bad  bool
		what string
	}{
		{o.JS == nil, "no JetStream context"},
		{o.Commands == nil, "no command processor"},
		{o.Router == nil, "no tenant router"},
		{o.Validator == nil, "no schema validator"},
		{o.Workers < 1, "workers must be at least 1"},
		{o.MaxDeliver < 1, "max deliver must be at least 1"},
		{len(o.Backoff) == 0, "empty backoff schedule"},
		{o.MaxPayload < 64<<10, "max payload must be at least 64 KiB"},
		{o.MaxEventBytes < 1, "max event bytes must be positive"},
		{o.MaxCommands < 1, "max commands must be positive"},
		{o.MaxResultBytesPerEvent < 1, "max result bytes per event must be positive"},
		{o.AuthRetryDelay <= 0, "auth retry delay must be positive"},
		{o.TenantWorkers > 0 && (o.TenantParked < 1 || o.DeferDelay <= 0), "tenant gate needs parked events and a defer delay"},
	} {
		if c.bad {
			errs = append(errs, errors.New("relay: "+c.what))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Parked events count toward the consumer's MaxAckPending (10,000 when provisioned), like deferred ones; a
	// parked event costs a few KiB (the message and its parsed action) and one InProgress per third of AckWait.
	maxTotal := max(o.TenantParked, maxParkedTotal)
	m := newMetrics(o.Registerer)
	for _, name := range o.TenantNames {
		m.parked.WithLabelValues(name)
		m.deferred.WithLabelValues(name)
	}
	return &Relay{o: o, log: o.Logger, metrics: m, gate: newTenantGate(o.TenantWorkers, o.TenantParked, maxTotal, maxParkedBytes),
		slots: make(chan struct{}, o.Workers)}, nil
}

// Ready reports whether the relay is bound to its consumer and connected.
func (r *Relay) Ready() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready
}

// Run binds the consumer and processes events until ctx ends. Then it stops pulling at once, gives in-flight
// work ShutdownTimeout to finish, hands back what did not finish (NakWithDelay), and returns.
func (r *Relay) Run(ctx context.Context) error {
	results, err := r.o.JS.Stream(ctx, r.o.Streams.ResultStream)
	if err != nil {
		return fmt.Errorf("binding results stream %q: %w", r.o.Streams.ResultStream, err)
	}
	r.results = results
	if err := r.bind(ctx); err != nil {
		return err
	}

	// workCtx outlives ctx by ShutdownTimeout, so in-flight events can finish after intake stopped.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopTimer := context.AfterFunc(ctx, func() {
		r.log.Info().Dur("timeout", r.o.ShutdownTimeout).Msg("stopping intake; finishing in-flight work")
		t := time.AfterFunc(r.o.ShutdownTimeout, cancelWork)
		context.AfterFunc(workCtx, func() { t.Stop() })
	})
	defer stopTimer()

	var wg sync.WaitGroup
	parkedDone := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.keepParkedAlive(parkedDone)
	}()
	var workers sync.WaitGroup
	for i := 0; i < r.o.Workers; i++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			r.worker(ctx, workCtx)
		}()
	}
	if r.gate.limit > 0 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			r.dispatch(ctx, workCtx, &workers)
		}()
	}
	workers.Wait()
	close(parkedDone)
	// Parked events were never started: hand them back at once.
	for _, m := range r.gate.drain() {
		r.settle(m, sourceOfMsg(m), decision{fate: fateHandBack})
	}
	wg.Wait()
	r.mu.Lock()
	r.ready = false
	r.mu.Unlock()
	return nil
}

// worker pulls one message at a time: a worker holds at most one event, so nothing waits in a client-side
// buffer while its ack timer runs.
func (r *Relay) worker(pullCtx, workCtx context.Context) {
	for pullCtx.Err() == nil {
		cons := r.current()
		fetchCtx, cancel := context.WithTimeout(pullCtx, 5*time.Second)
		msg, err := cons.Next(jetstream.FetchContext(fetchCtx))
		cancel()
		if err != nil {
			r.pullFailed(pullCtx, err)
			continue
		}
		r.admit(workCtx, msg)
	}
}

// dispatch runs parked events as they come due, each in a goroutine of its own under a work slot (at most
// LR_WORKERS events are worked on at once, pulled and resumed together). It sleeps until the earliest due
// event, or until the gate says something changed (an event parked, a tenant's worker freed); with nothing
// parked it sleeps. running counts the goroutines it starts, for Run to wait for them.
func (r *Relay) dispatch(ctx, workCtx context.Context, running *sync.WaitGroup) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if tk, p, ok := r.gate.takeParked(time.Now()); ok {
			running.Add(1)
			go func() {
				defer running.Done()
				defer func() { <-r.slots }()
				r.handle(workCtx, p.msg, p.work, &tk)
				r.gate.release(tk)
			}()
			continue
		}
		<-r.slots
		wait := time.Hour
		if due, ok := r.gate.nextDue(); ok {
			wait = max(time.Until(due), 0)
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-r.gate.wake:
			// Reset at the next turn discards a tick that came meanwhile (Go 1.23 timers).
		case <-ctx.Done():
			return
		}
	}
}

// admit handles msg now when its tenant may start it, and otherwise sets it aside: parked until it comes due,
// or deferred when parking is full.
func (r *Relay) admit(workCtx context.Context, msg jetstream.Msg) {
	t, calls := r.peek(msg.Data())
	if t == nil {
		r.acquire(msg)
		r.handle(workCtx, msg, nil, nil)
		<-r.slots
		return
	}
	now := time.Now()
	tk, due, ok := r.gate.admit(t, calls, now)
	if ok {
		r.acquire(msg)
		r.handle(workCtx, msg, nil, &tk)
		<-r.slots
		r.gate.release(tk)
		return
	}
	if r.gate.park(parkedMsg{msg: msg, tenant: t, calls: calls, due: due}) {
		r.metrics.parked.WithLabelValues(t.Name).Inc()
		return
	}
	delay := r.o.DeferDelay
	if due.After(now) {
		delay = due.Sub(now)
	}
	r.deferMsg(msg, t.Name, delay)
}

// acquire takes a work slot for msg, keeping msg alive while it waits for one (the slots may all be held by
// long downloads of resumed events).
func (r *Relay) acquire(msg jetstream.Msg) {
	select {
	case r.slots <- struct{}{}:
		return
	default:
	}
	stop := r.keepAlive(msg)
	r.slots <- struct{}{}
	stop()
}

// peek reads an event's tenant and the result-link calls it needs (the gate only asks whether it needs one);
// nil when there is no gate or it cannot tell (the event is then handled at once, and dead-lettered if it is
// bad). An event without commands needs one action call and then its links: it counts as one call.
func (r *Relay) peek(payload []byte) (*Tenant, int) {
	if r.gate.limit == 0 {
		return nil, 0
	}
	var probe struct {
		TenantID string            `json:"tenantId"`
		Commands *[]action.Command `json:"commands"`
	}
	if json.Unmarshal(payload, &probe) != nil {
		return nil, 0
	}
	t, ok := r.o.Router(probe.TenantID)
	if !ok {
		return nil, 0
	}
	if probe.Commands == nil {
		return t, 1
	}
	calls := 0
	for _, c := range *probe.Commands {
		if c.NeedsResult() {
			calls++
		}
	}
	return t, calls
}

// deferMsg hands an event that its tenant may not start now back for delay (see settle, fateDefer).
func (r *Relay) deferMsg(msg jetstream.Msg, tenant string, delay time.Duration) {
	r.settle(msg, sourceOfMsg(msg), decision{fate: fateDefer, tenant: tenant, delay: delay})
}

// keepParkedAlive sends InProgress for every parked event every third of AckWait until done closes.
func (r *Relay) keepParkedAlive(done <-chan struct{}) {
	r.mu.Lock()
	every := r.ackWait / 3
	r.mu.Unlock()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			for _, m := range r.gate.parkedMsgs() {
				_ = m.InProgress()
			}
		}
	}
}

func (r *Relay) pullFailed(ctx context.Context, err error) {
	switch {
	case ctx.Err() != nil:
		return
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoMessages):
		r.setReady(true)
		return
	case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound),
		errors.Is(err, nats.ErrNoResponders):
		// A pull sent to a consumer that no longer exists gets no answer at all (nobody listens on its
		// MSG.NEXT subject): ErrConsumerDeleted only reaches a pull that was waiting when it went. bind looks
		// the consumer up and creates it only when it is really missing.
		r.log.Warn().Err(err).Str("consumer", r.o.Streams.Consumer).Msg("consumer gone; recreating it")
		r.setReady(false)
		if err := r.bind(ctx); err != nil {
			r.log.Error().Err(err).Msg("recreating consumer failed; will retry")
		}
	default:
		r.setReady(false)
		r.log.Debug().Err(err).Msg("pull failed; retrying")
	}
	t := time.NewTimer(500*time.Millisecond + rand.N(500*time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (r *Relay) setReady(v bool) {
	r.mu.Lock()
	r.ready = v
	r.mu.Unlock()
}

func (r *Relay) current() jetstream.Consumer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.consumer
}

// bind finds the durable consumer, creating it when it is missing (at start, or after someone deleted it).
// Concurrent callers are serialised; the consumer settings are those of EnsureConsumer.
func (r *Relay) bind(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cons, err := EnsureConsumer(ctx, r.o.JS, r.o.Streams)
	if err != nil {
		return err
	}
	ackWait := cons.CachedInfo().Config.AckWait
	if ackWait <= 0 {
		// The server always reports the AckWait it applies; without one keepAlive has no period.
		return fmt.Errorf("consumer %q on %q reports no AckWait", r.o.Streams.Consumer, r.o.Streams.SourceStream)
	}
	r.consumer = cons
	r.ackWait = ackWait
	r.ready = true
	return nil
}

// keepAlive sends InProgress every third of AckWait until the returned stop is called, so waiting on the
// limiter, the API or a long download never lets the ack timer expire.
func (r *Relay) keepAlive(msg jetstream.Msg) (stop func()) {
	r.mu.Lock()
	every := r.ackWait / 3
	r.mu.Unlock()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					r.log.Debug().Err(err).Msg("InProgress failed")
				}
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// backoff returns the delay before delivery number n+1, with ±20% jitter so retries of many events spread.
func (r *Relay) backoff(delivered uint64) time.Duration {
	i := int(delivered) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(r.o.Backoff) {
		i = len(r.o.Backoff) - 1
	}
	d := r.o.Backoff[i]
	jitter := time.Duration(rand.Int64N(int64(d)/5*2+1)) - d/5
	return d + jitter
}
