package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

// The quota tests run real lr-relay processes against one simulator whose link endpoint throttles like the
// real API, scaled down: 100 calls per second and 1500 per 15 seconds (the real 100/min and 1500/h).
const (
	quotaLimits = "100/1s,1500/15s"
	// quotaMargin is LR_QUOTA_SKEW_MARGIN. The processes share the host clock, so the margin only has to absorb
	// the spread of the delay between a grant's stamp and the call's arrival at the simulator: the KV write
	// (the limiter leaves a grant unused when its write took half the margin longer than recent ones), then the
	// HTTP request and the scheduling of loaded processes, where stalls of 10-25ms show on this 2-core box.
	// Without that discard, 15ms met 1-3 429s in every run (each pauses the tenant for a whole second); with
	// it, 15ms met none but discarded up to 47 grants a run, and 25ms discards a handful. Each 1s window costs
	// one margin: 25ms gives up about 2.5% in the long run (0.04% at the real 1m window).
	quotaMargin = 25 * time.Millisecond
	// quotaMeasure is the interval over which calls made are compared with calls allowed: one long window.
	quotaMeasure = 15 * time.Second
	// quotaMinUtilisation is the floor asserted. The target is 98%, which the runs reach when the machine is
	// not starved of CPU (the table in the log says what a run got). The floor is lower so that a 2-core box
	// running other suites does not fail the test, while the losses that matter still do: a budget split
	// per replica (50% or less), the default 250ms margin on 1s windows (80%), lost wake-ups.
	quotaMinUtilisation = 0.90
)

// minUtilisation is the floor of this run: quotaMinUtilisation, or the 98% target when
// LR_QUOTA_MIN_UTILISATION says so. CI asserts 98% in a separate step, when nothing else runs on the machine.
func minUtilisation(t testing.TB) float64 {
	v := os.Getenv("LR_QUOTA_MIN_UTILISATION")
	if v == "" {
		return quotaMinUtilisation
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 || f > 1 {
		t.Fatalf("LR_QUOTA_MIN_UTILISATION=%q: want a fraction such as 0.98", v)
	}
	return f
}

// quotaFigures are the measurements of one backlog run.
type quotaFigures struct {
	name              string
	allowed, made     int
	throttled, during int
	// discarded counts grants the survivors left unused because the KV recorded them too late.
	discarded int
	// lag is how late, on average per 1s window, each window's first call came compared with a perfect
	// client: the margin plus the time to notice the window has room. It is what the long-run loss is made of.
	lag time.Duration
}

func (f quotaFigures) utilisation() float64 {
	if f.allowed == 0 {
		return 0
	}
	return float64(f.made) / float64(f.allowed)
}

// longRun is the share of the budget a backlog gets over many windows: each 1s window starts lag late.
func (f quotaFigures) longRun() float64 {
	return float64(time.Second) / float64(time.Second+f.lag)
}

func quotaTable(rows []quotaFigures) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| %-22s | %7s | %5s | %4s | %11s | %14s | %9s | %9s |\n", "replicas", "allowed", "made", "429s",
		"utilisation", "lag per window", "long run", "discarded")
	fmt.Fprintf(&b, "|%s|%s|%s|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 24), strings.Repeat("-", 9), strings.Repeat("-", 7),
		strings.Repeat("-", 6), strings.Repeat("-", 13), strings.Repeat("-", 16), strings.Repeat("-", 11), strings.Repeat("-", 11))
	for _, r := range rows {
		fmt.Fprintf(&b, "| %-22s | %7d | %5d | %4d | %10.1f%% | %14s | %8.1f%% | %9d |\n", r.name, r.allowed, r.made, r.throttled,
			100*r.utilisation(), r.lag.Round(100*time.Microsecond), 100*r.longRun(), r.discarded)
	}
	return b.String()
}

