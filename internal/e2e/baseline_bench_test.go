package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/app"
	"github.com/lr-relay/lr-relay/internal/simulator"
)

// BenchmarkRelayVsBaseline runs, in one process on one machine, the relay pipeline (quota lifted, shared KV
// quota on) and a bare loop doing the same JetStream and HTTP work per command against the same simulator:
// pull one event from a durable consumer, ask for the result link, download the blob, publish a result with
// Nats-Msg-Id and wait for its PubAck, ack the event. Both get the same events (4 KB RunScript outputs, one
// command each, spread over the tenants) and the same concurrency (8 workers, 8 baseline goroutines).
//
//	go test -run '^$' -bench RelayVsBaseline -benchtime 1x ./internal/e2e/
//
// Metrics: relay-results/s, baseline-results/s and their ratio (the target is at least 0.5), and the
// process CPU per result while each side ran (less sensitive to the machine's load than the rates).
func BenchmarkRelayVsBaseline(b *testing.B) {
	for _, tenants := range []int{1, 64} {
		b.Run(fmt.Sprintf("tenants=%d", tenants), func(b *testing.B) { benchRelayVsBaseline(b, tenants) })
	}
}

// baselineEvents is the number of events (one result each) per timed run of each side.
const baselineEvents = 2000

// baselineRounds is the number of alternating rounds the events of one iteration are split into.
const baselineRounds = 4

// baselineWorkers is the concurrency of both sides.
const baselineWorkers = 8

func benchRelayVsBaseline(b *testing.B, n int) {
	e, tenants, extra := benchTenantsEnv(b, n)
	extra["LR_WORKERS"] = strconv.Itoa(baselineWorkers)
	extra["LR_RATE_LIMITS"] = benchUnlimited
	extra["LR_ACTION_RATE_LIMITS"] = benchUnlimited
	extra["LR_QUOTA_SHARED"] = "true"
	extra["LR_QUOTA_SKEW_MARGIN"] = "250ms" // the default: the harness's 0s would turn leases off
	extra["LR_ACK_WAIT"] = "30s"
	cfg := e.config(b, extra)
	e.startRelay(b, cfg, func(o *app.Options) { o.Logger = zerolog.New(e.logs).Level(zerolog.InfoLevel) })
	e.waitStream(b, cfg.SourceStream)
	e.waitStream(b, cfg.ResultStream)
	col := newBenchCollector(b, e.nc, cfg.ResultSubjectPrefix+".>")
	base := newBaseline(b, e, tenants)

	seed := int64(1000)
	events := func(count int) []simulator.Action {
		actions := simulator.GenerateActions(count, 1, 4096, seed)
		seed++
		for i := range actions {
			actions[i].MachineAction.TenantID = tenants[i%len(tenants)].id
			e.sim.AddAction(actions[i])
		}
		return actions
	}
	relayRun := func(count int) time.Duration {
		actions := events(count)
		col.expect(actions)
		start := time.Now()
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
		col.wait(b, 5*time.Minute)
		return time.Since(start)
	}
	baseRun := func(count int) time.Duration { return base.run(b, events(count)) }

	// Warm up both (tokens, connections, consumers) outside the timed loop.
	relayRun(len(tenants) * 2)
	baseRun(len(tenants) * 2)

	// Each iteration runs both sides in baselineRounds alternating rounds (relay first, then baseline first,
	// and so on), so that a change in the machine's load during the run weighs on both alike. CPU is the whole
	// process's (server, simulator and client included), measured around each side's rounds.
	var relayTime, baseTime, relayCPU, baseCPU time.Duration
	results := 0
	timed := func(run func(int) time.Duration, wall, cpu *time.Duration) {
		c0 := processCPU(b)
		*wall += run(baselineEvents / baselineRounds)
		*cpu += processCPU(b) - c0
	}
	for b.Loop() {
		for round := range baselineRounds {
			if round%2 == 0 {
				timed(relayRun, &relayTime, &relayCPU)
				timed(baseRun, &baseTime, &baseCPU)
			} else {
				timed(baseRun, &baseTime, &baseCPU)
				timed(relayRun, &relayTime, &relayCPU)
			}
		}
		results += baselineEvents / baselineRounds * baselineRounds
	}
	if bad := col.notRelayed.Load(); bad != 0 {
		b.Fatalf("%d results did not have outcome relayed", bad)
	}
	if dup := col.duplicates.Load(); dup != 0 {
		b.Fatalf("%d duplicate results arrived", dup)
	}
	if st := e.sim.Stats(); st.Throttled != 0 {
		b.Fatalf("simulator answered %d 429s", st.Throttled)
	}
	relayRate := float64(results) / relayTime.Seconds()
	baseRate := float64(results) / baseTime.Seconds()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(relayRate, "relay-results/s")
	b.ReportMetric(baseRate, "baseline-results/s")
	b.ReportMetric(relayRate/baseRate, "ratio")
	b.ReportMetric(float64(relayCPU.Microseconds())/float64(results), "relay-cpu-us/result")
	b.ReportMetric(float64(baseCPU.Microseconds())/float64(results), "baseline-cpu-us/result")
}

