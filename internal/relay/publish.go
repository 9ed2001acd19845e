package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/command"
	"github.com/lr-relay/lr-relay/internal/result"
)

// headerRoom is what a published message's headers may take of the server's max payload (Nats-Msg-Id,
// Nats-Expected-Stream and the Lr- headers, all of bounded size).
const headerRoom = 4 << 10

// resultSubject is <prefix>.<tenant>.<actionId>.<index>. The action id is a GUID and the tenant name is
// checked when tenants are loaded, so every token is a valid subject token.
func (r *Relay) resultSubject(tenant, actionID string, index int) string {
	return fmt.Sprintf("%s.%s.%s.%d", r.o.Streams.ResultSubjectPrefix, tenant, strings.ToLower(actionID), index)
}

// MsgID is the Nats-Msg-Id of a result: <tenant>.<actionId>.<index>. The tenant is part of it because the
// action id comes from the event: two tenants naming the same action must not deduplicate each other.
func MsgID(tenant, actionID string, index int) string {
	return fmt.Sprintf("%s.%s.%d", tenant, strings.ToLower(actionID), index)
}

// commandLabel maps a command type from an event onto the closed set used in metric labels and headers.
func commandLabel(t string) string {
	switch t {
	case action.TypeRunScript, action.TypeGetFile, action.TypePutFile:
		return t
	}
	return "other"
}

// commandLabels and outcomes are the label values that metrics start at zero.
var (
	commandLabels = []string{action.TypeRunScript, action.TypeGetFile, action.TypePutFile, "other"}
	outcomes      = []string{result.OutcomeRelayed, result.OutcomeNoResult, result.OutcomeParseError, result.OutcomeTooLarge, result.OutcomeError}
)

// alreadyPublished asks the results stream whether a result is stored on subject, so that a redelivery
// spends no API call on a command whose result is stored. It is no longer what prevents a duplicate:
// publishResult makes the server refuse a second result on the subject whatever the duplicate window (see
// there), so a caller may skip this round trip where a stored result is unlikely (a first delivery). The
// subject holds the tenant, so one tenant's result never hides another's.
func (r *Relay) alreadyPublished(ctx context.Context, subject string) (bool, error) {
	_, err := r.results.GetLastMsgForSubject(ctx, subject)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	default:
		return false, err
	}
}

// invalidResultError means a result did not validate against schemas/result.schema.json: a bug. It is not
// retryable: the event is dead-lettered (reason permanent_api_error is not right for it, so it says internal).
type invalidResultError struct{ err error }

func (e *invalidResultError) Error() string {
	return "result does not match its schema: " + e.err.Error()
}
func (e *invalidResultError) Unwrap() error   { return e.err }
func (e *invalidResultError) Retryable() bool { return false }

func (r *Relay) publishResult(ctx context.Context, t command.Tenant, subject string, ev *result.Event) error {
	data, err := r.o.Commands.Encode(ctx, t, ev, r.o.MaxPayload-headerRoom)
	if err != nil {
		return err
	}
	if err := r.o.Validator.ValidateResult(data); err != nil {
		return &command.ActionError{Reason: ReasonInternal, Err: &invalidResultError{err: err}}
	}
	label := commandLabel(ev.CommandType)
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set("Lr-Action-Id", ev.ActionID)
	msg.Header.Set("Lr-Tenant", ev.Tenant)
	msg.Header.Set("Lr-Command-Type", label)
	msg.Header.Set("Lr-Outcome", ev.Outcome)
	start := time.Now()
	// Exactly one result per subject, enforced by the server in the same round trip as the publish:
	// Nats-Expected-Last-Subject-Sequence 0 means "only if nothing is stored on this subject". The duplicate
	// window (Nats-Msg-Id) only covers the first publishes within it; this covers a redelivery or an event
	// published again by the SOAR hours later, without a lookup before the work. A refusal means the result
	// is already stored (by an earlier delivery, or another replica racing on the same event): like a
	// duplicate, it is the success of the earlier publish.
	ack, err := r.o.JS.PublishMsg(ctx, msg,
		jetstream.WithMsgID(MsgID(ev.Tenant, ev.ActionID, ev.Index)),
		jetstream.WithExpectStream(r.o.Streams.ResultStream),
		jetstream.WithExpectLastSequencePerSubject(0))
	if resultStored(err) {
		r.metrics.duplicates.Inc()
		return nil
	}
	if err != nil {
		return err
	}
	if ack.Duplicate {
		r.metrics.duplicates.Inc()
		return nil
	}
	r.metrics.results.WithLabelValues(label, ev.Outcome).Inc()
	// The audit trail: one line per published result.
	r.log.Info().Str("tenant", ev.Tenant).Str("action_id", ev.ActionID).Int("index", ev.Index).
		Str("command_type", label).Str("outcome", ev.Outcome).Int("bytes", len(data)).
		Float64("publish_seconds", time.Since(start).Seconds()).Msg("result published")
	if r.o.OnResult != nil {
		r.o.OnResult(ev)
	}
	return nil
}

// resultStored reports whether a publish was refused because the subject already holds a message (the
// server's "wrong last sequence" answer to Nats-Expected-Last-Subject-Sequence; replicated streams answer with
// a code of their own).
func resultStored(err error) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return false
	}
	return api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

func (r *Relay) publishDeadLetter(ctx context.Context, dl *DeadLetter, payload []byte) error {
	data, err := r.encodeDeadLetter(ctx, dl, payload, r.o.MaxPayload-headerRoom)
	if err != nil {
		return err
	}
	if err := r.o.Validator.ValidateDeadLetter(data); err != nil {
		// A record that does not match its schema is still stored: losing the payload would be worse.
		r.log.Error().Err(err).Msg("dead-letter record does not match its schema; storing it anyway")
	}
	msg := &nats.Msg{Subject: r.o.Streams.DeadLetterSubject, Data: data, Header: nats.Header{}}
	msg.Header.Set("Lr-Reason", dl.Reason)
	id := fmt.Sprintf("dl.%s.%d", dl.Stream, dl.Sequence)
	if dl.Index != nil {
		id = fmt.Sprintf("%s.%d", id, *dl.Index)
	}
	_, err = r.o.JS.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(r.o.Streams.DeadLetterStream))
	return err
}

func sourceOf(src msgSource) *result.Source {
	if src.stream == "" {
		return nil
	}
	return &result.Source{Stream: src.stream, Sequence: src.sequence}
}

// sometimes returns the tenant's limiter of repeated warnings: a flood of events of one tenant with the same
// problem logs once a minute, not once an event.
func (r *Relay) sometimes(tenant string) *rate.Sometimes {
	s, _ := r.warnings.LoadOrStore(tenant, &rate.Sometimes{First: 1, Interval: time.Minute})
	return s.(*rate.Sometimes)
}
