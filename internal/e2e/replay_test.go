package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/deadletters"
	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/internal/tenant"
)

// TestReplayAfterFixingTheCause dead-letters events for causes an operator can fix (the API answers 403 for
// an action the application may not read yet, and 404 for an action it does not know yet), fixes them, replays
// the dead letters with `lr-relay deadletters replay`'s code, and checks that every command then has exactly
// one result and that the dead-letter stream is empty.
func TestReplayAfterFixingTheCause(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	gen := simulator.GenerateActions(4, 2, 512, 23)
	forbidden, unknown := gen[:2], gen[2:]
	for _, a := range forbidden {
		a.Forbidden = true
		e.sim.AddAction(a)
	}
	cfg := e.config(t, map[string]string{"LR_WORKERS": "2"})
	e.startRelay(t, cfg)
	e.waitStream(t, cfg.SourceStream)
	e.publishActions(t, cfg, forbidden)
	for _, a := range unknown {
		// Without commands, the relay asks GET machineactions/{id}, which answers 404.
		e.publishRaw(t, cfg, []byte(fmt.Sprintf(`{"id":%q,"tenantId":%q}`, a.MachineAction.ID, a.MachineAction.TenantID)))
	}
	waitFor(t, 30*time.Second, "4 dead letters", func() bool { return e.streamMsgs(t, cfg.DeadLetterStream) >= 4 })

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tool := deadletters.New(e.js, deadletters.OptionsFrom(cfg))
	records, err := tool.List(ctx, deadletters.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	for _, r := range records {
		reasons[r.Record.Reason]++
	}
	if reasons[relay.ReasonForbidden] != 2 || reasons[relay.ReasonActionNotFound] != 2 || len(records) != 4 {
		t.Fatalf("dead letters by reason %v, want 2 forbidden and 2 action_not_found", reasons)
	}
	if n := e.streamMsgs(t, cfg.ResultStream); n != 0 {
		t.Fatalf("%d results before the fix, want 0", n)
	}

	// The fixes: permission granted, and the API now knows the actions.
	for _, a := range gen {
		a.Forbidden = false
		e.sim.AddAction(a)
	}
	var out bytes.Buffer
	rep, err := tool.Replay(ctx, deadletters.ReplayOptions{Rate: 50, Out: &out})
	if err != nil || rep.Replayed != 4 {
		t.Fatalf("replay: %+v, %v\n%s", rep, err, out.String())
	}
	// A second run finds nothing left: the records went with their PubAcks.
	if rep, err := tool.Replay(ctx, deadletters.ReplayOptions{Rate: 50}); err != nil || rep.Selected != 0 {
		t.Fatalf("second replay: %+v, %v", rep, err)
	}

	want := map[string]bool{}
	for _, a := range gen {
		for _, c := range a.MachineAction.Commands {
			want[relay.MsgID(tenant.DefaultName, a.MachineAction.ID, c.Index)] = true
		}
	}
	waitFor(t, 30*time.Second, fmt.Sprintf("%d results", len(want)), func() bool {
		return e.streamMsgs(t, cfg.ResultStream) >= uint64(len(want))
	})
	// Count only once the relay has finished with every event (nothing pending, nothing unacknowledged), so
	// a duplicate or a new dead letter would be there.
	waitFor(t, 30*time.Second, "every event acknowledged", func() bool {
		cons, err := e.js.Consumer(ctx, cfg.SourceStream, cfg.Consumer)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	seen := map[string]int{}
	for _, m := range e.readAll(t, cfg.ResultStream) {
		var ev result.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		seen[relay.MsgID(ev.Tenant, ev.ActionID, ev.Index)]++
		if ev.Outcome != result.OutcomeRelayed || ev.CommandType != action.TypeRunScript {
			t.Errorf("result %s: %s %s, want a relayed RunScript", m.Subject, ev.CommandType, ev.Outcome)
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("command %s has %d results, want exactly 1", id, seen[id])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("results for %d commands, want %d", len(seen), len(want))
	}
	if n := e.streamMsgs(t, cfg.DeadLetterStream); n != 0 {
		t.Errorf("dead-letter stream holds %d records after the replay, want 0", n)
	}
	replayed := 0
	for _, m := range e.readAll(t, cfg.SourceStream) {
		if m.Header.Get(deadletters.HeaderReplayOf) != "" {
			replayed++
		}
	}
	if replayed != 4 {
		t.Errorf("source stream holds %d replayed events, want 4", replayed)
	}
}