// quotaIdeal returns how many calls a perfect client, starting with an empty budget at from and calling
// whenever the windows allow it, makes in [from, to). The simulator admits a call at t when fewer than Limit
// calls lie in (t-Per, t], so the greedy client's next call is at the Limit-th most recent call plus Per.
// Greedy is optimal: no schedule that respects the windows fits more calls into any interval from the start.
func quotaIdeal(t *testing.T, spec string, from, to time.Time) int {
	t.Helper()
	ws, err := simulator.ParseWindows(spec)
	if err != nil {
		t.Fatal(err)
	}
	return scaleAllowed(ws, from, to)
}

// quotaCount returns how many of the ascending times lie in [from, to).
func quotaCount(ts []time.Time, from, to time.Time) int {
	n := 0
	for _, x := range ts {
		if !x.Before(from) && x.Before(to) {
			n++
		}
	}
	return n
}

// quotaLag returns the average lateness per window of the first call of every full window in [from, to)
// compared with a perfect client (whose k-th window starts exactly k*per after the first call).
func quotaLag(ts []time.Time, limit int, per time.Duration, from, to time.Time) time.Duration {
	var k int
	for k = 1; k*limit < len(ts) && ts[k*limit].Before(to); k++ {
	}
	k--
	if k < 1 {
		return 0
	}
	return (ts[k*limit].Sub(from) - time.Duration(k)*per) / time.Duration(k)
}

// quotaWaitUntil polls the clock until at has passed: the measurements are over fixed intervals of time.
func quotaWaitUntil(t *testing.T, at time.Time) {
	t.Helper()
	waitFor(t, time.Until(at)+10*time.Second, "time "+at.Format(time.StampMilli), func() bool {
		return time.Now().After(at)
	})
}

// quotaFirstCall waits for the first admitted link call of tenantID and returns its arrival time.
func quotaFirstCall(t *testing.T, e *env, tenantID string) time.Time {
	t.Helper()
	var first time.Time
	waitFor(t, 90*time.Second, "the first admitted link call of "+tenantID, func() bool {
		if adm := e.sim.Admitted(tenantID, simulator.EndpointLinks); len(adm) > 0 {
			first = adm[0]
			return true
		}
		return false
	})
	return first
}

// quotaActions generates n actions of k RunScript commands each (small outputs) for tenantID ("" for events
// without tenantId) and adds them to the simulator. The ids depend on seed.
func quotaActions(e *env, n, k int, seed int64, tenantID string) []simulator.Action {
	actions := simulator.GenerateActions(n, k, 64, seed)
	for i := range actions {
		actions[i].MachineAction.TenantID = tenantID
		e.sim.AddAction(actions[i])
	}
	return actions
}

