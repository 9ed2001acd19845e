package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/internal/tenant"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

// The delivery guarantee under test ("nothing lost, nothing duplicated"): every command of every finished
// event ends either as exactly one result event in the results stream, or as one dead-letter record (of its
// action) with its reason, whatever crashes, restarts, node losses and API faults happen meanwhile.

// scaledLimits are the throttle windows of the simulator and of the relay in most of these tests: high
// enough that they do not slow a run of a few thousand commands down (it makes a few hundred calls a second),
// so Throttled == 0 there shows that faults cause no spurious 429s. TestCrashedReplicaLosesNothing uses a
// limit that binds.
const scaledLimits = "2000/1s"

// loadVars are the LR_ variables of a relay under load: scaled limits, short retries and ack wait, and a
// LR_MAX_DELIVER high enough that faults do not dead-letter anything by themselves.
func loadVars(extra map[string]string) map[string]string {
	vars := map[string]string{
		"LR_WORKERS":            "8",
		"LR_RATE_LIMITS":        scaledLimits,
		"LR_ACTION_RATE_LIMITS": scaledLimits,
		"LR_QUOTA_SKEW_MARGIN":  "50ms",
		"LR_RETRY_BACKOFF":      "100ms,300ms,1s",
		"LR_MAX_DELIVER":        "20",
		"LR_ACK_WAIT":           "2s",
		"LR_SHUTDOWN_TIMEOUT":   "2s",
		"LR_LOG_LEVEL":          "info",
	}
	for k, v := range extra {
		vars[k] = v
	}
	return vars
}

// tally is what verify counts after a run.
type tally struct {
	Commands    int // commands of the published events
	Messages    int // messages in the results stream
	Results     int // unique <actionId>.<index> among them that belong to a published command
	DeadLetters int // dead-letter records
	Duplicates  int // Messages - Results: more than one message for a command
	Lost        int // commands without a result whose action has no dead-letter record either
	Unexpected  int // results for commands nobody published, or whose Nats-Msg-Id does not match
	Throttled   int // 429s the simulator answered
	DuringRA    int // calls that reached the simulator while a Retry-After was in force
	Storms      int // 429 storms the simulator started
	// Reasons counts the dead-letter records by reason.
	Reasons map[string]int
}

func (c tally) String() string {
	return fmt.Sprintf("commands=%d results=%d (messages=%d) dead_letters=%d %v duplicates=%d lost=%d unexpected=%d throttled=%d storms=%d calls_during_retry_after=%d",
		c.Commands, c.Results, c.Messages, c.DeadLetters, c.Reasons, c.Duplicates, c.Lost, c.Unexpected, c.Throttled, c.Storms, c.DuringRA)
}

// verify reads the results and dead-letter streams in full and counts, for the commands of actions, results,
// dead letters, duplicates and lost commands, plus the simulator's throttle counters. It logs the figures.
func verify(t *testing.T, e *env, cfg config.Config, actions []simulator.Action) tally {
	t.Helper()
	want := map[string]string{} // command id -> action id
	for _, a := range actions {
		for _, c := range a.MachineAction.Commands {
			want[relay.MsgID(tenant.DefaultName, a.MachineAction.ID, c.Index)] = strings.ToLower(a.MachineAction.ID)
		}
	}
	c := tally{Commands: len(want), Reasons: map[string]int{}}

	seen := map[string]int{}
	for _, m := range readStream(t, e.js, cfg.ResultStream) {
		c.Messages++
		var ev result.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Errorf("result %s is not JSON: %v", m.Subject(), err)
			c.Unexpected++
			continue
		}
		id := relay.MsgID(ev.Tenant, ev.ActionID, ev.Index)
		if _, ok := want[id]; !ok || m.Headers().Get("Nats-Msg-Id") != id {
			c.Unexpected++
			continue
		}
		seen[id]++
	}
	c.Results = len(seen)
	c.Duplicates = c.Messages - c.Unexpected - c.Results

	deadActions := map[string]bool{}
	for _, m := range readStream(t, e.js, cfg.DeadLetterStream) {
		c.DeadLetters++
		var dl relay.DeadLetter
		if err := json.Unmarshal(m.Data(), &dl); err != nil {
			t.Errorf("dead letter is not JSON: %v", err)
			continue
		}
		c.Reasons[dl.Reason]++
		if c.DeadLetters <= 5 {
			t.Logf("dead letter: action %s index %v reason %s after %d deliveries: %s", dl.ActionID, dl.Index, dl.Reason, dl.Deliveries, dl.Message)
		}
		id := dl.ActionID
		if id == "" { // decided before the payload was parsed: take the id from the payload itself
			var p struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(dl.PayloadJSON, &p)
			id = p.ID
		}
		deadActions[strings.ToLower(id)] = true
	}
	for id, act := range want {
		if seen[id] == 0 && !deadActions[act] {
			c.Lost++
		}
	}
	st := e.sim.Stats()
	c.Throttled, c.DuringRA, c.Storms = st.Throttled, st.CallsDuringRetryAfter, st.FaultsInjected[simulator.FaultStorm]
	t.Logf("delivery: %s", c)
	return c
}

