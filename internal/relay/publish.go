package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/result"
)

// invalidResultError means a result did not validate against schemas/result.schema.json: a bug, never
// published.
type invalidResultError struct{ err error }

func (e *invalidResultError) Error() string {
	return "result does not match its schema: " + e.err.Error()
}
func (e *invalidResultError) Unwrap() error { return e.err }

// resultSubject is <prefix>.<tenant>.<actionId>.<index>. The action id is a GUID and the tenant name is
// checked when tenants are loaded, so every token is a valid subject token.
func (r *Relay) resultSubject(tenant, actionID string, index int) string {
	return fmt.Sprintf("%s.%s.%s.%d", r.o.Streams.ResultSubjectPrefix, tenant, strings.ToLower(actionID), index)
}

// MsgID is the Nats-Msg-Id of a result: <actionId>.<index>.
func MsgID(actionID string, index int) string {
	return fmt.Sprintf("%s.%d", strings.ToLower(actionID), index)
}

// alreadyPublished asks the results stream whether a result is stored on subject. This, not the duplicate
// window, is what keeps a late redelivery from publishing twice.
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

func (r *Relay) publishResult(ctx context.Context, subject string, ev *result.Event) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return &invalidResultError{err: err}
	}
	if err := r.o.Validator.ValidateResult(data); err != nil {
		return &invalidResultError{err: err}
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set("Lr-Action-Id", ev.ActionID)
	msg.Header.Set("Lr-Command-Type", ev.CommandType)
	msg.Header.Set("Lr-Outcome", ev.Outcome)
	ack, err := r.o.JS.PublishMsg(ctx, msg,
		jetstream.WithMsgID(MsgID(ev.ActionID, ev.Index)),
		jetstream.WithExpectStream(r.o.Streams.ResultStream))
	if err != nil {
		return err
	}
	if ack.Duplicate {
		r.metrics.duplicates.Inc()
	} else {
		r.metrics.results.WithLabelValues(ev.CommandType, ev.Outcome).Inc()
	}
	if r.o.OnResult != nil && !ack.Duplicate {
		r.o.OnResult(ev)
	}
	return nil
}

func (r *Relay) publishDeadLetter(ctx context.Context, dl *DeadLetter) error {
	data, err := json.Marshal(dl)
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
