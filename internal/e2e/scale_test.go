package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/simulator"
)

// The scale runs (issue 12): many tenants, each with its own credentials and windows in one simulator, every
// backlogged tenant holding more calls than its windows allow in the measured interval, one trickle tenant
// sending a few events while the others are backlogged, and real lr-relay processes sharing the consumer and
// the KV budget. TestScaleManyTenants runs it at 50 tenants within `go test ./...`; BenchmarkScale at 200
// and 1,000 tenants (scale_bench_test.go).

// scaleStartup is how long the processes of a scale run are given to start (and to fetch their tokens, if
// they do that at start) before the token lifetimes of a shared expiry begin to count.
const scaleStartup = 20 * time.Second

// scaleSpec is one scale run.
type scaleSpec struct {
	tenants  int    // backlogged tenants
	procs    int    // lr-relay processes
	workers  int    // LR_WORKERS of each process
	limits   string // windows of every tenant, in the simulator and in the relay alike
	events   int    // backlog events per tenant, published round-robin across tenants
	perEvent int    // RunScript commands per backlog event
	// measure is the interval, from each tenant's first admitted call, over which its calls made are compared
	// with the calls its windows allowed. The backlog must outlast it (checked).
	measure time.Duration
	// trickle events (one command each) of the trickle tenant, one every trickleGap, published once the
	// backlogged tenants are busy.
	trickle    int
	trickleGap time.Duration
	// tokenExpiry, when positive, makes every token issued before publish+tokenExpiry expire at that moment.
	tokenExpiry time.Duration
	// idleFor, when positive, is how long the ready processes are watched before anything is published.
	idleFor time.Duration
	// margin is LR_QUOTA_SKEW_MARGIN (the default, 250ms, when zero).
	margin   time.Duration
	logLevel string
}

// configured is how many tenants the relay's tenants file lists: the backlogged ones and the trickle tenant.
func (s scaleSpec) configured() int { return s.tenants + 1 }

// scaleTenant is what one backlogged tenant got.
type scaleTenant struct {
	name          string
	calls         []time.Duration // the admitted calls, from the first
	allowed, made int
	outlasted     bool // the tenant still had calls to make after its measured interval
}

func (t scaleTenant) utilisation() float64 {
	if t.allowed == 0 {
		return 0
	}
	return float64(t.made) / float64(t.allowed)
}

// scaleFigures are the measurements of one run.
type scaleFigures struct {
	spec    scaleSpec
	tenants []scaleTenant // backlogged tenants, worst utilisation first

	allowed, made int
	throttled     int // 429s, every tenant and endpoint
	discarded     int // grants the processes left unused because the KV recorded them too late
	admitted      int // API calls admitted over the whole run, every tenant and endpoint
	duringRA      int

	commands, results, duplicates, lost, unexpected, deadLetters int

	// trickle: publish-to-result latency and the delay the trickle tenant's own windows imply, per event.
	trickleLatency, trickleImplied []time.Duration

	peakRSS, idleRSS []int64 // per process, bytes (VmHWM at the end, VmRSS once ready)
	cpu              float64 // utime+stime of every process from the first publish to the last result, seconds
	idleCPU          float64 // utime+stime of every process during idleFor, seconds
	idleTokens       int     // token requests during idleFor
	startTokens      int     // token requests before idleFor (a relay may fetch tokens at start)
	idleKVWrites     uint64  // quota KV writes during idleFor
	kvWrites         uint64  // quota KV writes stored (stream sequence delta) from the first publish to the end
	kvTapMsgs        int64   // quota KV publishes seen on the wire (includes compare-and-swap attempts refused)
	kvTapBytes       int64   // their subject, header and payload bytes
	kvEntryBytes     float64 // average stored size of one KV entry at the end
	busy             time.Duration

	// token requests around the shared expiry (tokenExpiry > 0): tokens issued before tokenUntil expire at expiry
	expiry, tokenUntil         time.Time
	tokenFirst                 int           // token requests before tokenUntil
	tokenPeakSecond            int           // token requests in the busiest second
	tokenMinute                int           // token requests in the minute centred on the busiest second
	tokenSpread                time.Duration // between the 5th and the 95th percentile of the refreshes
	tokenRefreshes             int           // token requests after every tenant's first one
	tokenRefreshFirst, tokenP5 time.Duration // first refresh and 5th percentile, relative to the expiry
}

