package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/app"
	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/schemas"
)

// hostileText is text that JSON escapes to six bytes a character (control characters), mixed with the HTML
// characters that json.Marshal used to escape too.
func hostileText(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteByte(byte(1 + i%31))
		b.WriteString("<>&")
	}
	return b.String()[:n]
}

func jsonOutput(n int) string {
	var b strings.Builder
	b.WriteString(`{"items":[`)
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"n":%d,"s":"%s"}`, i, strings.Repeat("<&>", 10))
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestHostileTranscriptsAreRelayedFirstTime: outputs crafted by a compromised device to make the result too
// large to publish. Each command must give exactly one result on its first delivery, with one link call, and
// the whole output must be readable (inline or from the Object Store).
func TestHostileTranscriptsAreRelayedFirstTime(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	errs200k := hostileText(200 << 10)
	cases := []struct {
		name, output string
		errors       *string
	}{
		{name: "escape-heavy output of 150 KB", output: hostileText(150 << 10)},
		{name: "1 MB JSON output", output: jsonOutput(1 << 20)},
		{name: "200 KB of script_errors", output: "done", errors: &errs200k},
		{name: "all three", output: jsonOutput(1<<20) + hostileText(150<<10), errors: &errs200k},
		{name: "just under the inline cap", output: hostileText(64<<10 - 100), errors: ptrTo(hostileText(64<<10 - 100))},
	}
	a := simulator.GenerateActions(1, len(cases), 10, 91)[0]
	a.Results = map[int]simulator.Content{}
	for i, c := range cases {
		a.Results[i] = simulator.Content{Data: simulator.TranscriptJSON("triage.ps1", 0, "0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b", c.output, c.errors)}
	}
	e.sim.AddAction(a)
	cfg := e.config(t, map[string]string{"LR_RETRY_BACKOFF": "30s"}) // a retry would not come back in time
	e.startRelay(t, cfg)
	e.publishActions(t, cfg, []simulator.Action{a})
	e.waitResults(t, cfg, len(cases), 60*time.Second)
	e.waitSettled(t, cfg, 30*time.Second)
	if got := e.sim.Stats().LinkCalls; got != len(cases) {
		t.Errorf("%d link calls, want %d (one per command)", got, len(cases))
	}
	if n := e.streamMsgs(t, cfg.DeadLetterStream); n != 0 {
		t.Errorf("%d dead letters, want 0", n)
	}
	store := e.store(t, cfg.ObjectBucket)
	v, err := schemas.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range e.readAll(t, cfg.ResultStream) {
		if err := v.ValidateResult(m.Data); err != nil {
			t.Error(err)
		}
		var ev result.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		c := cases[ev.Index]
		if ev.Source == nil {
			t.Fatalf("%s: no source", c.name)
		}
		s := ev.Script
		output := s.Output
		if s.OutputObject != nil {
			r, err := store.Get(context.Background(), s.OutputObject.Name)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(r)
			_ = r.Close()
			if err != nil {
				t.Fatal(err)
			}
			output = string(b)
		}
		if output != c.output {
			t.Errorf("%s: output read back is %d bytes, want %d, the same", c.name, len(output), len(c.output))
		}
		t.Logf("%s: message %d bytes, outputTruncated=%v outputJsonOmitted=%v errorsTruncated=%v (errorsBytes %d)",
			c.name, len(m.Data), s.OutputTruncated, s.OutputJSONOmitted, s.ErrorsTruncated, s.ErrorsBytes)
	}
	if strings.Contains(e.logs.String(), "transient failure") {
		t.Error("an event was retried; every result must be published on the first delivery")
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestOversizedEventsAreDeadLettered: events that the relay must refuse, up to the server's max payload. Each
// ends as one dead-letter record within two deliveries, with the whole payload retrievable (inline, or from
// the Object Store with its digest).
func TestOversizedEventsAreDeadLettered(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	cfg := e.config(t, nil)
	e.startRelay(t, cfg)
	e.waitStream(t, cfg.SourceStream)
	maxPayload := int(e.nc.MaxPayload())
	valid := func(n int) []byte { // a valid event of exactly n bytes
		prefix, suffix := `{"id":"0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b","commands":[],"extra":"`, `"}`
		return []byte(prefix + strings.Repeat("x", n-len(prefix)-len(suffix)) + suffix)
	}
	payloads := map[string][]byte{
		"460 KB valid":             valid(460 << 10),
		"900 KB invalid JSON":      []byte(`{"id":"` + strings.Repeat("<", 900<<10)),
		"exactly max payload":      valid(maxPayload),
		"valid, every string long": []byte(`{"id":"0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5c","requestorComment":"` + strings.Repeat("c", 5000) + `"}`),
	}
	sums := map[string]string{}
	for name, p := range payloads {
		if name != "900 KB invalid JSON" && !json.Valid(p) {
			t.Fatalf("%s: the test payload is not JSON", name)
		}
		sum := sha256.Sum256(p)
		sums[hex.EncodeToString(sum[:])] = name
		e.publishRaw(t, cfg, p)
	}
	waitFor(t, 60*time.Second, "a dead letter per event", func() bool {
		return e.streamMsgs(t, cfg.DeadLetterStream) >= uint64(len(payloads))
	})
	e.waitSettled(t, cfg, 30*time.Second)
	store := e.store(t, cfg.ObjectBucket)
	for _, m := range e.readAll(t, cfg.DeadLetterStream) {
		if len(m.Data) > maxPayload {
			t.Errorf("record of %d bytes is over the max payload", len(m.Data))
		}
		var dl relay.DeadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			t.Fatal(err)
		}
		name, ok := sums[dl.PayloadSHA256]
		if !ok {
			t.Errorf("record with an unknown payload digest %s", dl.PayloadSHA256)
			continue
		}
		delete(sums, dl.PayloadSHA256)
		if dl.Deliveries > 2 {
			t.Errorf("%s: dead-lettered after %d deliveries, want at most 2", name, dl.Deliveries)
		}
		if dl.Reason != relay.ReasonInputTooLarge && dl.Reason != relay.ReasonInvalidJSON {
			t.Errorf("%s: reason %q (%s)", name, dl.Reason, dl.Message)
		}
		var (
			whole []byte
			err   error
		)
		if dl.PayloadObject != nil {
			r, err := store.Get(context.Background(), dl.PayloadObject.Name)
			if err != nil {
				t.Fatal(err)
			}
			whole, err = io.ReadAll(r)
			_ = r.Close()
			if err != nil {
				t.Fatal(err)
			}
		} else if whole, err = base64.StdEncoding.DecodeString(dl.PayloadBase64); err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(whole); hex.EncodeToString(got[:]) != dl.PayloadSHA256 || len(whole) != len(payloads[name]) {
			t.Errorf("%s: the payload read back (%d bytes) is not the original (%d bytes)", name, len(whole), len(payloads[name]))
		}
		t.Logf("%s: %s after %d deliveries, record %d bytes, payload in object store: %v", name, dl.Reason, dl.Deliveries, len(m.Data), dl.PayloadObject != nil)
	}
	if len(sums) != 0 {
		t.Errorf("no dead-letter record for %v", sums)
	}
	if calls := e.sim.Stats().LinkCalls + e.sim.Stats().ActionCalls; calls != 0 {
		t.Errorf("%d API calls for events that were over a bound, want 0", calls)
	}
}

