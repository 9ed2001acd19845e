package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/app"
	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/embedded"
	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/simulator"
)

// The pipeline benchmarks measure the whole relay path with the throttle lifted: an event goes into the source
// stream, the relay pulls it, asks the simulator for the link (a real HTTP call on loopback), downloads and
// parses a 4 KB RunScript result, and publishes the result event. Everything (nats-server, simulator, relay and
// the benchmark's own subscriber) shares one process and the machine's cores, so the figures are a floor for
// what a dedicated relay process achieves, not a ceiling.
//
//	go test -run '^$' -bench Pipeline ./internal/e2e/
//
// Metrics: results/s over the timed batches, and p50/p99/max latency from the event's publish to the arrival
// of its result on a core NATS subscription to the results subjects. In the burst cases a batch of events is
// published at once, so latency includes the time an event waits for a free worker; the serial cases publish
// one event at a time and measure the pipeline's own latency. conns/result counts the TCP connections the
// simulator accepted per result (API and blob together): 0 when every call reuses a pooled connection.

// benchUnlimited is a window the benchmarks never reach, for both the relay's limiter and the simulator's throttle.
const benchUnlimited = "1000000/1s"

// benchBatch is the number of events published per timed iteration in the burst cases.
const benchBatch = 256

func BenchmarkPipeline(b *testing.B) {
	cases := []struct {
		name    string
		workers int
		shared  bool
		serial  bool
	}{
		{name: "burst/workers=8/shared-quota=false", workers: 8, shared: false},
		{name: "burst/workers=8/shared-quota=true", workers: 8, shared: true},
		{name: "burst/workers=32/shared-quota=false", workers: 32, shared: false},
		{name: "burst/workers=32/shared-quota=true", workers: 32, shared: true},
		{name: "serial/workers=8/shared-quota=false", workers: 8, shared: false, serial: true},
		{name: "serial/workers=8/shared-quota=true", workers: 8, shared: true, serial: true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			batch := benchBatch
			if c.serial {
				batch = 1
			}
			benchPipeline(b, c.workers, c.shared, batch)
		})
	}
}

func benchPipeline(b *testing.B, workers int, shared bool, batch int) {
	e, accepted := newBenchEnv(b, simulator.Config{LinkLimits: benchUnlimited, ActionLimits: benchUnlimited})
	cfg := benchConfig(b, e.vars(map[string]string{
		"LR_WORKERS":            fmt.Sprint(workers),
		"LR_RATE_LIMITS":        benchUnlimited,
		"LR_ACTION_RATE_LIMITS": benchUnlimited,
		"LR_QUOTA_SHARED":       fmt.Sprint(shared),
		"LR_LOG_LEVEL":          "info",
		"LR_ACK_WAIT":           "30s",
	}))
	startBenchRelay(b, e, cfg)
	benchWaitFor(b, 20*time.Second, "source stream and consumer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := e.js.Consumer(ctx, cfg.SourceStream, cfg.Consumer)
		return err == nil
	})
	col := newBenchCollector(b, e.nc, cfg.ResultSubjectPrefix+".>")

	seed := int64(1)
	runBatch := func() {
		actions := simulator.GenerateActions(batch, 1, 4096, seed)
		seed++
		for _, a := range actions {
			e.sim.AddAction(a)
		}
		col.expect(actions)
		for _, a := range actions {
			payload, err := json.Marshal(a.MachineAction)
			if err != nil {
				b.Fatal(err)
			}
			col.published(a.MachineAction.ID)
			if _, err := e.js.PublishAsync(cfg.SourceSubject, payload); err != nil {
				b.Fatalf("publish: %v", err)
			}
		}
		select {
		case <-e.js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			b.Fatal("source events were not all acknowledged by the server within 30s")
		}
		col.wait(b, 2*time.Minute)
	}

	// Warm up (token, connections, consumer) outside the timed loop, then forget its latencies.
	runBatch()
	col.reset()
	conns0 := accepted.Load()

	results := 0
	for b.Loop() {
		runBatch()
		results += batch
	}
	elapsed := b.Elapsed()
	conns := accepted.Load() - conns0

	lat := col.latencies()
	if len(lat) != results {
		b.Fatalf("measured %d latencies, want one per result (%d)", len(lat), results)
	}
	if bad := col.notRelayed.Load(); bad != 0 {
		b.Fatalf("%d results did not have outcome relayed", bad)
	}
	if dup := col.duplicates.Load(); dup != 0 {
		b.Fatalf("%d duplicate results arrived", dup)
	}
	st := e.sim.Stats()
	if st.Throttled != 0 {
		b.Fatalf("simulator answered %d 429s; the throttle was meant to be out of reach", st.Throttled)
	}
	if n := benchStreamMsgs(b, e.js, cfg.DeadLetterStream); n != 0 {
		b.Fatalf("dead-letter stream holds %d records, want 0", n)
	}
	b.ReportMetric(0, "ns/op") // an op is a whole batch; results/s is the figure that means something
	b.ReportMetric(float64(results)/elapsed.Seconds(), "results/s")
	b.ReportMetric(benchMs(benchPercentile(lat, 0.50)), "p50-ms")
	b.ReportMetric(benchMs(benchPercentile(lat, 0.99)), "p99-ms")
	b.ReportMetric(benchMs(lat[len(lat)-1]), "max-ms")
	b.ReportMetric(float64(conns)/float64(results), "conns/result")
}