// quotaBacklogRun starts replicas lr-relay processes on a backlog that the windows cannot serve within the
// measurement, optionally SIGKILLs the last process killAfter into it, and measures calls made against calls
// allowed over quotaMeasure from the first admitted call.
func quotaBacklogRun(t *testing.T, replicas int, killAfter time.Duration) quotaFigures {
	e := newEnv(t, simulator.Config{LinkLimits: quotaLimits})
	// 2000 calls: 20s at 100/s, more than the measurement can use.
	const actions, perAction = 250, 8
	backlog := quotaActions(e, actions, perAction, int64(100+replicas), "")
	extra := map[string]string{
		"LR_WORKERS": "8", "LR_RATE_LIMITS": quotaLimits, "LR_QUOTA_SKEW_MARGIN": quotaMargin.String(),
		"LR_QUOTA_REPLICAS": strconv.Itoa(replicas), "LR_LOG_LEVEL": "info",
	}
	procs := make([]*proc, replicas)
	addrs := make([]string, replicas)
	for i := range procs {
		addrs[i] = quotaFreeAddr(t)
		own := maps.Clone(extra)
		own["LR_HTTP_ADDR"] = addrs[i]
		procs[i] = e.startProc(t, fmt.Sprintf("relay-%d", i+1), own)
	}
	cfg := e.config(t, extra)
	e.publishActions(t, cfg, backlog)

	t0 := quotaFirstCall(t, e, simulator.DefaultTenantID)
	end := t0.Add(quotaMeasure)
	if killAfter > 0 {
		quotaWaitUntil(t, t0.Add(killAfter))
		victim := procs[len(procs)-1]
		// The victim must hold part of the budget when it dies, or its loss proves nothing. Replicas win the
		// shared budget by compare-and-swap, with no fairness between them, so one may not have won a call
		// yet: give it a few more seconds (the measured interval does not move).
		madeCall := func() bool {
			n, _ := quotaSum(quotaScrape(t, "http://"+addrs[len(addrs)-1]+"/metrics"), "lr_quota_calls_granted_total",
				map[string]string{"endpoint": "links"})
			return n > 0
		}
		testutil.Eventually(t, 5*time.Second, func() error {
			if !madeCall() {
				return fmt.Errorf("%s made no call in %s, before it was killed", victim.name, time.Since(t0).Round(time.Millisecond))
			}
			return nil
		})
		victim.kill()
		if !victim.wait(10 * time.Second) {
			t.Fatalf("%s did not die after SIGKILL", victim.name)
		}
		t.Logf("SIGKILLed %s %s after the first call", victim.name, time.Since(t0).Round(time.Millisecond))
	}
	// Calls are stamped with their arrival time, so once a call after end is in the log every call of the
	// interval is too. That call also shows the backlog lasted beyond the interval: otherwise the figure would
	// say nothing about utilisation.
	quotaWaitUntil(t, end)
	waitFor(t, 10*time.Second, "a call after the measured interval (the backlog must outlast it)", func() bool {
		adm := e.sim.Admitted(simulator.DefaultTenantID, simulator.EndpointLinks)
		return len(adm) > 0 && !adm[len(adm)-1].Before(end)
	})

	survivors := procs
	if killAfter > 0 {
		survivors = procs[:len(procs)-1]
	}
	var discarded float64
	for i, p := range survivors {
		if p.exited() {
			t.Errorf("%s exited during the run: %v\n%s", p.name, p.err, p.tail(40))
			continue
		}
		n, _ := quotaSum(quotaScrape(t, "http://"+addrs[i]+"/metrics"), "lr_quota_grants_discarded_total", nil)
		discarded += n
	}
	adm := e.sim.Admitted(simulator.DefaultTenantID, simulator.EndpointLinks)
	st := e.sim.Stats()
	f := quotaFigures{
		name:      fmt.Sprint(replicas),
		allowed:   quotaIdeal(t, quotaLimits, t0, end),
		made:      quotaCount(adm, t0, end),
		throttled: st.Throttled,
		during:    st.CallsDuringRetryAfter,
		lag:       quotaLag(adm, 100, time.Second, t0, end),
		discarded: int(discarded),
	}
	ws, err := simulator.ParseWindows(quotaLimits)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		if got := simulator.MaxInWindow(adm, w.Per); got > w.Limit {
			t.Errorf("simulator admitted %d calls in some %s, over the limit of %d", got, w.Per, w.Limit)
		}
	}
	if f.throttled != 0 || f.during != 0 {
		t.Errorf("simulator answered %d 429s and saw %d calls during Retry-After, want 0 and 0", f.throttled, f.during)
	}
	return f
}

// TestQuotaUtilisationUnderBacklog checks that 1, 2 and 4 replicas sharing one tenant's budget through the KV
// limiter together make (nearly) every call the windows allow, and never meet a 429. It logs the table of
// figures; the target is 98%, the floor asserted is quotaMinUtilisation.
func TestQuotaUtilisationUnderBacklog(t *testing.T) {
	var rows []quotaFigures
	for _, replicas := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("replicas=%d", replicas), func(t *testing.T) {
			f := quotaBacklogRun(t, replicas, 0)
			rows = append(rows, f)
			if f.utilisation() < minUtilisation(t) {
				t.Errorf("%d replicas made %d of the %d calls allowed in %s (%.1f%%), want at least %.0f%%; each window started %s late "+
					"on average (margin %s) and %d grants were discarded as recorded too late",
					replicas, f.made, f.allowed, quotaMeasure, 100*f.utilisation(), 100*minUtilisation(t), f.lag, quotaMargin, f.discarded)
			}
		})
	}
	t.Logf("windows %s, LR_QUOTA_SKEW_MARGIN=%s, LR_WORKERS=8 per process, measured over %s from the first call:\n%s",
		quotaLimits, quotaMargin, quotaMeasure, quotaTable(rows))
}