// expect states what a scenario accepts besides the guarantee itself (no loss, no duplicate, no call
// during Retry-After, nothing unexpected).
type expect struct {
	deadLetters bool // dead letters are acceptable (otherwise there must be none)
	throttled   bool // 429s are acceptable (a storm); otherwise the relay must not meet any
	// inFlight is how many calls may already be on the wire when a storm begins, and so reach the
	// simulator inside its Retry-After through no fault of the relay: LR_WORKERS-1 for one process (each
	// other worker holds at most one call granted before the 429 arrived; its own 429 then pauses it too).
	// Zero demands no call during a Retry-After at all.
	inFlight int
}

func (c tally) check(t *testing.T, x expect) {
	t.Helper()
	if c.Lost != 0 {
		t.Errorf("lost %d of %d commands (no result, no dead letter), want 0", c.Lost, c.Commands)
	}
	if c.Duplicates != 0 {
		t.Errorf("results stream holds %d messages for %d commands: %d duplicates, want 0", c.Messages-c.Unexpected, c.Results, c.Duplicates)
	}
	if c.Unexpected != 0 {
		t.Errorf("%d results belong to no published command or carry a wrong Nats-Msg-Id, want 0", c.Unexpected)
	}
	if allowed := c.Storms * x.inFlight; c.DuringRA > allowed {
		t.Errorf("the simulator saw %d calls during a Retry-After, want at most %d (%d storms × %d calls in flight)",
			c.DuringRA, allowed, c.Storms, x.inFlight)
	}
	if !x.throttled && c.Throttled != 0 {
		t.Errorf("the simulator answered %d calls with 429, want 0", c.Throttled)
	}
	if !x.deadLetters && c.DeadLetters != 0 {
		t.Errorf("%d dead letters %v, want 0", c.DeadLetters, c.Reasons)
	}
}

// readStream returns every message of a stream, read with an ordered consumer (one request per batch, not
// per message, so a few thousand messages read in well under a second). Right after a node loss the cluster
// may not answer for a moment: a failed read starts over, for up to 30 seconds.
func readStream(t *testing.T, js jetstream.JetStream, name string) []jetstream.Msg {
	t.Helper()
	var msgs []jetstream.Msg
	testutil.Eventually(t, 30*time.Second, func() error {
		var err error
		msgs, err = tryReadStream(js, name)
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", name, err)
		}
		return nil
	})
	return msgs
}

func tryReadStream(js jetstream.JetStream, name string) ([]jetstream.Msg, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	total := info.State.Msgs
	var out []jetstream.Msg
	if total == 0 {
		return out, nil
	}
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("ordered consumer: %w", err)
	}
	for uint64(len(out)) < total {
		batch, err := oc.Fetch(int(min(total-uint64(len(out)), 500)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m)
			n++
		}
		if n == 0 {
			return nil, fmt.Errorf("got %d of %d messages, then nothing (%v)", len(out), total, batch.Error())
		}
	}
	return out, nil
}

// load generates n actions of 3 small RunScript commands, registers them with the simulator and counts
// their commands.
func (e *env) load(n int, seed int64) ([]simulator.Action, int) {
	actions := simulator.GenerateActions(n, 3, 256, seed)
	for _, a := range actions {
		e.sim.AddAction(a)
	}
	return actions, 3 * n
}