// TestManyCommandsAndCommandTypes: a 2,000-command event is dead-lettered before any API call, and an event
// of 3,000 distinct command types (with the bounds raised to let it through) is relayed without adding a
// metric series per type.
func TestManyCommandsAndCommandTypes(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	reg := prometheus.NewRegistry()
	cfg := e.config(t, map[string]string{"LR_MAX_COMMANDS": "3000", "LR_MAX_EVENT_BYTES": "1000000"})
	e.startRelay(t, cfg, func(o *app.Options) { o.Registry = reg })
	many := func(n int, typ func(i int) string) []byte {
		a := action.MachineAction{ID: simulator.NewGUID(rand.New(rand.NewPCG(uint64(n), 9))), Status: "Succeeded"}
		for i := range n {
			a.Commands = append(a.Commands, action.Command{Index: i, CommandStatus: action.StatusCreated, Command: action.CommandSpec{Type: typ(i)}})
		}
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	e.waitStream(t, cfg.SourceStream)
	e.publishRaw(t, cfg, many(3000, func(i int) string { return fmt.Sprintf("Type%04d", i) }))
	e.waitResults(t, cfg, 3000, 120*time.Second)
	e.waitSettled(t, cfg, 30*time.Second)

	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	page := scrape(t, srv.URL)
	series := strings.Count(page, "\nlr_results_published_total{")
	if series > 4*5 {
		t.Errorf("lr_results_published_total has %d series, want at most 20 (4 command types x 5 outcomes)", series)
	}
	if !strings.Contains(page, `lr_results_published_total{command_type="other",outcome="no_result"} 3000`) {
		t.Errorf("the 3000 results are not counted under command_type=\"other\"")
	}
	t.Logf("/metrics is %d bytes with %d result series after 3000 distinct command types", len(page), series)
	if len(page) > 64<<10 {
		t.Errorf("/metrics is %d bytes, want it small", len(page))
	}

	// Default bound: 2000 commands is over LR_MAX_COMMANDS=100.
	strict := newEnv(t, simulator.Config{})
	scfg := strict.config(t, map[string]string{"LR_MAX_COMMANDS": "100", "LR_MAX_EVENT_BYTES": "262144"})
	strict.startRelay(t, scfg)
	strict.waitStream(t, scfg.SourceStream)
	strict.publishRaw(t, scfg, many(2000, func(int) string { return action.TypeRunScript }))
	waitFor(t, 30*time.Second, "the dead letter", func() bool { return strict.streamMsgs(t, scfg.DeadLetterStream) == 1 })
	var dl relay.DeadLetter
	if err := json.Unmarshal(strict.readAll(t, scfg.DeadLetterStream)[0].Data, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.Reason != relay.ReasonInputTooLarge || !strings.Contains(dl.Message, "LR_MAX_COMMANDS") {
		t.Errorf("2000 commands: reason %q (%s), want input_too_large naming LR_MAX_COMMANDS", dl.Reason, dl.Message)
	}
	if n := strict.streamMsgs(t, scfg.ResultStream); n != 0 {
		t.Errorf("%d results for a refused event", n)
	}
}

// TestTenantsSharingAnActionID: tenant beta names an action id of tenant alpha, whose large output alpha's
// credentials fetched and stored. Beta must never receive alpha's content: beta's own call finds no such
// action, and the event is dead-lettered as action_not_found.
func TestTenantsSharingAnActionID(t *testing.T) {
	alpha := quotaTenant{"alpha", "aaaaaaaa-0000-4000-8000-00000000000a", "client-alpha", "secret-alpha", "100/1s"}
	beta := quotaTenant{"beta", "bbbbbbbb-0000-4000-8000-00000000000b", "client-beta", "secret-beta", "100/1s"}
	e, extra := quotaTenantsEnv(t, "100/1s", []quotaTenant{alpha, beta})
	cfg := e.config(t, extra)
	e.startRelay(t, cfg)
	script, _ := bigActions(200<<10, 0)
	script.MachineAction.TenantID = alpha.id
	e.sim.AddAction(script)
	e.publishActions(t, cfg, []simulator.Action{script})
	e.waitResults(t, cfg, 1, 30*time.Second)
	stolen := script.MachineAction
	stolen.TenantID = beta.id
	b, err := json.Marshal(stolen)
	if err != nil {
		t.Fatal(err)
	}
	e.publishRaw(t, cfg, b)
	waitFor(t, 30*time.Second, "beta's event settled", func() bool { return e.streamMsgs(t, cfg.DeadLetterStream) == 1 })
	for _, m := range e.readAll(t, cfg.ResultStream) {
		if strings.Contains(m.Subject, "."+beta.name+".") {
			t.Errorf("beta received a result for alpha's action: %s", m.Subject)
		}
	}
	var dl relay.DeadLetter
	if err := json.Unmarshal(e.readAll(t, cfg.DeadLetterStream)[0].Data, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.Reason != relay.ReasonActionNotFound || dl.Tenant != beta.name {
		t.Errorf("beta's event: reason %q tenant %q, want action_not_found for beta", dl.Reason, dl.Tenant)
	}
}

// TestUnknownActionOnLinkCall: a link 404 is confirmed with the action call. An action the API does not know
// is dead-lettered as action_not_found; a known action without a result for the index gets a result.
func TestUnknownActionOnLinkCall(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	cfg := e.config(t, nil)
	e.startRelay(t, cfg)
	known := simulator.GenerateActions(1, 2, 100, 93)[0]
	delete(known.Results, 1) // the API knows the action, but has no result for index 1
	e.sim.AddAction(known)
	unknown := simulator.GenerateActions(1, 1, 100, 94)[0] // never added to the simulator
	e.publishActions(t, cfg, []simulator.Action{known, unknown})
	waitFor(t, 30*time.Second, "two results and a dead letter", func() bool {
		return e.streamMsgs(t, cfg.ResultStream) == 2 && e.streamMsgs(t, cfg.DeadLetterStream) == 1
	})
	for _, m := range e.readAll(t, cfg.ResultStream) {
		var ev result.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.ActionID != known.MachineAction.ID {
			t.Errorf("a result for the unknown action")
		}
		if ev.Index == 1 && (ev.Problem == nil || ev.Problem.Code != "no_result_link") {
			t.Errorf("known action, index 1: outcome %q problem %+v, want no_result_link", ev.Outcome, ev.Problem)
		}
	}
	var dl relay.DeadLetter
	if err := json.Unmarshal(e.readAll(t, cfg.DeadLetterStream)[0].Data, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.Reason != relay.ReasonActionNotFound || !strings.EqualFold(dl.ActionID, unknown.MachineAction.ID) {
		t.Errorf("unknown action: reason %q for %s, want action_not_found", dl.Reason, dl.ActionID)
	}
}

// TestSlowDripIsRetriedThenDeadLettered serves the result as a drip (16 bytes every 200 ms): each delivery's
// download is abandoned at LR_DOWNLOAD_TOTAL_TIMEOUT, the event is retried, and after LR_MAX_DELIVER
// deliveries it is dead-lettered with the bound in its message. (The rate floor is tested in
// internal/download: it needs 30 s of drip.)
func TestSlowDripIsRetriedThenDeadLettered(t *testing.T) {
	e := newEnv(t, simulator.Config{Faults: simulator.Faults{SlowDrip: 1, SlowDripDelay: 200 * time.Millisecond, SlowDripChunk: 16}})
	actions := simulator.GenerateActions(1, 1, 64<<10, 77)
	e.sim.AddAction(actions[0])
	cfg := e.config(t, map[string]string{"LR_MAX_DELIVER": "2", "LR_RETRY_BACKOFF": "50ms", "LR_ACK_WAIT": "3s",
		"LR_DOWNLOAD_TIMEOUT": "1s", "LR_DOWNLOAD_TOTAL_TIMEOUT": "1s", "LR_DOWNLOAD_MIN_RATE": "0"})
	e.startRelay(t, cfg)
	e.publishActions(t, cfg, actions)
	waitFor(t, 30*time.Second, "a dead letter", func() bool { return e.streamMsgs(t, cfg.DeadLetterStream) >= 1 })
	var dl relay.DeadLetter
	if err := json.Unmarshal(e.readAll(t, cfg.DeadLetterStream)[0].Data, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.Reason != relay.ReasonMaxDeliveries || dl.Deliveries != 2 || !strings.Contains(dl.Message, "total timeout of 1s") {
		t.Errorf("reason %q after %d deliveries (%s); want max_deliveries after 2 naming the total timeout", dl.Reason, dl.Deliveries, dl.Message)
	}
	if n := e.streamMsgs(t, cfg.ResultStream); n != 0 {
		t.Errorf("%d results, want 0", n)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
