package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/command"
	"github.com/lr-relay/lr-relay/internal/quota"
	"github.com/lr-relay/lr-relay/schemas"
)

// fate is what happens to a source message once its work is over.
type fate int

const (
	fateAck        fate = iota // every result has its PubAck
	fateRetry                  // transient failure: NakWithDelay on the backoff schedule
	fateDeadLetter             // permanent failure: dead-letter record, then Term
	fateHandBack               // shutdown interrupted the work: NakWithDelay(short) for another replica
	fateDefer                  // not this event's fault (its tenant's credentials are rejected): wait, uncounted
	fatePark                   // its tenant has no budget for its next call now: set aside until due, uncounted
)

type decision struct {
	fate     fate
	reason   string // dead-letter reason code
	err      error
	actID    string
	index    *int
	tenant   string // configured tenant name
	tenantID string
	target   string
	results  int
	delay    time.Duration // fateDefer: how long to wait
	due      time.Time     // fatePark: when the next call may be made
	work     *eventWork    // fatePark: the work done so far
	t        *Tenant       // fatePark
}

// eventWork is an event being worked on by this delivery: parsed once, and when it is set aside for its
// tenant's budget (fatePark), resumed where it stopped.
type eventWork struct {
	a         *action.MachineAction
	tenant    *Tenant
	next      int // position in a.Commands of the first command this delivery has not published yet
	results   int // published by this delivery
	throttles int // 429s met by calls that were then set aside
}

// handle is the one place that decides a source message's fate, and settle the one place that carries it
// out. The rules:
//   - ack only after every result of the event has its PubAck;
//   - a transient failure is retried with NakWithDelay (never a bare Nak), until LR_MAX_DELIVER deliveries,
//     after which the event is dead-lettered with its last error;
//   - a permanent failure is dead-lettered, and the message is terminated only after the dead-letter record
//     has its PubAck (if that publish fails, it is retried like any failure and counts toward
//     LR_MAX_DELIVER);
//   - an event whose tenant's credentials are rejected waits (NakWithDelay on LR_TENANT_AUTH_RETRY), and such
//     deliveries do not count toward LR_MAX_DELIVER: the operator fixes the credentials, nothing is lost;
//   - an event whose tenant has no budget for its next call now is set aside (parked, or deferred when parking
//     is full) until the budget frees, uncounted; a parked event resumes with the work done so far;
//   - work cut short by shutdown is handed back with a short delay.
//
// w is the work done so far on a parked event (nil for a new delivery); tk is the event's hold on the tenant
// gate (nil without a gate).
func (r *Relay) handle(ctx context.Context, msg jetstream.Msg, w *eventWork, tk *ticket) {
	start := time.Now()
	src := sourceOfMsg(msg)
	r.metrics.inflight.Inc()
	defer r.metrics.inflight.Dec()

	stop := r.keepAlive(msg)
	d := r.decide(ctx, msg.Data(), src, w, tk)
	stop()
	r.settle(msg, src, d)
	r.metrics.eventDuration.Observe(time.Since(start).Seconds())
}

// sourceOfMsg reads where a message comes from and how often it was delivered.
func sourceOfMsg(msg jetstream.Msg) msgSource {
	src := msgSource{subject: msg.Subject()}
	if meta, err := msg.Metadata(); err == nil {
		src.stream, src.sequence, src.deliveries = meta.Stream, meta.Sequence.Stream, meta.NumDelivered
	}
	return src
}

// giveUp turns a retry that has used up LR_MAX_DELIVER into a dead letter carrying the last error.
func (r *Relay) giveUp(d decision, src msgSource) decision {
	if d.fate != fateRetry || r.failedDeliveries(src) < uint64(r.o.MaxDeliver) {
		return d
	}
	d.fate, d.reason = fateDeadLetter, ReasonMaxDeliveries
	d.err = fmt.Errorf("gave up after %d deliveries; last error: %w", src.deliveries, d.err)
	return d
}

