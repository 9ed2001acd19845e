package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/internal/tenant"
	"github.com/lr-relay/lr-relay/schemas"
)

// TestRelayEndToEnd publishes the awkward samples and a batch of generated actions, and checks that every
// command gives exactly one schema-valid result, that nothing was throttled, and that no secret was logged.
func TestRelayEndToEnd(t *testing.T) {
	// Scaled time: the simulator enforces 100 calls per second and 300 per 5 seconds, and so must the relay;
	// ~190 link calls cross both windows.
	const limits = "100/1s,300/5s"
	e := newEnv(t, simulator.Config{LinkLimits: limits, ActionLimits: limits})
	samples := simulator.SampleActions(simulator.DefaultTenantID)
	gen := simulator.GenerateActions(60, 3, 4096, 11)
	actions := append(samples, gen...)
	for _, a := range actions {
		e.sim.AddAction(a)
	}
	commands := 0
	want := map[string]bool{}
	for _, a := range actions {
		for _, c := range a.MachineAction.Commands {
			commands++
			want[relay.MsgID(tenant.DefaultName, a.MachineAction.ID, c.Index)] = true
		}
	}
	cfg := e.config(t, map[string]string{"LR_WORKERS": "4", "LR_RATE_LIMITS": limits, "LR_ACTION_RATE_LIMITS": limits,
		"LR_QUOTA_SKEW_MARGIN": "200ms"})
	e.startRelay(t, cfg)
	e.publishActions(t, cfg, actions)

	waitFor(t, 60*time.Second, fmt.Sprintf("%d results", commands), func() bool {
		return e.streamMsgs(t, cfg.ResultStream) >= uint64(commands)
	})
	// Give a duplicate the chance to show up before counting.
	time.Sleep(300 * time.Millisecond)

	v, err := schemas.New()
	if err != nil {
		t.Fatal(err)
	}
	msgs := e.readAll(t, cfg.ResultStream)
	if len(msgs) != commands {
		t.Errorf("results stream holds %d messages, want exactly %d", len(msgs), commands)
	}
	seen := map[string]int{}
	outcomes := map[string]int{}
	for _, m := range msgs {
		if err := v.ValidateResult(m.Data); err != nil {
			t.Errorf("result %s does not validate: %v", m.Subject, err)
		}
		var ev result.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		id := relay.MsgID(ev.Tenant, ev.ActionID, ev.Index)
		seen[id]++
		outcomes[ev.Outcome]++
		if m.Header.Get("Nats-Msg-Id") != id {
			t.Errorf("result %s has Nats-Msg-Id %q, want %q", m.Subject, m.Header.Get("Nats-Msg-Id"), id)
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("command %s has %d results, want 1", id, seen[id])
		}
	}
	if outcomes[result.OutcomeRelayed] == 0 || outcomes[result.OutcomeNoResult] == 0 {
		t.Errorf("outcomes %v: want both relayed and no_result among the samples", outcomes)
	}
	st := e.sim.Stats()
	if st.Throttled != 0 || st.CallsDuringRetryAfter != 0 {
		t.Errorf("simulator saw %d 429s and %d calls during Retry-After, want 0", st.Throttled, st.CallsDuringRetryAfter)
	}
	if st.BlobAuthHeaders != 0 {
		t.Errorf("%d blob downloads carried an Authorization header", st.BlobAuthHeaders)
	}
	if e.streamMsgs(t, cfg.DeadLetterStream) != 0 {
		t.Errorf("dead-letter stream is not empty")
	}
	assertNoSecrets(t, e.logs.String(), simulator.DefaultClientSecret)
}

