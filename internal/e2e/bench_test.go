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
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/app"
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
		batch   int
	}{
		{name: "burst/workers=8/shared-quota=false", workers: 8, shared: false},
		{name: "burst/workers=8/shared-quota=true", workers: 8, shared: true},
		{name: "burst/workers=32/shared-quota=false", workers: 32, shared: false},
		{name: "burst/workers=32/shared-quota=true", workers: 32, shared: true},
		{name: "serial/workers=8/shared-quota=false", workers: 8, shared: false, serial: true},
		{name: "serial/workers=8/shared-quota=true", workers: 8, shared: true, serial: true},
		// A 5,000-event backlog published at once (issue 12, item 5): run it with -benchtime 1x.
		{name: "backlog=5000/workers=32/shared-quota=true", workers: 32, shared: true, batch: 5000},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			batch := benchBatch
			switch {
			case c.serial:
				batch = 1
			case c.batch > 0:
				batch = c.batch
			}
			benchPipeline(b, c.workers, c.shared, batch)
		})
	}
}

func benchPipeline(b *testing.B, workers int, shared bool, batch int) {
	counter := &benchListener{}
	e := newEnvWith(b, simulator.Config{LinkLimits: benchUnlimited, ActionLimits: benchUnlimited}, envOptions{
		quietSimulator: true,
		wrapListener:   func(ln net.Listener) net.Listener { counter.Listener = ln; return counter },
	})
	accepted := &counter.accepted
	cfg := e.config(b, map[string]string{
		"LR_WORKERS":            fmt.Sprint(workers),
		"LR_RATE_LIMITS":        benchUnlimited,
		"LR_ACTION_RATE_LIMITS": benchUnlimited,
		"LR_QUOTA_SHARED":       fmt.Sprint(shared),
		"LR_LOG_LEVEL":          "info",
		"LR_ACK_WAIT":           "30s",
	})
	// Log at info level, as a production relay does.
	e.startRelay(b, cfg, func(o *app.Options) { o.Logger = zerolog.New(e.logs).Level(zerolog.InfoLevel) })
	waitFor(b, 20*time.Second, "source stream and consumer", func() bool {
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
	if n := e.streamMsgs(b, cfg.DeadLetterStream); n != 0 {
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
	sent       map[string]time.Time // action id -> publish time of its event
	pending    map[string]bool      // <actionId>.<index>: the Nats-Msg-Id less its tenant
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
			c.pending[fmt.Sprintf("%s.%d", strings.ToLower(a.MachineAction.ID), cmd.Index)] = true
		}
	}
}

func (c *benchCollector) published(actionID string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent[strings.ToLower(actionID)] = now
}

func (c *benchCollector) arrived(m *nats.Msg) {
	now := time.Now()
	// Nats-Msg-Id is <tenant>.<actionId>.<index> (relay.MsgID).
	_, id, _ := strings.Cut(m.Header.Get("Nats-Msg-Id"), ".")
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