func (r *Relay) settle(msg jetstream.Msg, src msgSource, d decision) {
	d = r.giveUp(d, src)
	log := r.log.With().Str("stream", src.stream).Uint64("seq", src.sequence).Uint64("delivered", src.deliveries).
		Str("action_id", d.actID).Str("tenant", d.tenant).Logger()
	// Settling uses its own short context: it must happen even while shutting down.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch d.fate {
	case fateAck:
		// A plain ack, not DoubleAck: waiting for the server's confirmation would cost a round trip per event
		// and change nothing. Every result already has its PubAck; if the ack is lost, the redelivery finds
		// every result stored (alreadyPublished) and publishes nothing twice.
		if err := msg.Ack(); err != nil {
			log.Warn().Err(err).Msg("ack failed; a redelivery will be recognised as done")
		}
		r.metrics.events.WithLabelValues("relayed").Inc()
		log.Debug().Int("results", d.results).Msg("event relayed")
	case fateRetry:
		delay := r.backoff(src.deliveries)
		if err := msg.NakWithDelay(delay); err != nil {
			log.Warn().Err(err).Msg("nak failed; the ack wait will redeliver")
		}
		r.metrics.events.WithLabelValues("retried").Inc()
		log.Warn().Err(d.err).Float64("retry_in_seconds", delay.Seconds()).Msg("transient failure; event handed back")
	case fateHandBack:
		if err := msg.NakWithDelay(time.Second); err != nil {
			log.Warn().Err(err).Msg("hand-back nak failed; the ack wait will redeliver")
		}
		r.metrics.events.WithLabelValues("handed_back").Inc()
		log.Info().Msg("shutdown: in-flight event handed back")
	case fatePark:
		if d.t != nil && r.gate.park(parkedMsg{msg: msg, tenant: d.t, calls: 1, due: d.due, work: d.work}) {
			r.metrics.parked.WithLabelValues(d.t.Name).Inc()
			return
		}
		// Parking is full: wait in the stream instead, from the start (the results published so far are
		// recognised by the already-published lookup).
		d.fate, d.delay = fateDefer, max(time.Until(d.due), 0)
		r.settle(msg, src, d)
	case fateDefer:
		// Deliberate waits (the tenant has no budget or no free worker now, or its credentials are rejected)
		// are recorded, so that they never count toward LR_MAX_DELIVER. Jitter spreads a tenant's events.
		if r.o.Deferrals != nil && src.stream != "" {
			if err := r.o.Deferrals.Add(ctx, src.stream, src.sequence); err != nil {
				log.Warn().Err(err).Msg("recording a deferral failed; this delivery may count toward LR_MAX_DELIVER")
			}
		}
		delay := d.delay + rand.N(d.delay/10+100*time.Millisecond)
		if err := msg.NakWithDelay(delay); err != nil {
			log.Debug().Err(err).Msg("deferral nak failed; the ack wait will redeliver")
		}
		r.metrics.events.WithLabelValues("deferred").Inc()
		if d.tenant != "" {
			r.metrics.deferred.WithLabelValues(d.tenant).Inc()
		}
		if d.err != nil {
			r.sometimes(d.tenant).Do(func() {
				log.Warn().Err(d.err).Float64("retry_in_seconds", delay.Seconds()).
					Msg("tenant credentials rejected; its events wait until they are fixed (not counted as failures)")
			})
		}
	case fateDeadLetter:
		if err := r.deadLetter(ctx, msg, src, d, log); err != nil {
			// Like any failure: backed off, and counted toward LR_MAX_DELIVER (after which the next delivery
			// dead-letters again, with the smallest record). It never loops without a delay.
			delay := r.backoff(src.deliveries)
			_ = msg.NakWithDelay(delay)
			r.metrics.events.WithLabelValues("retried").Inc()
			log.Error().Err(err).Str("reason", d.reason).Float64("retry_in_seconds", delay.Seconds()).
				Msg("dead-letter publish failed; event kept for retry")
		}
	}
}