// TestBadEventsAreDeadLettered checks that each kind of bad input ends as one dead-letter record that keeps
// the original payload and names the reason, while good events keep flowing.
func TestBadEventsAreDeadLettered(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	forbidden := "0d0d0d0d-1111-4222-8333-444444444444"
	e.sim.AddAction(simulator.Action{Forbidden: true, MachineAction: simulator.GenerateActions(1, 1, 10, 3)[0].MachineAction})
	fa := simulator.GenerateActions(1, 1, 10, 5)[0]
	fa.MachineAction.ID = forbidden
	fa.Forbidden = true
	e.sim.AddAction(fa)
	good := simulator.GenerateActions(3, 2, 100, 9)
	for _, a := range good {
		e.sim.AddAction(a)
	}
	cfg := e.config(t, nil)
	e.startRelay(t, cfg)
	e.waitStream(t, cfg.SourceStream)

	bad := []struct {
		payload string
		reason  string
	}{
		{`{"id": "c0ffee00-0000-4000-8000-000000000001", "commands": [`, relay.ReasonInvalidJSON},
		{`["not", "an", "object"]`, relay.ReasonInvalidJSON},
		{`{"id": "not-a-guid"}`, relay.ReasonInvalidID},
		{`{"commands": []}`, relay.ReasonSchemaViolation},
		{`{"id": "c0ffee00-0000-4000-8000-000000000002", "commands": [{"index": -1}]}`, relay.ReasonSchemaViolation},
		{`{"id": "c0ffee00-0000-4000-8000-00000000dead"}`, relay.ReasonActionNotFound},
		{`{"id": "` + forbidden + `"}`, relay.ReasonForbidden},
		{`{"id": "c0ffee00-0000-4000-8000-000000000003", "tenantId": "11111111-2222-4333-8444-555555555555", "commands": []}`, relay.ReasonUnknownTenant},
	}
	for _, b := range bad {
		e.publishRaw(t, cfg, []byte(b.payload))
	}
	e.publishActions(t, cfg, good)

	waitFor(t, 30*time.Second, "dead letters", func() bool {
		return e.streamMsgs(t, cfg.DeadLetterStream) >= uint64(len(bad))
	})
	waitFor(t, 30*time.Second, "good results", func() bool {
		return e.streamMsgs(t, cfg.ResultStream) >= 6
	})
	v, err := schemas.New()
	if err != nil {
		t.Fatal(err)
	}
	msgs := e.readAll(t, cfg.DeadLetterStream)
	if len(msgs) != len(bad) {
		t.Fatalf("dead-letter stream holds %d records, want %d", len(msgs), len(bad))
	}
	byPayload := map[string]relay.DeadLetter{}
	for _, m := range msgs {
		if err := v.ValidateDeadLetter(m.Data); err != nil {
			t.Errorf("dead letter does not validate: %v", err)
		}
		var dl relay.DeadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			t.Fatal(err)
		}
		raw, err := base64.StdEncoding.DecodeString(dl.PayloadBase64)
		if err != nil {
			t.Fatal(err)
		}
		if dl.Stream != cfg.SourceStream || dl.Sequence == 0 || dl.Message == "" {
			t.Errorf("dead letter lacks its source or message: %+v", dl)
		}
		byPayload[string(raw)] = dl
	}
	for _, b := range bad {
		dl, ok := byPayload[b.payload]
		if !ok {
			t.Errorf("payload %s was not dead-lettered with its original bytes", b.payload)
			continue
		}
		if dl.Reason != b.reason {
			t.Errorf("payload %s: reason %q, want %q (message: %s)", b.payload, dl.Reason, b.reason, dl.Message)
		}
	}
	assertNoSecrets(t, e.logs.String(), simulator.DefaultClientSecret)
}

// TestMaxDeliverDeadLettersWithLastError keeps the API failing (500 on every call) and checks that each event
// is dead-lettered after exactly LR_MAX_DELIVER deliveries, with the last error in the record, and that
// nothing is published for it.
func TestMaxDeliverDeadLettersWithLastError(t *testing.T) {
	faults, err := simulator.ParseFaults("5xx=1")
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, simulator.Config{Faults: faults})
	actions := simulator.GenerateActions(3, 1, 100, 17)
	for _, a := range actions {
		e.sim.AddAction(a)
	}
	cfg := e.config(t, map[string]string{"LR_MAX_DELIVER": "3", "LR_RETRY_BACKOFF": "50ms"})
	e.startRelay(t, cfg)
	e.publishActions(t, cfg, actions)
	waitFor(t, 30*time.Second, "3 dead letters", func() bool { return e.streamMsgs(t, cfg.DeadLetterStream) >= 3 })
	time.Sleep(300 * time.Millisecond) // room for a wrong fourth delivery to show up

	for _, m := range e.readAll(t, cfg.DeadLetterStream) {
		var dl relay.DeadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			t.Fatal(err)
		}
		if dl.Reason != relay.ReasonMaxDeliveries || dl.Deliveries != 3 {
			t.Errorf("reason %q after %d deliveries, want %q after 3", dl.Reason, dl.Deliveries, relay.ReasonMaxDeliveries)
		}
		if !strings.Contains(dl.Message, "gave up after 3 deliveries") || !strings.Contains(dl.Message, "500") {
			t.Errorf("message %q does not carry the last error", dl.Message)
		}
		if dl.Index == nil || *dl.Index != 0 || dl.ActionID == "" {
			t.Errorf("record does not name the failing command: action %q index %v", dl.ActionID, dl.Index)
		}
	}
	if n := e.streamMsgs(t, cfg.DeadLetterStream); n != 3 {
		t.Errorf("%d dead letters, want 3", n)
	}
	if n := e.streamMsgs(t, cfg.ResultStream); n != 0 {
		t.Errorf("%d results published for failing events, want 0", n)
	}
}