// waitSettled waits until the durable consumer has nothing pending and nothing unacknowledged: every event
// has been acked or terminated (dead-lettered). It fails after timeout without progress.
func (e *env) waitSettled(t *testing.T, cfg config.Config, timeout time.Duration) {
	t.Helper()
	var last string
	lastChange := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err := e.js.Consumer(ctx, cfg.SourceStream, cfg.Consumer)
		var ci *jetstream.ConsumerInfo
		if err == nil {
			ci, err = info.Info(ctx)
		}
		cancel()
		state := fmt.Sprint(err)
		if err == nil {
			if ci.NumPending == 0 && ci.NumAckPending == 0 && ci.Delivered.Stream > 0 {
				return
			}
			state = fmt.Sprintf("pending=%d ack_pending=%d delivered=%d results=%d", ci.NumPending, ci.NumAckPending,
				ci.Delivered.Stream, e.streamMsgs(t, cfg.ResultStream))
		}
		if state != last {
			last, lastChange = state, time.Now()
		}
		if time.Since(lastChange) > timeout {
			t.Fatalf("no progress for %s: consumer %s", timeout, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitResults waits until the results stream holds at least n messages.
func (e *env) waitResults(t *testing.T, cfg config.Config, n int, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d results", n), func() bool {
		return e.streamMsgs(t, cfg.ResultStream) >= uint64(n)
	})
}

// TestCrashedReplicaLosesNothing runs three lr-relay processes on the shared consumer and SIGKILLs one of
// them several times mid-run, starting a fresh process each time: the killed process's in-flight events are
// redelivered after the ack wait, and must end as exactly one result per command.
func TestCrashedReplicaLosesNothing(t *testing.T) {
	// Unlike the other tests, the limit binds here (3000 link calls take at least 12 seconds), so the
	// grants of a killed process must keep counting in the shared quota for the others. The margin absorbs
	// the scheduling jitter between a grant in a relay process and the call's arrival at the simulator.
	const limits = "250/1s"
	e := newEnv(t, simulator.Config{LinkLimits: limits, ActionLimits: limits})
	actions, commands := e.load(1000, 101)
	// Debug logs say, per event, on which delivery it was relayed and how many results that delivery
	// published, which shows that the kills hit work in flight.
	vars := loadVars(map[string]string{"LR_LOG_LEVEL": "debug", "LR_RATE_LIMITS": limits, "LR_ACTION_RATE_LIMITS": limits,
		"LR_QUOTA_SKEW_MARGIN": "100ms"})
	cfg := e.config(t, vars)
	procs := []*proc{e.startProc(t, "a0", vars), e.startProc(t, "b", vars), e.startProc(t, "c", vars)}
	e.publishActions(t, cfg, actions)

	const kills = 4
	for i := 1; i <= kills; i++ {
		// Kill at evenly spaced points of the run, so that each victim has work in flight.
		e.waitResults(t, cfg, i*commands/(kills+2), 120*time.Second)
		victim := procs[0]
		victim.kill()
		if !victim.wait(10 * time.Second) {
			t.Fatalf("%s did not die on SIGKILL", victim.name)
		}
		procs[0] = e.startProc(t, fmt.Sprintf("a%d", i), vars)
	}
	e.waitSettled(t, cfg, 60*time.Second)
	for _, p := range procs {
		if p.exited() {
			t.Errorf("%s exited on its own: %v\n%s", p.name, p.err, p.tail(20))
		}
	}
	verify(t, e, cfg, actions).check(t, expect{})
	t.Logf("busiest second: %d link calls (limit %s)",
		simulator.MaxInWindow(e.sim.Admitted(simulator.DefaultTenantID, simulator.EndpointLinks), time.Second), limits)
	redelivered, resumed := redeliveries(e.logs.String())
	t.Logf("%d events relayed on a redelivery after a kill, %d of them with results already stored", redelivered, resumed)
	if redelivered == 0 {
		t.Errorf("no event was redelivered: the kills hit no work in flight, and the test proved nothing")
	}
}

// redeliveries reads the relay's debug logs and counts the events relayed on a second or later delivery,
// and among them those whose earlier delivery had already stored some of their results.
func redeliveries(logs string) (redelivered, resumed int) {
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, `"event relayed"`) {
			continue
		}
		var ev struct {
			Delivered int `json:"delivered"`
			Results   int `json:"results"`
		}
		if json.Unmarshal([]byte(line), &ev) != nil || ev.Delivered < 2 {
			continue
		}
		redelivered++
		if ev.Results < 3 {
			resumed++
		}
	}
	return redelivered, resumed
}