func (f scaleFigures) utilisation() float64 {
	if f.allowed == 0 {
		return 0
	}
	return float64(f.made) / float64(f.allowed)
}

func (f scaleFigures) worst() scaleTenant {
	if len(f.tenants) == 0 {
		return scaleTenant{}
	}
	return f.tenants[0]
}

// trickleExcess returns, sorted, how much later than its quota-implied delay each trickle event's result came.
func (f scaleFigures) trickleExcess() []time.Duration {
	out := make([]time.Duration, len(f.trickleLatency))
	for i := range out {
		out[i] = f.trickleLatency[i] - f.trickleImplied[i]
	}
	slices.Sort(out)
	return out
}

// scalePercentile returns the p-quantile of sorted durations (nearest rank).
func scalePercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// scaleIdeal returns the arrival times of a perfect client's calls under ws: call i is made at want[i] or, when
// the windows are full then, the moment they free (a window of Limit per Per admits a call at t when fewer than
// Limit calls lie in (t-Per, t]). want must be ascending.
func scaleIdeal(ws []simulator.Window, want []time.Time) []time.Time {
	out := make([]time.Time, 0, len(want))
	for _, at := range want {
		for _, w := range ws {
			if len(out) >= w.Limit {
				if free := out[len(out)-w.Limit].Add(w.Per); free.After(at) {
					at = free
				}
			}
		}
		out = append(out, at)
	}
	return out
}

// scaleAllowed returns how many calls a perfect client with an endless backlog makes in [from, to).
func scaleAllowed(ws []simulator.Window, from, to time.Time) int {
	var log []time.Time
	for at := from; at.Before(to); {
		log = append(log, at)
		next := at
		for _, w := range ws {
			if len(log) >= w.Limit {
				if n := log[len(log)-w.Limit].Add(w.Per); n.After(next) {
					next = n
				}
			}
		}
		at = next
	}
	return len(log)
}

// scaleProcStat returns utime+stime of a process in seconds (/proc/<pid>/stat, 100 ticks per second).
func scaleProcStat(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	// fields[0] is field 3 (state): utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, fields[11], fields[12])
	}
	return float64(ut+st) / 100, nil
}

// scaleCPU sums utime+stime of the processes.
func scaleCPU(tb testing.TB, procs []*proc) float64 {
	tb.Helper()
	var sum float64
	for _, p := range procs {
		s, err := scaleProcStat(p.cmd.Process.Pid)
		if err != nil {
			tb.Fatalf("%s: %v", p.name, err)
		}
		sum += s
	}
	return sum
}

// scaleMem returns one /proc/<pid>/status field (VmRSS, VmHWM) of each process, in bytes.
func scaleMem(tb testing.TB, procs []*proc, field string) []int64 {
	tb.Helper()
	out := make([]int64, len(procs))
	for i, p := range procs {
		st, err := bigProcStatus(p.cmd.Process.Pid)
		if err != nil {
			tb.Fatalf("%s: %v", p.name, err)
		}
		out[i] = st[field]
	}
	return out
}

// scaleKVSeq returns the last sequence of the quota bucket's stream: every stored write adds one.
func scaleKVSeq(tb testing.TB, e *env, bucket string) (lastSeq uint64, msgs uint64, bytes uint64) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		tb.Fatalf("quota bucket stream: %v", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatalf("quota bucket stream info: %v", err)
	}
	return info.State.LastSeq, info.State.Msgs, info.State.Bytes
}

