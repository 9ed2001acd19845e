package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/mde"
)

// fate is what happens to a source message once its work is over.
type fate int

const (
	fateAck        fate = iota // every result has its PubAck
	fateRetry                  // transient failure: NakWithDelay on the backoff schedule
	fateDeadLetter             // permanent failure: dead-letter record, then Term
	fateHandBack               // shutdown interrupted the work: NakWithDelay(short) for another replica
)

type decision struct {
	fate    fate
	reason  string // dead-letter reason code
	err     error
	actID   string
	index   *int
	tenant  string
	target  string
	results int
}

// handle is the one place that decides a source message's fate. The rules:
//   - ack only after every result of the event has its PubAck;
//   - a transient failure is retried with NakWithDelay (never a bare Nak), until LR_MAX_DELIVER deliveries,
//     after which the event is dead-lettered with its last error;
//   - a permanent failure is dead-lettered, and the message is terminated only after the dead-letter record
//     has its PubAck (if that publish fails, the message is retried instead);
//   - work cut short by shutdown is handed back with a short delay.
func (r *Relay) handle(ctx context.Context, msg jetstream.Msg) {
	start := time.Now()
	src := msgSource{subject: msg.Subject()}
	if meta, err := msg.Metadata(); err == nil {
		src.stream, src.sequence, src.deliveries = meta.Stream, meta.Sequence.Stream, meta.NumDelivered
	}
	r.metrics.inflight.Inc()
	defer r.metrics.inflight.Dec()

	stop := r.keepAlive(msg)
	d := r.decide(ctx, msg.Data(), src)
	stop()

	if d.fate == fateRetry && r.failedDeliveries(src) >= uint64(r.o.MaxDeliver) {
		d = decision{fate: fateDeadLetter, reason: ReasonMaxDeliveries, actID: d.actID, index: d.index, tenant: d.tenant,
			err: fmt.Errorf("gave up after %d deliveries; last error: %w", src.deliveries, d.err)}
	}
	r.settle(msg, src, d)
	r.metrics.eventDuration.Observe(time.Since(start).Seconds())
}