// TestFaultModes runs an in-process relay against each simulator fault mode alone and all of them together.
// Each subtest relays 150 actions of 3 commands (450 commands, fewer than the process tests, so that the
// subtests stay short under -race).
//
// The 429 storm runs with one worker, where the relay can and must keep every call out of the Retry-After.
// With eight workers ("all together") a storm can begin while other workers' calls are already on the wire;
// those reach the simulator inside the Retry-After whatever the relay does, so there the bound is one such
// call per other worker and storm.
func TestFaultModes(t *testing.T) {
	const workers = 8
	tests := []struct {
		name   string
		faults string
		vars   map[string]string
		// tokenTTL, when set, makes the simulator issue short-lived tokens, so the relay keeps asking the
		// token endpoint for new ones (and meets its faults).
		tokenTTL time.Duration
		x        expect
	}{
		{name: "5xx bursts", faults: "5xx=0.03,5xx_burst=3"},
		{name: "connection resets", faults: "reset=0.05"},
		{name: "timeouts", faults: "timeout=0.03,timeout_after=300ms",
			vars: map[string]string{"LR_MDE_REQUEST_TIMEOUT": "2s", "LR_DOWNLOAD_TIMEOUT": "2s"}},
		{name: "slow drip", faults: "slowdrip=0.1,slowdrip_delay=100ms,slowdrip_chunk=64",
			vars: map[string]string{"LR_DOWNLOAD_IDLE_TIMEOUT": "2s"}},
		{name: "early expiry", faults: "expire=0.2"},
		{name: "token failures", faults: "token=0.6", tokenTTL: time.Second},
		{name: "429 storm", faults: "storm=0.02,storm_retry_after=1s", vars: map[string]string{"LR_WORKERS": "1"},
			x: expect{throttled: true}},
		{name: "all together",
			faults:   "5xx=0.01,reset=0.02,timeout=0.01,timeout_after=300ms,slowdrip=0.05,slowdrip_delay=100ms,slowdrip_chunk=64,expire=0.1,token=0.5,storm=0.015,storm_retry_after=1s",
			vars:     map[string]string{"LR_MDE_REQUEST_TIMEOUT": "2s", "LR_DOWNLOAD_TIMEOUT": "2s", "LR_DOWNLOAD_IDLE_TIMEOUT": "2s"},
			tokenTTL: time.Second, x: expect{throttled: true, inFlight: workers - 1}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			faults, err := simulator.ParseFaults(tc.faults)
			if err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, simulator.Config{LinkLimits: scaledLimits, ActionLimits: scaledLimits, Faults: faults,
				TokenTTL: tc.tokenTTL, Seed: int64(i + 1)})
			actions, _ := e.load(150, int64(200+i))
			cfg := e.config(t, loadVars(withVars(map[string]string{"LR_WORKERS": fmt.Sprint(workers)}, tc.vars)))
			e.startRelay(t, cfg)
			e.publishActions(t, cfg, actions)
			e.waitSettled(t, cfg, 60*time.Second)
			verify(t, e, cfg, actions).check(t, tc.x)
			st := e.sim.Stats()
			t.Logf("faults injected: %v; token requests: %d", st.FaultsInjected, st.TokenCalls)
			// A fault mode that never fired proves nothing.
			for _, name := range []string{simulator.FaultServerError, simulator.FaultReset, simulator.FaultTimeout,
				simulator.FaultSlowDrip, simulator.FaultExpire, simulator.FaultToken, simulator.FaultStorm} {
				if strings.Contains(tc.faults, name+"=") && st.FaultsInjected[name] == 0 {
					t.Errorf("fault %s was never injected", name)
				}
			}
		})
	}
}