// TestQuotaReplicaLoss SIGKILLs one of three replicas in the middle of a backlog: the survivors must keep the
// tenant out of 429s (the dead replica's grants stay in the shared log until they age out) and keep using the
// budget.
func TestQuotaReplicaLoss(t *testing.T) {
	f := quotaBacklogRun(t, 3, 5*time.Second)
	f.name = "3, one SIGKILLed at 5s"
	t.Logf("windows %s, LR_QUOTA_SKEW_MARGIN=%s:\n%s", quotaLimits, quotaMargin, quotaTable([]quotaFigures{f}))
	if f.utilisation() < minUtilisation(t) {
		t.Errorf("after losing a replica, the others made %d of the %d calls allowed (%.1f%%), want at least %.0f%%",
			f.made, f.allowed, 100*f.utilisation(), 100*minUtilisation(t))
	}
}

// quotaTenant is one tenant served by the simulator and listed in a tenants file.
type quotaTenant struct {
	name, id, client, secret, limits string
}

// quotaTenantsEnv starts a simulator that knows the tenants, writes the tenants file, and returns the
// variables of a relay that serves only those tenants (no LR_MDE_* default tenant).
func quotaTenantsEnv(t *testing.T, simLimits string, tenants []quotaTenant) (*env, map[string]string) {
	t.Helper()
	var creds []simulator.Credentials
	for _, tn := range tenants {
		creds = append(creds, simulator.Credentials{TenantID: tn.id, ClientID: tn.client, ClientSecret: tn.secret})
	}
	e := newEnv(t, simulator.Config{LinkLimits: simLimits, ExtraTenants: creds})
	var file struct {
		Tenants []map[string]string `json:"tenants"`
	}
	for _, tn := range tenants {
		file.Tenants = append(file.Tenants, map[string]string{
			"name": tn.name, "tenantId": tn.id, "clientId": tn.client, "clientSecret": tn.secret,
			"apiUrl": "http://" + e.addr, "tokenUrl": "http://" + e.addr + "/{tenant}/oauth2/v2.0/token",
			"rateLimits": tn.limits,
		})
	}
	b, err := json.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tenants.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return e, map[string]string{
		"LR_TENANTS_FILE": path, "LR_MDE_TENANT_ID": "", "LR_MDE_CLIENT_ID": "", "LR_MDE_CLIENT_SECRET": "",
		"LR_QUOTA_SKEW_MARGIN": quotaMargin.String(), "LR_LOG_LEVEL": "info",
	}
}