// processCPU returns the CPU time (user and system) this process has used so far.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchTenantsEnv starts a quiet simulator serving n tenants (the first is the simulator's default tenant)
// and returns the variables of a relay serving them from a tenants file.
func benchTenantsEnv(tb testing.TB, n int) (*env, []quotaTenant, map[string]string) {
	tb.Helper()
	tenants := []quotaTenant{{name: "default", id: simulator.DefaultTenantID, client: simulator.DefaultClientID,
		secret: simulator.DefaultClientSecret}}
	var creds []simulator.Credentials
	for i := 1; i < n; i++ {
		tn := quotaTenant{name: fmt.Sprintf("t%03d", i), id: fmt.Sprintf("%08x-0000-4000-8000-%012x", 0xbe00+i, i),
			client: fmt.Sprintf("client-%d", i), secret: fmt.Sprintf("secret-%d", i)}
		tenants = append(tenants, tn)
		creds = append(creds, simulator.Credentials{TenantID: tn.id, ClientID: tn.client, ClientSecret: tn.secret})
	}
	e := newEnvWith(tb, simulator.Config{LinkLimits: benchUnlimited, ActionLimits: benchUnlimited, ExtraTenants: creds},
		envOptions{quietSimulator: true})
	if n == 1 {
		return e, tenants, map[string]string{"LR_LOG_LEVEL": "info"}
	}
	var file struct {
		Tenants []map[string]string `json:"tenants"`
	}
	for _, tn := range tenants[1:] {
		file.Tenants = append(file.Tenants, map[string]string{
			"name": tn.name, "tenantId": tn.id, "clientId": tn.client, "clientSecret": tn.secret,
			"apiUrl": "http://" + e.addr, "tokenUrl": "http://" + e.addr + "/{tenant}/oauth2/v2.0/token",
		})
	}
	data, err := json.Marshal(file)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(tb.TempDir(), "tenants.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return e, tenants, map[string]string{"LR_TENANTS_FILE": path, "LR_LOG_LEVEL": "info"}
}

// baseline is the bare loop: its own source stream, durable pull consumer and results stream on the same server.
type baseline struct {
	e      *env
	js     jetstream.JetStream
	cons   jetstream.Consumer
	http   *http.Client
	tokens map[string]string // tenantId -> bearer token
	done   atomic.Int64
}

func newBaseline(tb testing.TB, e *env, tenants []quotaTenant) *baseline {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := nats.Connect(e.ns.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BASE_SRC", Subjects: []string{"base.src"}}); err != nil {
		tb.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BASE_RES", Subjects: []string{"base.res.>"},
		Duplicates: time.Hour}); err != nil {
		tb.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "BASE_SRC", jetstream.ConsumerConfig{Durable: "base",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: 1000})
	if err != nil {
		tb.Fatal(err)
	}
	bl := &baseline{e: e, js: js, cons: cons, tokens: map[string]string{},
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	for _, tn := range tenants {
		resp, err := bl.http.PostForm("http://"+e.addr+"/"+tn.id+"/oauth2/v2.0/token", url.Values{
			"grant_type": {"client_credentials"}, "client_id": {tn.client}, "client_secret": {tn.secret},
			"scope": {"https://api.securitycenter.microsoft.com/.default"},
		})
		if err != nil {
			tb.Fatal(err)
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&tok)
		resp.Body.Close()
		if err != nil || tok.AccessToken == "" {
			tb.Fatalf("token for %s: %v", tn.name, err)
		}
		bl.tokens[tn.id] = tok.AccessToken
	}
	return bl
}

// run publishes the events to the baseline's stream and processes them with baselineWorkers goroutines; it
// returns the time from the first publish to the last ack.
func (bl *baseline) run(tb testing.TB, actions []simulator.Action) time.Duration {
	tb.Helper()
	bl.done.Store(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	for _, a := range actions {
		payload, err := json.Marshal(a.MachineAction)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := bl.js.PublishAsync("base.src", payload); err != nil {
			tb.Fatal(err)
		}
	}
	var (
		wg   sync.WaitGroup
		errs = make(chan error, baselineWorkers)
		end  atomic.Int64 // unix nanos of the last ack
	)
	want := int64(len(actions))
	for range baselineWorkers {
		wg.Go(func() {
			for bl.done.Load() < want && ctx.Err() == nil {
				fetchCtx, cancelFetch := context.WithTimeout(ctx, time.Second)
				msg, err := bl.cons.Next(jetstream.FetchContext(fetchCtx))
				cancelFetch()
				if err != nil {
					continue
				}
				if err := bl.process(ctx, msg); err != nil {
					errs <- err
					cancel()
					return
				}
				if bl.done.Add(1) == want {
					end.Store(time.Now().UnixNano())
					cancel() // the others may be waiting in a pull
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		tb.Fatal(err)
	default:
	}
	return time.Unix(0, end.Load()).Sub(start)
}

// process does one event's work: for each command the link call, the download and the result's publish, then
// the ack.
func (bl *baseline) process(ctx context.Context, msg jetstream.Msg) error {
	var a action.MachineAction
	if err := json.Unmarshal(msg.Data(), &a); err != nil {
		return err
	}
	token := bl.tokens[a.TenantID]
	for _, c := range a.Commands {
		body, err := bl.get(ctx, "http://"+bl.e.addr+"/api/machineactions/"+a.ID+
			"/GetLiveResponseResultDownloadLink(index="+strconv.Itoa(c.Index)+")", token)
		if err != nil {
			return err
		}
		var link struct {
			Value string `json:"value"`
		}
		if err := json.Unmarshal(body, &link); err != nil {
			return fmt.Errorf("link answer: %w", err)
		}
		blob, err := bl.get(ctx, link.Value, "")
		if err != nil {
			return err
		}
		result, err := json.Marshal(map[string]any{"actionId": a.ID, "index": c.Index, "output": string(blob)})
		if err != nil {
			return err
		}
		out := nats.NewMsg("base.res." + a.ID + "." + strconv.Itoa(c.Index))
		out.Header.Set("Nats-Msg-Id", a.ID+"."+strconv.Itoa(c.Index))
		out.Data = result
		if _, err := bl.js.PublishMsg(ctx, out); err != nil {
			return err
		}
	}
	return msg.Ack()
}

func (bl *baseline) get(ctx context.Context, u, token string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := bl.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d", req.URL.Path, resp.StatusCode)
	}
	return body, nil
}