// deadLetter publishes the record, then terminates the message.
func (r *Relay) deadLetter(ctx context.Context, msg jetstream.Msg, src msgSource, d decision, log zerolog.Logger) error {
	dl := newDeadLetter(d, msg.Data(), src, time.Now(), r.o.Version)
	if err := r.publishDeadLetter(ctx, dl, msg.Data()); err != nil {
		return err
	}
	if err := msg.TermWithReason(d.reason); err != nil {
		log.Warn().Err(err).Msg("term failed; a redelivery will dead-letter again (deduplicated)")
	}
	r.metrics.events.WithLabelValues("dead_lettered").Inc()
	r.metrics.deadLetters.WithLabelValues(d.reason).Inc()
	log.Warn().Str("reason", d.reason).Str("error", truncate(dl.Message, 512)).Msg("event dead-lettered")
	if r.o.OnDeadLetter != nil {
		r.o.OnDeadLetter(dl)
	}
	return nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// decide does the work of one event, or the rest of it (w), and says what its fate is.
func (r *Relay) decide(ctx context.Context, payload []byte, src msgSource, w *eventWork, tk *ticket) decision {
	if w == nil {
		var d decision
		if w, d = r.start(ctx, payload, src); w == nil {
			return d
		}
	}
	a, tenant := w.a, w.tenant
	t := command.Tenant{Name: tenant.Name, ID: tenant.ID, API: tenant.API}
	base := decision{actID: a.ID, tenant: t.Name, tenantID: a.TenantID}
	for ; w.next < len(a.Commands); w.next++ {
		c := a.Commands[w.next]
		at := base
		at.index = &c.Index
		if c.NeedsResult() {
			// No worker waits for a budget while another tenant's event could run: without budget for this
			// call now, the event is set aside with its work so far.
			if due, ok := r.gate.another(tk, tenant, time.Now()); !ok {
				at.fate, at.due, at.work, at.t = fatePark, due, w, tenant
				return at
			}
		}
		subject := r.resultSubject(t.Name, a.ID, c.Index)
		// A redelivery first asks whether the result is stored, to spend no API call on it. A first delivery
		// skips the round trip: no result of it can be stored unless the same action was published again, and
		// then the server refuses the second result anyway (publishResult: one result per subject).
		if src.deliveries != 1 {
			done, err := r.alreadyPublished(ctx, subject)
			if err != nil {
				return r.failure(ctx, at, fmt.Errorf("checking results stream for %s: %w", subject, err))
			}
			if done {
				r.metrics.skipped.Inc()
				continue
			}
		}
		cctx := ctx
		if tk != nil {
			// The estimate that let the call go ahead may be early (another replica's grant not seen yet):
			// rather than hold the worker on the budget, the limiter says when it frees, and the event is set
			// aside until then.
			cctx = quota.WithMaxWait(ctx, maxBudgetWait)
		}
		ev, err := r.o.Commands.Result(cctx, t, a, c)
		r.gate.made(tk)
		var busy budgetBusy
		if errors.As(err, &busy) && ctx.Err() == nil {
			// A set-aside call that met a 429 first counts it: past LR_MDE_MAX_THROTTLE_RETRIES the event
			// is retried like any transient failure (counted toward LR_MAX_DELIVER), so a tenant whose
			// quota another application keeps spending does not keep its events waiting for ever.
			var th afterThrottle
			if errors.As(err, &th) && th.AfterThrottle() {
				if w.throttles++; w.throttles > r.o.MaxThrottleRetries {
					return r.failure(ctx, at, fmt.Errorf("command %d (%s): throttled %d times: %w",
						c.Index, commandLabel(c.Command.Type), w.throttles, err))
				}
			}
			at.fate, at.due, at.work, at.t = fatePark, busy.BusyUntil(), w, tenant
			return at
		}
		var pe *command.ProblemError
		if errors.As(err, &pe) && ctx.Err() == nil {
			// A command-level problem: the command still ends as exactly one result, describing it.
			ev, err = r.o.Commands.Describe(ev, pe), nil
		}
		if err != nil {
			return r.failure(ctx, at, fmt.Errorf("command %d (%s): %w", c.Index, commandLabel(c.Command.Type), err))
		}
		ev.Source = sourceOf(src)
		if err := r.publishResult(ctx, t, subject, ev); err != nil {
			return r.failure(ctx, at, fmt.Errorf("publishing result %s: %w", subject, err))
		}
		w.results++
	}
	d := base
	d.fate, d.results = fateAck, w.results
	return d
}

// start checks a new delivery, finds its tenant and, for an event without commands, fetches its action. It
// returns the work to do, or nil and the event's fate.
func (r *Relay) start(ctx context.Context, payload []byte, src msgSource) (*eventWork, decision) {
	if src.deliveries > uint64(r.o.MaxDeliver) && r.failedDeliveries(src) > uint64(r.o.MaxDeliver) {
		// The previous delivery ended without a verdict (the process died): do not try again forever.
		return nil, decision{fate: fateDeadLetter, reason: ReasonMaxDeliveries,
			err: fmt.Errorf("delivered %d times, more than LR_MAX_DELIVER=%d; the previous attempts ended without a verdict", src.deliveries, r.o.MaxDeliver)}
	}
	a, d, ok := r.parseEvent(payload)
	if !ok {
		return nil, d
	}
	tenant, found := r.o.Router(a.TenantID)
	if !found {
		return nil, decision{fate: fateDeadLetter, reason: ReasonUnknownTenant, actID: a.ID, tenantID: a.TenantID,
			err: fmt.Errorf("tenantId %q is not a configured tenant (see LR_TENANTS_FILE)", truncate(a.TenantID, 80))}
	}
	if !a.HasCommands {
		t := command.Tenant{Name: tenant.Name, ID: tenant.ID, API: tenant.API}
		base := decision{actID: a.ID, tenant: t.Name, tenantID: a.TenantID}
		if err := r.o.Commands.Complete(ctx, t, a); err != nil {
			return nil, r.failure(ctx, base, err)
		}
		if d, ok := r.checkCommands(a, base); !ok {
			return nil, d
		}
	}
	return &eventWork{a: a, tenant: tenant}, decision{}
}

// parseEvent checks the payload: its size, JSON, the id, the schema, then the bounds on what its results
// would repeat. Every check comes before any API call.
func (r *Relay) parseEvent(payload []byte) (*action.MachineAction, decision, bool) {
	if len(payload) > r.o.MaxEventBytes {
		return nil, decision{fate: fateDeadLetter, reason: ReasonInputTooLarge,
			err: fmt.Errorf("event is %d bytes, over LR_MAX_EVENT_BYTES=%d", len(payload), r.o.MaxEventBytes)}, false
	}
	var probe struct {
		ID       json.RawMessage `json:"id"`
		Commands json.RawMessage `json:"commands"`
	}
	if err := json.Unmarshal(payload, &probe); err != nil {
		return nil, decision{fate: fateDeadLetter, reason: ReasonInvalidJSON, err: fmt.Errorf("event is not a JSON object: %w", err)}, false
	}
	var id string
	if len(probe.ID) > 0 && json.Unmarshal(probe.ID, &id) == nil && id != "" && !action.IsGUID(id) {
		return nil, decision{fate: fateDeadLetter, reason: ReasonInvalidID,
			err: fmt.Errorf("id %q is not a GUID", truncate(id, 80))}, false
	}
	if err := r.o.Validator.ValidateEvent(payload); err != nil {
		reason := ReasonSchemaViolation
		var ve *schemas.ValidationError
		if errors.As(err, &ve) && ve.TooLarge {
			reason = ReasonInputTooLarge
		}
		return nil, decision{fate: fateDeadLetter, reason: reason, actID: id,
			err: fmt.Errorf("event does not match schemas/event.schema.json: %w", err)}, false
	}
	var a action.MachineAction
	if err := json.Unmarshal(payload, &a); err != nil {
		return nil, decision{fate: fateDeadLetter, reason: ReasonSchemaViolation, actID: id,
			err: fmt.Errorf("event fields have the wrong types: %w", err)}, false
	}
	a.HasCommands = len(probe.Commands) > 0 && string(probe.Commands) != "null"
	if d, ok := r.checkCommands(&a, decision{actID: a.ID, tenantID: a.TenantID}); !ok {
		return nil, d, false
	}
	return &a, decision{}, true
}

// checkCommands applies LR_MAX_COMMANDS and LR_MAX_RESULT_BYTES_PER_EVENT to the commands of an event (or of
// the action fetched for it). Every result repeats the action's fields, so a large event with many commands
// would otherwise multiply into gigabytes of results.
func (r *Relay) checkCommands(a *action.MachineAction, d decision) (decision, bool) {
	d.fate, d.reason = fateDeadLetter, ReasonInputTooLarge
	if len(a.Commands) > r.o.MaxCommands {
		d.err = fmt.Errorf("action has %d commands, over LR_MAX_COMMANDS=%d", len(a.Commands), r.o.MaxCommands)
		return d, false
	}
	shared := len(a.TenantID) + len(a.Status) + len(a.MachineID) + len(a.ComputerDNSName) + len(a.Requestor) +
		len(a.RequestorComment) + len(a.CreationDateTimeUTC) + len(a.LastUpdateDateTimeUTC)
	total := 0
	for _, c := range a.Commands {
		total += shared + len(c.CommandStatus) + len(c.Command.Type) + len(c.StartTime) + len(c.EndTime)
		for _, e := range c.Errors {
			total += len(e)
		}
		for _, p := range c.Command.Params {
			total += len(p.Key) + len(p.Value)
		}
	}
	if total > r.o.MaxResultBytesPerEvent {
		d.err = fmt.Errorf("the results of this event would repeat %d bytes of its fields, over LR_MAX_RESULT_BYTES_PER_EVENT=%d",
			total, r.o.MaxResultBytesPerEvent)
		return d, false
	}
	return decision{}, true
}

// maxBudgetWait is how long a worker may wait for its tenant's budget before the event is set aside instead.
const maxBudgetWait = 250 * time.Millisecond

// budgetBusy is implemented by the limiter's answer when a call would have waited longer than maxBudgetWait.
type budgetBusy interface{ BusyUntil() time.Time }

// afterThrottle is implemented by such an answer when it came right after the API answered 429.
type afterThrottle interface{ AfterThrottle() bool }

// credentialsRejected is implemented by errors that mean a tenant's credentials are refused (wrong secret,
// wrong or revoked certificate): a condition of the tenant, not of the event.
type credentialsRejected interface{ CredentialsRejected() bool }

// retryable is implemented by every error type that knows whether trying again later may help.
type retryable interface{ Retryable() bool }

// failure turns the error that ended an event's work into its fate. It is the one classifier:
//   - shutdown hands the event back;
//   - rejected credentials make the event wait, uncounted;
//   - a permanent failure of the action (*command.ActionError) dead-letters it with the error's reason;
//   - an error that says it is not retryable dead-letters it (reason permanent_api_error);
//   - anything else (API 5xx/429, timeouts, NATS, the object store) is retried, until LR_MAX_DELIVER.
func (r *Relay) failure(ctx context.Context, d decision, err error) decision {
	d.err = err
	var (
		cr credentialsRejected
		ae *command.ActionError
		re retryable
	)
	switch {
	case ctx.Err() != nil:
		d.fate = fateHandBack
	case errors.As(err, &cr) && cr.CredentialsRejected():
		d.fate, d.delay = fateDefer, r.o.AuthRetryDelay
	case errors.As(err, &ae):
		d.fate, d.reason, d.target = fateDeadLetter, ae.Reason, ae.Target
	case errors.As(err, &re) && !re.Retryable():
		d.fate, d.reason = fateDeadLetter, ReasonPermanentAPIError
	default:
		d.fate = fateRetry
	}
	return d
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// failedDeliveries is the number of deliveries that counted toward LR_MAX_DELIVER: all of them, less those
// deferred on purpose (tenant gate, rejected credentials). The deferral record is only read once the raw
// count reaches the limit.
func (r *Relay) failedDeliveries(src msgSource) uint64 {
	n := src.deliveries
	if n < uint64(r.o.MaxDeliver) || r.o.Deferrals == nil {
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	deferred, err := r.o.Deferrals.Count(ctx, src.stream, src.sequence)
	if err != nil {
		r.log.Warn().Err(err).Msg("reading deferrals failed; counting every delivery")
		return n
	}
	return n - min(deferred, n)
}