// TestQuotaTenantIsolation floods tenant alpha far beyond its budget and sends tenant beta a trickle: beta's
// results must come within one pipeline round trip plus beta's own (idle) budget, not behind alpha's backlog.
// Events for a tenant that is not configured, and events without tenantId when there is no default tenant,
// are dead-lettered as unknown_tenant.
func TestQuotaTenantIsolation(t *testing.T) {
	alpha := quotaTenant{"alpha", "aaaaaaaa-0000-4000-8000-00000000000a", "client-alpha", "secret-alpha", quotaLimits}
	beta := quotaTenant{"beta", "bbbbbbbb-0000-4000-8000-00000000000b", "client-beta", "secret-beta", quotaLimits}
	e, extra := quotaTenantsEnv(t, quotaLimits, []quotaTenant{alpha, beta})
	extra["LR_WORKERS"] = "8"
	extra["LR_RATE_LIMITS"] = quotaLimits
	relayProc := e.startProc(t, "relay", extra)
	cfg := e.config(t, extra)
	e.waitStream(t, cfg.SourceStream)
	e.waitStream(t, cfg.ResultStream)

	// Beta's results, timed as they are stored.
	var (
		mu       sync.Mutex
		arrived  = map[string]time.Time{}
		received = make(chan struct{}, 64)
	)
	sub, err := e.nc.Subscribe(cfg.ResultSubjectPrefix+"."+beta.name+".>", func(m *nats.Msg) {
		var ev struct {
			ActionID string `json:"actionId"`
		}
		if json.Unmarshal(m.Data, &ev) == nil {
			mu.Lock()
			if _, dup := arrived[ev.ActionID]; !dup {
				arrived[ev.ActionID] = time.Now()
			}
			mu.Unlock()
			select {
			case received <- struct{}{}:
			default: // the reader only needs to know that something came
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Unknown tenants first, so that their verdict does not depend on how alpha's flood is scheduled.
	unknown := []string{
		`{"id": "c0ffee00-0000-4000-8000-0000000000a1", "tenantId": "11111111-2222-4333-8444-555555555555", "commands": []}`,
		`{"id": "c0ffee00-0000-4000-8000-0000000000a2", "commands": []}`,
	}
	for _, p := range unknown {
		e.publishRaw(t, cfg, []byte(p))
	}
	waitFor(t, 30*time.Second, "two dead letters", func() bool {
		return e.streamMsgs(t, cfg.DeadLetterStream) >= uint64(len(unknown))
	})
	for _, m := range e.readAll(t, cfg.DeadLetterStream) {
		var dl relay.DeadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			t.Fatal(err)
		}
		if dl.Reason != relay.ReasonUnknownTenant {
			t.Errorf("dead letter for %s (tenantId %q): reason %q, want %q (%s)", dl.ActionID, dl.TenantID, dl.Reason,
				relay.ReasonUnknownTenant, dl.Message)
		}
	}

	// Alpha: 1500 calls, 15s of its budget.
	const floodActions, floodPer = 150, 10
	flood := quotaActions(e, floodActions, floodPer, 21, alpha.id)
	e.publishActions(t, cfg, flood)
	// Beta starts once alpha has used two full windows: its backlog holds the workers and its budget is spent.
	waitFor(t, 60*time.Second, "alpha's first 200 calls", func() bool {
		return len(e.sim.Admitted(alpha.id, simulator.EndpointLinks)) >= 200
	})

	// Beta: one single-command event a second.
	const trickle = 5
	const bound = 3 * time.Second
	published := map[string]time.Time{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i, a := range quotaActions(e, trickle, 1, 22, beta.id) {
		if i > 0 {
			<-tick.C
		}
		payload, err := json.Marshal(a.MachineAction)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		published[a.MachineAction.ID] = time.Now()
		mu.Unlock()
		e.publishRaw(t, cfg, payload)
	}
	// Wait long enough to learn how late beta really is, even when it waits behind all of alpha's flood.
	deadline := time.After(40 * time.Second)
	for done := false; !done; {
		mu.Lock()
		done = len(arrived) >= trickle
		mu.Unlock()
		if done {
			break
		}
		select {
		case <-received:
		case <-deadline:
			done = true
		}
	}
	alphaCalls := len(e.sim.Admitted(alpha.id, simulator.EndpointLinks))

	mu.Lock()
	defer mu.Unlock()
	var worst time.Duration
	for id, p := range published {
		got, ok := arrived[id]
		if !ok {
			t.Errorf("tenant beta's event %s: no result within 40s of the last publish, want one within %s; "+
				"beta's events are stuck behind tenant alpha's backlog", id, bound)
			continue
		}
		lat := got.Sub(p)
		worst = max(worst, lat)
		if lat > bound {
			t.Errorf("tenant beta's event %s: result %s after publish, want < %s (one pipeline round trip plus "+
				"beta's own idle budget); beta waited behind tenant alpha's backlog: workers parked on alpha's budget",
				id, lat.Round(time.Millisecond), bound)
		}
	}
	t.Logf("tenant beta: %d events, worst publish-to-result latency %s; tenant alpha made %d of its %d calls meanwhile",
		len(published), worst.Round(time.Millisecond), alphaCalls, floodActions*floodPer)
	if alphaCalls >= floodActions*floodPer {
		t.Errorf("tenant alpha's backlog of %d calls was done (%d calls) before beta's results were in: the test did not overlap them",
			floodActions*floodPer, alphaCalls)
	}
	if got := len(e.sim.Admitted(beta.id, simulator.EndpointLinks)); got != len(arrived) {
		t.Errorf("simulator admitted %d link calls for beta, want %d (one per result)", got, len(arrived))
	}
	if st := e.sim.Stats(); st.Throttled != 0 || st.CallsDuringRetryAfter != 0 {
		t.Errorf("simulator answered %d 429s and saw %d calls during Retry-After, want 0 and 0", st.Throttled, st.CallsDuringRetryAfter)
	}
	if got := e.streamMsgs(t, cfg.DeadLetterStream); got != uint64(len(unknown)) {
		t.Errorf("dead-letter stream holds %d records, want only the %d unknown-tenant events", got, len(unknown))
	}
	if relayProc.exited() {
		t.Errorf("relay exited: %v\n%s", relayProc.err, relayProc.tail(40))
	}
}

// quotaFreeAddr returns a loopback address for a relay process to listen on (see freeAddr).
func quotaFreeAddr(t *testing.T) string { return freeAddr(t) }

// quotaSample is one line of the Prometheus text format.
type quotaSample struct {
	name   string
	labels map[string]string
	value  float64
}

// metricsBody GETs a /metrics exposition.
func metricsBody(t testing.TB, url string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return body
}

// quotaScrape reads /metrics. The text format is simple enough to read line by line: name{labels} value.
func quotaScrape(t *testing.T, url string) []quotaSample {
	t.Helper()
	return parseMetrics(t, metricsBody(t, url))
}

// parseMetrics reads the samples of a Prometheus text exposition.
func parseMetrics(t testing.TB, body []byte) []quotaSample {
	t.Helper()
	var err error
	var out []quotaSample
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := quotaSample{labels: map[string]string{}}
		head, val, ok := strings.Cut(line, " ")
		if i := strings.LastIndex(line, "} "); i >= 0 {
			head, val, ok = line[:i+1], line[i+2:], true
		}
		if !ok {
			t.Fatalf("unreadable metrics line %q", line)
		}
		s.name = head
		if name, labels, found := strings.Cut(head, "{"); found {
			s.name = name
			for _, kv := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
				k, v, _ := strings.Cut(kv, "=")
				s.labels[k] = strings.Trim(v, `"`)
			}
		}
		if s.value, err = strconv.ParseFloat(strings.Fields(val)[0], 64); err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// quotaSum adds the samples named name whose labels include want; found says whether any matched.
func quotaSum(samples []quotaSample, name string, want map[string]string) (sum float64, found bool) {
	for _, s := range samples {
		if s.name != name {
			continue
		}
		match := true
		for k, v := range want {
			if s.labels[k] != v {
				match = false
				break
			}
		}
		if match {
			sum += s.value
			found = true
		}
	}
	return sum, found
}

// TestQuotaMetrics runs one process with two tenants and checks that /metrics shows, per tenant, the calls
// granted, the time waited, the utilisation of each window and the 429s received. Tenant beta is configured
// with a budget above the simulator's, so that it meets real 429s.
func TestQuotaMetrics(t *testing.T) {
	const simLimits = "5/1s"
	alpha := quotaTenant{"alpha", "aaaaaaaa-0000-4000-8000-00000000000a", "client-alpha", "secret-alpha", simLimits}
	beta := quotaTenant{"beta", "bbbbbbbb-0000-4000-8000-00000000000b", "client-beta", "secret-beta", "50/1s"}
	e, extra := quotaTenantsEnv(t, simLimits, []quotaTenant{alpha, beta})
	addr := quotaFreeAddr(t)
	extra["LR_HTTP_ADDR"] = addr
	extra["LR_WORKERS"] = "4"
	p := e.startProc(t, "relay", extra)
	cfg := e.config(t, extra)
	waitFor(t, 60*time.Second, "/-/ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// Alpha: 12 calls at 5/s, so some wait. Beta: 20 calls that its 50/s budget lets through too fast.
	alphaActions := quotaActions(e, 3, 4, 31, alpha.id)
	betaActions := quotaActions(e, 2, 10, 32, beta.id)
	e.publishActions(t, cfg, append(alphaActions, betaActions...))
	const alphaCalls, betaCalls = 12, 20
	waitFor(t, 60*time.Second, "32 results", func() bool {
		return e.streamMsgs(t, cfg.ResultStream) >= alphaCalls+betaCalls
	})
	if p.exited() {
		t.Fatalf("relay exited: %v\n%s", p.err, p.tail(40))
	}

	samples := quotaScrape(t, "http://"+addr+"/metrics")
	st := e.sim.Stats()
	if st.Throttled == 0 {
		t.Fatalf("simulator answered no 429: tenant beta's oversized budget should have met some")
	}
	alphaAdm := len(e.sim.Admitted(alpha.id, simulator.EndpointLinks))
	betaAdm := len(e.sim.Admitted(beta.id, simulator.EndpointLinks))
	if alphaAdm != alphaCalls || betaAdm != betaCalls {
		t.Errorf("simulator admitted %d alpha and %d beta link calls, want %d and %d", alphaAdm, betaAdm, alphaCalls, betaCalls)
	}
	links := func(tenant string) map[string]string { return map[string]string{"tenant": tenant, "endpoint": "links"} }
	tests := []struct {
		name   string
		metric string
		labels map[string]string
		check  func(v float64) bool
		want   string
	}{
		{"alpha calls made", "lr_quota_calls_granted_total", links("alpha"),
			func(v float64) bool { return v == alphaCalls }, fmt.Sprint(alphaCalls)},
		{"beta calls made (admitted and throttled)", "lr_quota_calls_granted_total", links("beta"),
			func(v float64) bool { return int(v) == betaCalls+st.Throttled }, fmt.Sprint(betaCalls + st.Throttled)},
		{"alpha time waiting: one observation per call", "lr_quota_wait_seconds_count", links("alpha"),
			func(v float64) bool { return v == alphaCalls }, fmt.Sprint(alphaCalls)},
		// With two tenants the wait for the budget is spent set aside (parked), not in the limiter: 12 calls at
		// 5/s cannot all go at once.
		{"alpha events set aside for its budget", "lr_tenant_events_parked_total", map[string]string{"tenant": "alpha"},
			func(v float64) bool { return v >= 1 }, ">= 1"},
		{"beta 429s received", "lr_mde_requests_total", map[string]string{"tenant": "beta", "result": "throttled"},
			func(v float64) bool { return int(v) == st.Throttled }, fmt.Sprint(st.Throttled)},
		{"alpha calls answered 200", "lr_mde_requests_total", map[string]string{"tenant": "alpha", "result": "ok", "op": "get_result_link"},
			func(v float64) bool { return v == alphaCalls }, fmt.Sprint(alphaCalls)},
		{"beta pauses after 429", "lr_quota_paused_total", links("beta"),
			func(v float64) bool { return v >= 1 }, ">= 1"},
		{"alpha window utilisation", "lr_quota_utilisation_ratio",
			map[string]string{"tenant": "alpha", "endpoint": "links", "window": simLimits},
			func(v float64) bool { return v >= 0 && v <= 1 }, "in [0, 1]"},
		{"beta window utilisation", "lr_quota_utilisation_ratio",
			map[string]string{"tenant": "beta", "endpoint": "links", "window": "50/1s"},
			func(v float64) bool { return v >= 0 && v <= 1 }, "in [0, 1]"},
		{"beta calls allowed per window", "lr_quota_window_limit",
			map[string]string{"tenant": "beta", "endpoint": "links", "window": "50/1s"},
			func(v float64) bool { return v == 50 }, "50"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, found := quotaSum(samples, tc.metric, tc.labels)
			switch {
			case !found:
				t.Errorf("/metrics has no %s with labels %v", tc.metric, tc.labels)
			case !tc.check(got):
				t.Errorf("%s%v = %g, want %s", tc.metric, tc.labels, got, tc.want)
			}
		})
	}
	// The series exists from the start (at zero), so that an alert sees the first 429; it must stay at zero.
	if n, found := quotaSum(samples, "lr_mde_requests_total", map[string]string{"tenant": "alpha", "result": "throttled"}); !found || n != 0 {
		t.Errorf("lr_mde_requests_total{result=throttled} for alpha = %g (present %v), want 0: its budget matches the simulator's", n, found)
	}
}