func (r *Relay) settle(msg jetstream.Msg, src msgSource, d decision) {
	log := r.log.With().Str("stream", src.stream).Uint64("seq", src.sequence).Uint64("delivered", src.deliveries).
		Str("action_id", d.actID).Logger()
	// Settling uses its own short context: it must happen even while shutting down.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch d.fate {
	case fateAck:
		if err := msg.DoubleAck(ctx); err != nil {
			// The results are stored; a redelivery finds them and publishes nothing twice.
			log.Warn().Err(err).Msg("ack not confirmed; a redelivery will be recognised as done")
		}
		r.metrics.events.WithLabelValues("relayed").Inc()
		log.Debug().Int("results", d.results).Msg("event relayed")
	case fateRetry:
		delay := r.backoff(src.deliveries)
		if err := msg.NakWithDelay(delay); err != nil {
			log.Warn().Err(err).Msg("nak failed; the ack wait will redeliver")
		}
		r.metrics.events.WithLabelValues("retried").Inc()
		log.Warn().Err(d.err).Dur("retry_in", delay).Msg("transient failure; event handed back")
	case fateHandBack:
		if err := msg.NakWithDelay(time.Second); err != nil {
			log.Warn().Err(err).Msg("hand-back nak failed; the ack wait will redeliver")
		}
		r.metrics.events.WithLabelValues("handed_back").Inc()
		log.Info().Msg("shutdown: in-flight event handed back")
	case fateDeadLetter:
		dl := newDeadLetter(d.reason, errText(d.err), msg.Data(), src, time.Now())
		dl.ActionID, dl.Index, dl.TenantID, dl.Target = d.actID, d.index, d.tenant, d.target
		if err := r.publishDeadLetter(ctx, dl); err != nil {
			delay := r.backoff(src.deliveries)
			_ = msg.NakWithDelay(delay)
			r.metrics.events.WithLabelValues("retried").Inc()
			log.Error().Err(err).Str("reason", d.reason).Msg("dead-letter publish failed; event kept for retry")
			return
		}
		if err := msg.TermWithReason(d.reason); err != nil {
			log.Warn().Err(err).Msg("term failed; a redelivery will dead-letter again (deduplicated)")
		}
		r.metrics.events.WithLabelValues("dead_lettered").Inc()
		r.metrics.deadLetters.WithLabelValues(d.reason).Inc()
		log.Warn().Str("reason", d.reason).Str("error", dl.Message).Msg("event dead-lettered")
		if r.o.OnDeadLetter != nil {
			r.o.OnDeadLetter(dl)
		}
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// decide does the work of one event and says what its fate is.
func (r *Relay) decide(ctx context.Context, payload []byte, src msgSource) decision {
	if src.deliveries > uint64(r.o.MaxDeliver) && r.failedDeliveries(src) > uint64(r.o.MaxDeliver) {
		// The previous delivery ended without a verdict (the process died): do not try again forever.
		return decision{fate: fateDeadLetter, reason: ReasonMaxDeliveries,
			err: fmt.Errorf("delivered %d times, more than LR_MAX_DELIVER=%d; the previous attempts ended without a verdict", src.deliveries, r.o.MaxDeliver)}
	}
	a, d, ok := r.parseEvent(payload)
	if !ok {
		return d
	}
	tenant, found := r.o.Router(a.TenantID)
	if !found {
		return decision{fate: fateDeadLetter, reason: ReasonUnknownTenant, actID: a.ID, tenant: a.TenantID,
			err: fmt.Errorf("tenantId %q is not a configured tenant (see LR_TENANTS_FILE)", a.TenantID)}
	}
	if !a.HasCommands {
		fetched, err := tenant.API.GetAction(ctx, a.ID)
		if err != nil {
			return r.failure(ctx, err, a, nil)
		}
		a.Commands, a.HasCommands = fetched.Commands, true
		fillMissing(a, fetched)
	}
	published := 0
	for _, c := range a.Commands {
		subject := r.resultSubject(tenant.Name, a.ID, c.Index)
		done, err := r.alreadyPublished(ctx, subject)
		if err != nil {
			return r.failure(ctx, fmt.Errorf("checking results stream for %s: %w", subject, err), a, &c.Index)
		}
		if done {
			r.metrics.skipped.Inc()
			continue
		}
		ev, err := r.o.Processor.Result(ctx, tenant.API, tenant.Name, a, c)
		if err != nil {
			return r.failure(ctx, fmt.Errorf("command %d (%s): %w", c.Index, c.Command.Type, err), a, &c.Index)
		}
		ev.Source = sourceOf(src)
		if err := r.publishResult(ctx, subject, ev); err != nil {
			var ve *invalidResultError
			if errors.As(err, &ve) {
				idx := c.Index
				return decision{fate: fateDeadLetter, reason: ReasonInternal, actID: a.ID, index: &idx, tenant: a.TenantID, err: err}
			}
			return r.failure(ctx, fmt.Errorf("publishing result %s: %w", subject, err), a, &c.Index)
		}
		published++
	}
	return decision{fate: fateAck, actID: a.ID, tenant: a.TenantID, results: published}
}

// parseEvent checks the payload: JSON, then the id, then the schema.
func (r *Relay) parseEvent(payload []byte) (*action.MachineAction, decision, bool) {
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
		return nil, decision{fate: fateDeadLetter, reason: ReasonSchemaViolation, actID: id,
			err: fmt.Errorf("event does not match schemas/event.schema.json: %w", err)}, false
	}
	var a action.MachineAction
	if err := json.Unmarshal(payload, &a); err != nil {
		return nil, decision{fate: fateDeadLetter, reason: ReasonSchemaViolation, actID: id,
			err: fmt.Errorf("event fields have the wrong types: %w", err)}, false
	}
	a.HasCommands = len(probe.Commands) > 0 && string(probe.Commands) != "null"
	return &a, decision{}, true
}

// failure turns an error into a decision: permanent API answers are dead-lettered, shutdown hands the event
// back, everything else is retried.
func (r *Relay) failure(ctx context.Context, err error, a *action.MachineAction, index *int) decision {
	d := decision{fate: fateRetry, err: err, actID: a.ID, tenant: a.TenantID, index: index}
	if ctx.Err() != nil {
		d.fate = fateHandBack
		return d
	}
	var ae *mde.APIError
	if errors.As(err, &ae) {
		d.target = ae.Target
		if !ae.Retryable() {
			d.fate = fateDeadLetter
			switch ae.Status {
			case 404:
				d.reason = ReasonActionNotFound
			case 403:
				d.reason = ReasonForbidden
			default:
				d.reason = ReasonPermanentAPIError
			}
		}
	}
	return d
}

func fillMissing(a, from *action.MachineAction) {
	if a.Status == "" {
		a.Status = from.Status
	}
	if a.MachineID == "" {
		a.MachineID = from.MachineID
	}
	if a.ComputerDNSName == "" {
		a.ComputerDNSName = from.ComputerDNSName
	}
	if a.Requestor == "" {
		a.Requestor = from.Requestor
	}
	if a.Type == "" {
		a.Type = from.Type
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// failedDeliveries is the number of deliveries that counted toward LR_MAX_DELIVER: all of them, less those the
// tenant gate deferred on purpose. The deferral record is only read once the raw count reaches the limit.
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
