package relay

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/command"
	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
	"github.com/lr-relay/lr-relay/internal/result"
)

// TestPublishResultOncePerSubject checks that the server refuses a second result on a subject whatever the
// duplicate window says: a result stored long ago (here: under another Nats-Msg-Id, which the window cannot
// match) is not published again, and the refusal counts as the earlier publish's success. This is what keeps
// an event published again hours later, or redelivered after its results were stored, from duplicating a
// result, even without the lookup before the work.
func TestPublishResultOncePerSubject(t *testing.T) {
	js := embeddedtest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RESULTS", Subjects: []string{"res.>"},
		Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	r := newTestRelay(t)
	r.o.JS = js
	r.o.Streams.ResultStream = "RESULTS"
	r.o.Streams.ResultSubjectPrefix = "res"
	r.o.MaxPayload = 1 << 20
	r.o.Commands = command.New(nil, nil, command.Options{PreviewBytes: 1024}, zerolog.Nop())
	tn := command.Tenant{Name: "default"}
	event := func(actionID string) *result.Event {
		return &result.Event{SchemaVersion: result.SchemaVersion, ActionID: actionID, Tenant: "default",
			TenantID: "0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", CommandType: "PutFile", CommandStatus: "Completed",
			EventTime: time.Now().UTC(), Outcome: result.OutcomeNoResult, RelayedAt: time.Now().UTC(), RelayVersion: "test"}
	}
	stored := func(subject string) uint64 {
		t.Helper()
		info, err := js.Stream(ctx, "RESULTS")
		if err != nil {
			t.Fatal(err)
		}
		si, err := info.Info(ctx, jetstream.WithSubjectFilter(subject))
		if err != nil {
			t.Fatal(err)
		}
		return si.State.Subjects[subject]
	}

	// A fresh subject: published.
	id := "1b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
	subject := r.resultSubject("default", id, 0)
	if err := r.publishResult(ctx, tn, subject, event(id)); err != nil {
		t.Fatal(err)
	}
	// The same result again (a retry within the window): not stored twice.
	if err := r.publishResult(ctx, tn, subject, event(id)); err != nil {
		t.Fatalf("second publish of a stored result: %v, want nil (already stored)", err)
	}
	if n := stored(subject); n != 1 {
		t.Fatalf("subject holds %d results after two publishes, want 1", n)
	}

	// A result stored where the duplicate window cannot see it (another message id, as after the window).
	id2 := "2b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
	subject2 := r.resultSubject("default", id2, 0)
	old := nats.NewMsg(subject2)
	old.Data = []byte(`{"stored":"long ago"}`)
	if _, err := js.PublishMsg(ctx, old, jetstream.WithMsgID("outside-the-window")); err != nil {
		t.Fatal(err)
	}
	before := testutil.ToFloat64(r.metrics.duplicates)
	if err := r.publishResult(ctx, tn, subject2, event(id2)); err != nil {
		t.Fatalf("publish over a stored result: %v, want nil (already stored)", err)
	}
	if n := stored(subject2); n != 1 {
		t.Errorf("subject holds %d results, want the 1 stored before", n)
	}
	if got := testutil.ToFloat64(r.metrics.duplicates) - before; got != 1 {
		t.Errorf("lr_results_duplicate_total rose by %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.metrics.results.WithLabelValues("PutFile", result.OutcomeNoResult)); got != 1 {
		t.Errorf("lr_results_total{PutFile,no_result} = %v, want 1 (the first publish only)", got)
	}
}