// TestSIGTERMDuringSlowDownload sends SIGTERM to a process stuck in a slow-drip download: within
// LR_SHUTDOWN_TIMEOUT it must hand the event back and exit 0, and the other process must relay it, once.
func TestSIGTERMDuringSlowDownload(t *testing.T) {
	e := newEnv(t, simulator.Config{Faults: simulator.Faults{SlowDrip: 1, SlowDripDelay: 500 * time.Millisecond, SlowDripChunk: 16}})
	// 4 KiB at 16 bytes per 500ms takes about two minutes: far longer than the test.
	actions := simulator.GenerateActions(1, 1, 4096, 301)
	e.sim.AddAction(actions[0])
	const shutdownTimeout = 2 * time.Second
	vars := map[string]string{"LR_SHUTDOWN_TIMEOUT": shutdownTimeout.String(), "LR_ACK_WAIT": "3s", "LR_WORKERS": "2"}
	cfg := e.config(t, vars)
	a := e.startProc(t, "a", vars)
	e.publishActions(t, cfg, actions)
	waitFor(t, 20*time.Second, "a download in flight", func() bool { return e.sim.Stats().BlobDownloads >= 1 })
	// From now on downloads are fast: the one in flight keeps trickling.
	if err := e.sim.SetFaults(simulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	bAddr := freeAddr(t)
	b := e.startProc(t, "b", withVars(vars, map[string]string{"LR_HTTP_ADDR": bAddr}))
	waitFor(t, 20*time.Second, "b ready", func() bool { return ready(bAddr) == http.StatusOK })
	if got := e.streamMsgs(t, cfg.ResultStream); got != 0 {
		t.Fatalf("results before SIGTERM: %d, want 0 (the download should still be trickling)", got)
	}

	start := time.Now()
	a.term()
	if !a.wait(shutdownTimeout + 10*time.Second) {
		t.Fatalf("a did not exit within %s of SIGTERM\n%s", shutdownTimeout+10*time.Second, a.tail(20))
	}
	took := time.Since(start)
	t.Logf("a exited %s after SIGTERM (LR_SHUTDOWN_TIMEOUT=%s): %v", took.Round(time.Millisecond), shutdownTimeout, a.err)
	if a.err != nil {
		t.Errorf("a exited with %v, want exit status 0\n%s", a.err, a.tail(20))
	}
	// The work is cut at the shutdown timeout; draining the connection adds a little.
	if took > shutdownTimeout+3*time.Second {
		t.Errorf("a took %s to exit, want about LR_SHUTDOWN_TIMEOUT=%s", took, shutdownTimeout)
	}
	if !strings.Contains(a.logs.String(), "in-flight event handed back") {
		t.Errorf("a did not log that it handed the event back\n%s", a.tail(20))
	}

	e.waitResults(t, cfg, 1, 30*time.Second)
	e.waitSettled(t, cfg, 30*time.Second)
	verify(t, e, cfg, actions).check(t, expect{})
	if !strings.Contains(b.logs.String(), "event relayed") {
		t.Errorf("b did not relay the event\n%s", b.tail(20))
	}
}

// TestDeletedConsumerIsRecreated deletes the durable consumer under a running relay: the relay must notice,
// recreate it, and finish, with every command relayed once (the recreated consumer starts over, and the
// relay recognises what it had already published).
func TestDeletedConsumerIsRecreated(t *testing.T) {
	e := newEnv(t, simulator.Config{LinkLimits: scaledLimits, ActionLimits: scaledLimits})
	actions, commands := e.load(300, 401)
	cfg := e.config(t, loadVars(nil))
	e.startRelay(t, cfg)
	e.publishActions(t, cfg, actions)
	e.waitResults(t, cfg, commands/3, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.js.DeleteConsumer(ctx, cfg.SourceStream, cfg.Consumer); err != nil {
		t.Fatalf("deleting the consumer: %v", err)
	}
	waitFor(t, 30*time.Second, "the consumer recreated", func() bool {
		_, err := e.js.Consumer(ctx, cfg.SourceStream, cfg.Consumer)
		return err == nil
	})
	e.waitSettled(t, cfg, 60*time.Second)
	verify(t, e, cfg, actions).check(t, expect{})
	if !strings.Contains(e.logs.String(), "consumer gone; recreating it") {
		t.Errorf("the relay did not log that it recreated the consumer")
	}
}

// withVars returns a copy of vars with extra added.
func withVars(vars, extra map[string]string) map[string]string {
	out := make(map[string]string, len(vars)+len(extra))
	for k, v := range vars {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// freeAddr returns a loopback address that was free a moment ago, for a relay process to listen on. The port
// comes from below Linux's ephemeral range (32768-60999): a port the kernel handed out and took back could be
// handed out again to any outgoing connection (the suite makes thousands) before the process binds it.
func freeAddr(t testing.TB) string {
	t.Helper()
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if ln, err := net.Listen("tcp", addr); err == nil {
			_ = ln.Close()
			return addr
		}
	}
	t.Fatal("no free loopback port found between 20000 and 32000")
	return ""
}

// ready returns the status of GET /-/ready, or 0 when the endpoint does not answer.
func ready(addr string) int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + addr + "/-/ready")
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