// scaleTap counts what is published to the quota bucket's subjects.
type scaleTap struct {
	msgs, bytes atomic.Int64
	on          atomic.Bool
}

func (tp *scaleTap) observe(m *nats.Msg) {
	if !tp.on.Load() {
		return
	}
	n := len(m.Subject) + len(m.Data)
	if len(m.Header) > 0 {
		n += len("NATS/1.0\r\n\r\n")
		for k, vs := range m.Header {
			for _, v := range vs {
				n += len(k) + len(v) + 4
			}
		}
	}
	tp.msgs.Add(1)
	tp.bytes.Add(int64(n))
}

// scaleRun runs one scale scenario and returns its figures; it fails tb only when the run itself breaks
// (a process dies, results stop coming), leaving the judgement of the figures to the caller.
func scaleRun(tb testing.TB, s scaleSpec) scaleFigures {
	tb.Helper()
	ws, err := simulator.ParseWindows(s.limits)
	if err != nil {
		tb.Fatal(err)
	}
	creds := simulator.GenerateTenants(s.configured(), int64(1000+s.tenants))
	e := newEnvWith(tb, simulator.Config{LinkLimits: s.limits, ExtraTenants: creds}, envOptions{quietSimulator: true})
	names := make([]string, len(creds))
	for i := range creds {
		names[i] = fmt.Sprintf("t%04d", i+1)
	}
	trickleIdx := len(creds) - 1
	names[trickleIdx] = "trickle"

	// The tenants file, as an MSSP would write it (only the API and token URLs point at the simulator).
	var file struct {
		Tenants []map[string]string `json:"tenants"`
	}
	for i, c := range creds {
		file.Tenants = append(file.Tenants, map[string]string{
			"name": names[i], "tenantId": c.TenantID, "clientId": c.ClientID, "clientSecret": c.ClientSecret,
			"apiUrl": "http://" + e.addr, "tokenUrl": "http://" + e.addr + "/{tenant}/oauth2/v2.0/token",
			"rateLimits": s.limits,
		})
	}
	b, err := json.Marshal(file)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "tenants.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	margin := s.margin
	if margin == 0 {
		margin = 250 * time.Millisecond
	}
	s.margin = margin
	logLevel := s.logLevel
	if logLevel == "" {
		logLevel = "info"
	}
	extra := map[string]string{
		"LR_TENANTS_FILE": path, "LR_MDE_TENANT_ID": "", "LR_MDE_CLIENT_ID": "", "LR_MDE_CLIENT_SECRET": "",
		"LR_RATE_LIMITS": s.limits, "LR_QUOTA_SKEW_MARGIN": margin.String(), "LR_LOG_LEVEL": logLevel,
		"LR_WORKERS": strconv.Itoa(s.workers), "LR_QUOTA_REPLICAS": strconv.Itoa(s.procs),
		// Scaled like the windows: the default 10s suits minute-long windows, not second-long ones.
		"LR_TENANT_DEFER_DELAY": "1s",
	}

	// The backlog: every tenant's actions, then published round-robin (event 1 of every tenant, event 2...).
	perTenant := make([][]simulator.Action, s.tenants)
	want := map[string]int{} // scaleCommandID -> tenant index
	for i := range s.tenants {
		perTenant[i] = simulator.GenerateTenantActions(creds[i].TenantID, s.events, s.perEvent, 64, int64(i+1))
		e.sim.AddActions(perTenant[i]...)
		for _, a := range perTenant[i] {
			for _, c := range a.MachineAction.Commands {
				want[scaleCommandID(a.MachineAction.ID, c.Index)] = i
			}
		}
	}
	trickle := simulator.GenerateTenantActions(creds[trickleIdx].TenantID, s.trickle, 1, 64, 999_999)
	e.sim.AddActions(trickle...)
	for _, a := range trickle {
		want[scaleCommandID(a.MachineAction.ID, 0)] = trickleIdx
	}

	var expiry, tokenUntil time.Time
	if s.tokenExpiry > 0 {
		// Every token issued in the first part of the run expires at the same moment: the processes' first
		// tokens, whether they fetch them at start or at a tenant's first call, as in a fleet that started
		// together. Refreshes come later (the relay replaces a token in the last half of its life at the
		// earliest) and get a full lifetime. The moments are set before the processes start and allow them
		// scaleStartup to come up.
		base := time.Now().Add(scaleStartup)
		expiry, tokenUntil = base.Add(s.tokenExpiry), base.Add(s.tokenExpiry/4)
		e.sim.SetTokenExpiry(expiry, tokenUntil)
	}
	procs := make([]*proc, s.procs)
	addrs := make([]string, s.procs)
	for i := range procs {
		addrs[i] = freeAddr(tb)
		own := maps.Clone(extra)
		own["LR_HTTP_ADDR"] = addrs[i]
		procs[i] = e.startProc(tb, fmt.Sprintf("relay-%d", i+1), own)
	}
	cfg := e.config(tb, extra)
	for i, p := range procs {
		waitFor(tb, 120*time.Second, p.name+" ready", func() bool {
			if p.exited() {
				tb.Fatalf("%s exited while starting: %v\n%s", p.name, p.err, p.tail(40))
			}
			return ready(addrs[i]) == 200
		})
	}
	f := scaleFigures{spec: s}
	f.idleRSS = scaleMem(tb, procs, "VmRSS")

	// Trickle results are timed as they are stored.
	var (
		mu      sync.Mutex
		arrived = map[string]time.Time{}
	)
	sub, err := e.nc.Subscribe(cfg.ResultSubjectPrefix+".trickle.>", func(m *nats.Msg) {
		now := time.Now()
		var ev scaleResult
		if json.Unmarshal(m.Data, &ev) != nil {
			return // counted as unexpected when the stream is read
		}
		id := strings.ToLower(ev.ActionID)
		mu.Lock()
		if _, dup := arrived[id]; !dup {
			arrived[id] = now
		}
		mu.Unlock()
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	tap := &scaleTap{}
	tapSub, err := e.nc.Subscribe("$KV."+cfg.QuotaBucket+".>", tap.observe)
	if err != nil {
		tb.Fatal(err)
	}
	if err := tapSub.SetPendingLimits(-1, -1); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = tapSub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		tb.Fatal(err)
	}

	if s.idleFor > 0 {
		// Idle tenants must cost nothing: no token request, no KV write, (almost) no CPU. A relay that fetches
		// its tenants' tokens at start may still be doing so once ready: the idle period starts when the token
		// requests have stopped for 2s.
		last, lastChange := len(e.sim.TokenRequests()), time.Now()
		waitFor(tb, 120*time.Second, "the token requests of the start to stop", func() bool {
			if n := len(e.sim.TokenRequests()); n != last {
				last, lastChange = n, time.Now()
			}
			return time.Since(lastChange) >= 2*time.Second
		})
		f.startTokens = last
		cpu0, tok0 := scaleCPU(tb, procs), len(e.sim.TokenRequests())
		seq0, _, _ := scaleKVSeq(tb, e, cfg.QuotaBucket)
		idleUntil := time.Now().Add(s.idleFor)
		waitFor(tb, s.idleFor+10*time.Second, "the idle period to pass", func() bool { return time.Now().After(idleUntil) })
		f.idleCPU = scaleCPU(tb, procs) - cpu0
		f.idleTokens = len(e.sim.TokenRequests()) - tok0
		seq1, _, _ := scaleKVSeq(tb, e, cfg.QuotaBucket)
		f.idleKVWrites = seq1 - seq0
	}

	seq0, _, _ := scaleKVSeq(tb, e, cfg.QuotaBucket)
	tap.on.Store(true)
	cpu0 := scaleCPU(tb, procs)
	start := time.Now()
	f.expiry, f.tokenUntil = expiry, tokenUntil
	e.waitStream(tb, cfg.SourceStream)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var acks []jetstream.PubAckFuture
	for round := range s.events {
		for i := range s.tenants {
			payload, err := json.Marshal(perTenant[i][round].MachineAction)
			if err != nil {
				tb.Fatal(err)
			}
			fut, err := e.js.PublishAsync(cfg.SourceSubject, payload)
			if err != nil {
				tb.Fatalf("publish: %v", err)
			}
			acks = append(acks, fut)
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-ctx.Done():
		tb.Fatal("backlog publish did not complete")
	}
	for _, a := range acks {
		select {
		case err := <-a.Err():
			tb.Fatalf("publish: %v", err)
		default:
		}
	}

	// The trickle starts once every backlogged tenant has made calls: their backlogs hold the workers.
	waitFor(tb, 120*time.Second, "every backlogged tenant's first call", func() bool {
		if s.events == 0 {
			return true
		}
		counts := e.sim.AllTenantCounts()
		n := 0
		for i := range s.tenants {
			if counts[strings.ToLower(creds[i].TenantID)].LinksAdmitted > 0 {
				n++
			}
		}
		return n == s.tenants
	})
	published := make([]time.Time, len(trickle))
	for i, a := range trickle {
		if i > 0 {
			next := published[i-1].Add(s.trickleGap)
			waitFor(tb, s.trickleGap+10*time.Second, "the next trickle tick", func() bool { return !time.Now().Before(next) })
		}
		payload, err := json.Marshal(a.MachineAction)
		if err != nil {
			tb.Fatal(err)
		}
		published[i] = time.Now()
		e.publishRaw(tb, cfg, payload)
	}

	// Every command has its result; progress must not stall for a minute.
	total := len(want)
	last, lastChange := uint64(0), time.Now()
	for {
		n := e.streamMsgs(tb, cfg.ResultStream)
		if n >= uint64(total) {
			break
		}
		if n != last {
			last, lastChange = n, time.Now()
		}
		for _, p := range procs {
			if p.exited() {
				tb.Fatalf("%s exited: %v\n%s", p.name, p.err, p.tail(40))
			}
		}
		if time.Since(lastChange) > 60*time.Second {
			tb.Fatalf("no result for 60s: %d of %d results", n, total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.busy = time.Since(start)
	f.cpu = scaleCPU(tb, procs) - cpu0
	f.peakRSS = scaleMem(tb, procs, "VmHWM")
	for _, a := range addrs {
		f.discarded += scaleMetric(tb, "http://"+a+"/metrics", "lr_quota_grants_discarded_total")
	}
	tap.on.Store(false)
	seq1, entries, entryBytes := scaleKVSeq(tb, e, cfg.QuotaBucket)
	f.kvWrites = seq1 - seq0
	f.kvTapMsgs, f.kvTapBytes = tap.msgs.Load(), tap.bytes.Load()
	if entries > 0 {
		f.kvEntryBytes = float64(entryBytes) / float64(entries)
	}

	// Utilisation per backlogged tenant over its own measured interval.
	for i := range s.tenants {
		adm := e.sim.Admitted(creds[i].TenantID, simulator.EndpointLinks)
		st := scaleTenant{name: names[i]}
		if len(adm) > 0 {
			from := adm[0]
			to := from.Add(s.measure)
			st.allowed = scaleAllowed(ws, from, to)
			st.made = quotaCount(adm, from, to)
			st.outlasted = !adm[len(adm)-1].Before(to)
			for _, a := range adm {
				st.calls = append(st.calls, a.Sub(from).Round(time.Millisecond))
			}
		}
		f.tenants = append(f.tenants, st)
		f.allowed += st.allowed
		f.made += st.made
		for _, w := range ws {
			if got := simulator.MaxInWindow(adm, w.Per); got > w.Limit {
				tb.Errorf("tenant %s: simulator admitted %d calls in some %s, over the limit of %d", names[i], got, w.Per, w.Limit)
			}
		}
	}
	slices.SortStableFunc(f.tenants, func(a, b scaleTenant) int {
		switch ua, ub := a.utilisation(), b.utilisation(); {
		case ua < ub:
			return -1
		case ua > ub:
			return 1
		}
		return 0
	})
	st := e.sim.Stats()
	f.throttled, f.duringRA = st.Throttled, st.CallsDuringRetryAfter
	for _, c := range e.sim.AllTenantCounts() {
		f.admitted += c.LinksAdmitted + c.ActionsAdmitted
	}

	// Trickle latency against what its own windows imply.
	mu.Lock()
	implied := scaleIdeal(ws, published)
	for i, a := range trickle {
		got, ok := arrived[strings.ToLower(a.MachineAction.ID)]
		if !ok {
			tb.Errorf("trickle event %s: no result seen on the subscription", a.MachineAction.ID)
			continue
		}
		f.trickleLatency = append(f.trickleLatency, got.Sub(published[i]))
		f.trickleImplied = append(f.trickleImplied, implied[i].Sub(published[i]))
	}
	mu.Unlock()

	// Nothing lost, nothing duplicated.
	f.commands = total
	seen := map[string]int{}
	msgs, err := tryReadStream(e.js, cfg.ResultStream)
	if err != nil {
		tb.Fatalf("reading the results: %v", err)
	}
	for _, m := range msgs {
		var ev scaleResult
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			f.unexpected++
			continue
		}
		id := scaleCommandID(ev.ActionID, ev.Index)
		if _, ok := want[id]; !ok {
			f.unexpected++
			continue
		}
		seen[id]++
	}
	for id := range want {
		switch n := seen[id]; {
		case n == 0:
			f.lost++
		case n > 1:
			f.duplicates += n - 1
		}
	}
	f.results = len(seen)
	f.deadLetters = int(e.streamMsgs(tb, cfg.DeadLetterStream))

	if f.expiry.IsZero() {
		return f
	}
	// Token requests around the shared expiry: those before tokenUntil are the processes' first tokens, the
	// others refreshes.
	var refreshes []time.Time
	for _, r := range e.sim.TokenRequests() {
		if r.At.Before(f.tokenUntil) {
			f.tokenFirst++
			continue
		}
		refreshes = append(refreshes, r.At)
	}
	f.tokenRefreshes = len(refreshes)
	if len(refreshes) > 0 {
		slices.SortFunc(refreshes, func(a, b time.Time) int { return a.Compare(b) })
		rel := make([]time.Duration, len(refreshes))
		for i, r := range refreshes {
			rel[i] = r.Sub(f.expiry)
		}
		f.tokenRefreshFirst = rel[0]
		f.tokenP5 = scalePercentile(rel, 0.05)
		f.tokenSpread = scalePercentile(rel, 0.95) - f.tokenP5
		lo := 0
		var peakAt time.Time
		for hi := range refreshes {
			for refreshes[lo].Add(time.Second).Compare(refreshes[hi]) <= 0 {
				lo++
			}
			if n := hi - lo + 1; n > f.tokenPeakSecond {
				f.tokenPeakSecond, peakAt = n, refreshes[hi]
			}
		}
		for _, r := range refreshes {
			if d := r.Sub(peakAt); d > -30*time.Second && d <= 30*time.Second {
				f.tokenMinute++
			}
		}
	}
	return f
}

// scaleResult is the part of a result event that names its command.
type scaleResult struct {
	ActionID string `json:"actionId"`
	Index    int    `json:"index"`
}

// scaleCommandID names one command of one action. (Results are matched on their body: the Nats-Msg-Id format
// is the relay's business.)
func scaleCommandID(actionID string, index int) string {
	return strings.ToLower(actionID) + "." + strconv.Itoa(index)
}

// scaleMetric returns the sum of a metric's samples in a /metrics page.
func scaleMetric(tb testing.TB, url, name string) int {
	tb.Helper()
	sum, _ := quotaSum(parseMetrics(tb, metricsBody(tb, url)), name, nil)
	return int(sum)
}

// scaleSummary formats one run's figures as a table.
func scaleSummary(f scaleFigures) string {
	var b strings.Builder
	s := f.spec
	w := f.worst()
	fmt.Fprintf(&b, "%d backlogged tenants + 1 trickle, %d processes × %d workers, windows %s per tenant (LR_QUOTA_SKEW_MARGIN %s), backlog %d×%d calls per tenant, measured over %s per tenant\n",
		s.tenants, s.procs, s.workers, s.limits, s.margin, s.events, s.perEvent, s.measure)
	fmt.Fprintf(&b, "| %-38s | %s |\n", "figure", "value")
	fmt.Fprintf(&b, "|%s|%s|\n", strings.Repeat("-", 40), strings.Repeat("-", 40))
	row := func(k, format string, args ...any) {
		fmt.Fprintf(&b, "| %-38s | %s |\n", k, fmt.Sprintf(format, args...))
	}
	row("calls made / allowed (all tenants)", "%d / %d = %.1f%%", f.made, f.allowed, 100*f.utilisation())
	row("worst tenant", "%s: %d / %d = %.1f%%", w.name, w.made, w.allowed, 100*w.utilisation())
	row("429s (calls during Retry-After)", "%d (%d)", f.throttled, f.duringRA)
	row("grants discarded as recorded too late", "%d", f.discarded)
	row("results / commands", "%d / %d", f.results, f.commands)
	row("lost, duplicated, unexpected, dead", "%d, %d, %d, %d", f.lost, f.duplicates, f.unexpected, f.deadLetters)
	ex := f.trickleExcess()
	lat := slices.Clone(f.trickleLatency)
	slices.Sort(lat)
	row("trickle latency p50 / p99", "%s / %s (%d events)", scalePercentile(lat, 0.5).Round(time.Millisecond),
		scalePercentile(lat, 0.99).Round(time.Millisecond), len(lat))
	row("trickle latency beyond its quota, p99", "%s", scalePercentile(ex, 0.99).Round(time.Millisecond))
	row("trickle latency (implied) per event", "%s", scaleTrickleList(f))
	var peak int64
	for _, r := range f.peakRSS {
		peak = max(peak, r)
	}
	row("peak RSS per process (VmHWM)", "%s", scaleMiBList(f.peakRSS))
	row("RSS once ready, per process", "%s", scaleMiBList(f.idleRSS))
	row("run (first publish to last result)", "%s", f.busy.Round(100*time.Millisecond))
	if f.results > 0 {
		row("CPU seconds per 1,000 results", "%.2f (%.1f s in all)", 1000*f.cpu/float64(f.results), f.cpu)
	}
	if f.admitted > 0 {
		row("KV writes stored per admitted call", "%.2f (entry %.0f B)", float64(f.kvWrites)/float64(f.admitted), f.kvEntryBytes)
		row("KV bytes published per admitted call", "%.0f B (%.2f publishes)", float64(f.kvTapBytes)/float64(f.admitted),
			float64(f.kvTapMsgs)/float64(f.admitted))
	}
	if s.idleFor > 0 {
		row("idle "+s.idleFor.String()+": CPU, token requests, KV writes", "%.2f s, %d, %d (%d token requests at start)", f.idleCPU, f.idleTokens, f.idleKVWrites, f.startTokens)
	}
	if !f.expiry.IsZero() {
		row("tokens: first, refreshes (busiest s, min)", "%d, %d (%d, %d)", f.tokenFirst, f.tokenRefreshes, f.tokenPeakSecond, f.tokenMinute)
		row("refreshes vs the shared expiry", "first %s, p5 %s, p5-p95 spread %s", f.tokenRefreshFirst.Round(10*time.Millisecond),
			f.tokenP5.Round(10*time.Millisecond), f.tokenSpread.Round(10*time.Millisecond))
	}
	return b.String()
}

// scaleTrickleList lists each trickle event's latency with the delay its tenant's windows imply.
func scaleTrickleList(f scaleFigures) string {
	parts := make([]string, len(f.trickleLatency))
	for i := range parts {
		parts[i] = fmt.Sprintf("%s (%s)", f.trickleLatency[i].Round(time.Millisecond), f.trickleImplied[i].Round(time.Millisecond))
	}
	return strings.Join(parts, ", ")
}

func scaleMiBList(v []int64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.1f MiB", bigMiB(x))
	}
	return strings.Join(parts, ", ")
}

// TestScaleManyTenants is the scale scenario, scaled down in time: 50 tenants with a backlog beyond
// their windows, 2 lr-relay processes, and a trickle tenant sending a few single-command events while every
// other tenant is backlogged. It asserts zero 429s, at least 90% of the allowed calls for every tenant,
// nothing lost or duplicated, and the trickle tenant's p99 latency within 2s of what its own windows imply
// (they are idle, so about zero).
func TestScaleManyTenants(t *testing.T) {
	s := scaleSpec{
		tenants: 50, procs: 2,
		// More workers than tenants, fewer than backlog events: every tenant can always have an event in
		// flight, and the trickle's events still arrive behind the others' backlogs in the stream.
		workers: 40,
		// Per tenant 4/1s and 12/5s: 2.4 calls/s in the long run, 120/s for all 50. Events of 2 commands: like
		// the real windows (100/1m) against a live response of a few commands, an event fits in the shortest
		// window, so the relay can wait for room for all of its calls before it takes a worker.
		limits: "4/1s,12/5s", events: 20, perEvent: 2, measure: 10 * time.Second,
		trickle: 5, trickleGap: time.Second,
	}
	f := scaleRun(t, s)
	t.Logf("scale run:\n%s", scaleSummary(f))
	if n := len(f.tenants); n > 0 {
		var worst []string
		for _, tn := range f.tenants[:min(5, n)] {
			worst = append(worst, fmt.Sprintf("%s %d/%d", tn.name, tn.made, tn.allowed))
		}
		t.Logf("five worst tenants: %s; the worst one's calls: %v", strings.Join(worst, ", "), f.tenants[0].calls)
	}

	if f.throttled != 0 || f.duringRA != 0 {
		t.Errorf("simulator answered %d 429s and saw %d calls during Retry-After, want 0 and 0", f.throttled, f.duringRA)
	}
	if f.lost != 0 || f.duplicates != 0 || f.unexpected != 0 || f.deadLetters != 0 {
		t.Errorf("of %d commands: %d lost, %d duplicated, %d unexpected results, %d dead letters; want 0 of each",
			f.commands, f.lost, f.duplicates, f.unexpected, f.deadLetters)
	}
	floor := minUtilisation(t)
	for _, tn := range f.tenants {
		if !tn.outlasted {
			t.Errorf("tenant %s: its backlog ran out within the measured %s: the figure says nothing (make the backlog longer)", tn.name, s.measure)
		}
		if tn.utilisation() < floor {
			t.Errorf("tenant %s made %d of the %d calls its windows allowed in %s (%.1f%%), want at least %.0f%%",
				tn.name, tn.made, tn.allowed, s.measure, 100*tn.utilisation(), 100*floor)
		}
	}
	ex := f.trickleExcess()
	if len(ex) != s.trickle {
		t.Fatalf("timed %d trickle results, want %d", len(ex), s.trickle)
	}
	if p99 := scalePercentile(ex, 0.99); p99 > 2*time.Second {
		t.Errorf("trickle tenant: p99 latency %s beyond its quota-implied delay, want at most 2s (latencies %v, implied %v): "+
			"its events waited behind the other tenants' backlogs", p99.Round(time.Millisecond), scaleRound(f.trickleLatency), scaleRound(f.trickleImplied))
	}
}

func scaleRound(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