// benchCollector records when each expected result arrives on a core subscription to the results subjects.
type benchCollector struct {
	mu         sync.Mutex
	sent       map[string]time.Time // Nats-Msg-Id -> publish time of its event
	pending    map[string]bool
	lat        []time.Duration
	done       chan struct{}
	notRelayed atomic.Int64
	duplicates atomic.Int64
}

func newBenchCollector(tb testing.TB, nc *nats.Conn, subject string) *benchCollector {
	tb.Helper()
	c := &benchCollector{sent: map[string]time.Time{}, pending: map[string]bool{}}
	sub, err := nc.Subscribe(subject, c.arrived)
	if err != nil {
		tb.Fatal(err)
	}
	// The results of a whole batch can arrive faster than this callback runs.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

// expect registers the results a batch must produce; it must be called before the batch is published.
func (c *benchCollector) expect(actions []simulator.Action) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = make(chan struct{})
	for _, a := range actions {
		for _, cmd := range a.MachineAction.Commands {
			c.pending[relay.MsgID(a.MachineAction.ID, cmd.Index)] = true
		}
	}
}

func (c *benchCollector) published(actionID string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent[actionID] = now
}

func (c *benchCollector) arrived(m *nats.Msg) {
	now := time.Now()
	id := m.Header.Get("Nats-Msg-Id")
	if !bytes.Contains(m.Data, []byte(`"outcome":"relayed"`)) {
		c.notRelayed.Add(1)
	}
	actionID, _, _ := strings.Cut(id, ".")
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pending[id] {
		c.duplicates.Add(1)
		return
	}
	delete(c.pending, id)
	c.lat = append(c.lat, now.Sub(c.sent[actionID]))
	if len(c.pending) == 0 {
		close(c.done)
	}
}

func (c *benchCollector) wait(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	c.mu.Lock()
	done := c.done
	c.mu.Unlock()
	select {
	case <-done:
	case <-time.After(timeout):
		c.mu.Lock()
		n := len(c.pending)
		c.mu.Unlock()
		tb.Fatalf("%d results still missing after %s", n, timeout)
	}
}

func (c *benchCollector) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lat = nil
}

// latencies returns the recorded latencies, sorted.
func (c *benchCollector) latencies() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.lat)
	slices.Sort(out)
	return out
}

// benchPercentile returns the p-quantile of sorted (nearest rank).
func benchPercentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func benchMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// newBenchEnv is newEnv for benchmarks (harness_test.go's helpers take *testing.T): the same world, with the
// simulator's logging off, and a count of the TCP connections the simulator accepted. Only the fields the
// env methods without a *testing.T parameter need (vars) and the ones used here are set.
func newBenchEnv(tb testing.TB, simCfg simulator.Config) (*env, *atomic.Int64) {
	tb.Helper()
	ns, err := embedded.Start(embedded.Options{StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(ns.Shutdown)
	e := &env{ns: ns, logs: &syncBuffer{}}
	tb.Cleanup(func() {
		if tb.Failed() {
			lines := strings.Split(e.logs.String(), "\n")
			tb.Logf("last log lines:\n%s", strings.Join(lines[max(0, len(lines)-100):], "\n"))
		}
	})
	if simCfg.Seed == 0 {
		simCfg.Seed = 7
	}
	simCfg.Log = zerolog.Nop()
	e.sim, err = simulator.New(simCfg)
	if err != nil {
		tb.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ln := &benchListener{Listener: inner}
	e.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.sim.Serve(ctx, ln) }()
	tb.Cleanup(func() { cancel(); <-done })

	e.nc, err = nats.Connect(ns.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.nc.Close)
	e.js, err = jetstream.New(e.nc)
	if err != nil {
		tb.Fatal(err)
	}
	return e, &ln.accepted
}

// benchListener counts accepted connections.
type benchListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *benchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// benchConfig loads the relay configuration from vars the way main does.
func benchConfig(tb testing.TB, vars map[string]string) config.Config {
	tb.Helper()
	for k, v := range vars {
		tb.Setenv(k, v)
	}
	cfg, err := config.Load()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// startBenchRelay is env.startRelay for benchmarks: it logs at info level, as a production relay does.
func startBenchRelay(tb testing.TB, e *env, cfg config.Config) {
	tb.Helper()
	a, err := app.New(app.Options{Config: cfg, Logger: zerolog.New(e.logs).Level(zerolog.InfoLevel)})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("relay returned %v", err)
			}
		case <-time.After(30 * time.Second):
			tb.Errorf("relay did not stop within 30s")
		}
	})
}

func benchWaitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func benchStreamMsgs(tb testing.TB, js jetstream.JetStream, name string) uint64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}
