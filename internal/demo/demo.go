// Package demo runs the whole lr-relay pipeline on one machine with no setup: an embedded JetStream server, the
// built-in Defender API simulator, sample events of every kind (including bad ones), and the relay itself,
// running the same code as `lr-relay run`.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/app"
	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/embedded"
	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/simulator"
)

// Options configures a demo run.
type Options struct {
	// Config is the user's configuration; the demo points NATS, the API and the downloader at its own
	// embedded parts and keeps the rest (workers, limits, inline caps...).
	Config config.Config
	Logger zerolog.Logger
	Out    io.Writer
	// JSON prints every result event whole, as a JSON line.
	JSON bool
	// Timeout bounds the wait for every sample to be accounted for (0: only ctx bounds it).
	Timeout time.Duration
	// Serve keeps the embedded server, the simulator and the relay running after the summary, until ctx
	// ends, and prints how to explore them.
	Serve bool
}

// Summary is what the demo saw.
type Summary struct {
	Events, Commands      int
	Results               int
	ExpectedDeadLetters   int
	DeadLetters           int
	Throttled             int
	CallsDuringRetryAfter int
	BlobAuthHeaders       int
	Outcomes              map[string]int
	// Objects is how many results must reference content in the Object Store (the large samples), and
	// ObjectsVerified how many did, with the stored object's SHA-256 and size matching the reference and
	// the content the simulator served.
	Objects, ObjectsVerified int
}

// OK reports whether everything was relayed: one result per command, one dead letter per bad event, and no
// throttling or credential leak at the simulator.
func (s Summary) OK() bool {
	return s.Results == s.Commands && s.DeadLetters == s.ExpectedDeadLetters && s.Throttled == 0 &&
		s.CallsDuringRetryAfter == 0 && s.BlobAuthHeaders == 0 && s.ObjectsVerified == s.Objects
}

// badEvent is a sample that must end in the dead-letter stream.
type badEvent struct {
	name    string
	payload []byte
}

// Run runs the demo until every sample is accounted for or ctx ends.
func Run(ctx context.Context, o Options) (Summary, error) {
	var sum Summary
	// With Serve the relay keeps printing while the summary is written: one lock for every line.
	o.Out = &lockedWriter{w: o.Out}
	dir, err := os.MkdirTemp("", "lr-relay-demo-")
	if err != nil {
		return sum, err
	}
	defer os.RemoveAll(dir)

	ns, err := embedded.Start(embedded.Options{StoreDir: dir})
	if err != nil {
		return sum, err
	}
	defer ns.Shutdown()

	sim, err := simulator.New(simulator.Config{Log: o.Logger, Seed: 1}) // the simulator adds its component
	if err != nil {
		return sum, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return sum, err
	}
	simCtx, stopSim := context.WithCancel(context.WithoutCancel(ctx))
	simDone := make(chan struct{})
	go func() { defer close(simDone); _ = sim.Serve(simCtx, ln) }()
	defer func() { stopSim(); <-simDone }()
	addr := ln.Addr().String()

	large := simulator.LargeSampleActions(simulator.DefaultTenantID)
	samples := append(simulator.SampleActions(simulator.DefaultTenantID), large...)
	for _, a := range samples {
		sim.AddAction(a)
	}
	bad := badEvents(sim)
	objects := expectedObjects(large)
	sum.Objects = len(objects)

	cfg := o.Config
	cfg.NATSURL = ns.ClientURL()
	cfg.NATSCredsFile = ""
	cfg.MDEAPIURL = "http://" + addr
	cfg.MDETokenURL = "http://" + addr + "/{tenant}/oauth2/v2.0/token"
	cfg.MDEScope = "https://api.securitycenter.microsoft.com/.default"
	cfg.MDETenantID, cfg.MDEClientID = simulator.DefaultTenantID, simulator.DefaultClientID
	cfg.MDEClientSecret, cfg.MDEClientSecretFile = simulator.DefaultClientSecret, ""
	cfg.TenantsFile = ""
	cfg.DownloadAllowHTTP = true
	cfg.DownloadAllowedHosts = []string{addr}
	cfg.Provision = true
	cfg.StreamReplicas = 1
	if os.Getenv("LR_HTTP_ADDR") == "" {
		cfg.HTTPAddr = ""
	}
	if os.Getenv("LR_RETRY_BACKOFF") == "" {
		cfg.RetryBackoff = []time.Duration{200 * time.Millisecond, time.Second, 2 * time.Second}
	}

	out := &printer{w: o.Out, json: o.JSON, outcomes: map[string]int{}, refs: map[string]*result.ObjectRef{}}
	allDone := make(chan struct{})
	var doneOnce sync.Once
	for _, a := range samples {
		sum.Events++
		sum.Commands += len(a.MachineAction.Commands)
	}
	sum.ExpectedDeadLetters = len(bad)
	check := func() {
		if r, d := out.counts(); r >= sum.Commands && d >= sum.ExpectedDeadLetters {
			doneOnce.Do(func() { close(allDone) })
		}
	}
	a, err := app.New(app.Options{
		Config: cfg, Logger: o.Logger,
		OnResult:     func(ev *result.Event) { out.result(ev); check() },
		OnDeadLetter: func(dl *relay.DeadLetter) { out.deadLetter(dl); check() },
	})
	if err != nil {
		return sum, err
	}
	runCtx, stopRelay := context.WithCancel(ctx)
	defer stopRelay()
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(runCtx) }()
	waitCtx := ctx
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}

	fmt.Fprintf(o.Out, "lr-relay demo: embedded JetStream %s, Defender API simulator http://%s\n", ns.ClientURL(), addr)
	fmt.Fprintf(o.Out, "publishing %d sample actions (%d commands) and %d bad events to %s\n\n",
		sum.Events, sum.Commands, len(bad), cfg.SourceSubject)
	if err := publish(waitCtx, ns.ClientURL(), cfg, samples, bad); err != nil {
		stopRelay()
		<-runErr
		return sum, err
	}

	select {
	case <-allDone:
	case err := <-runErr:
		return sum, fmt.Errorf("relay stopped early: %w", err)
	case <-waitCtx.Done():
	}
	// The summary counts what happened up to here; with Serve the relay keeps running (and printing).
	st := sim.Stats()
	sum.Results, sum.DeadLetters = out.counts()
	sum.Throttled, sum.CallsDuringRetryAfter, sum.BlobAuthHeaders = st.Throttled, st.CallsDuringRetryAfter, st.BlobAuthHeaders
	sum.Outcomes = out.outcomeCounts()
	if !o.Serve {
		stopRelay()
		if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
			return sum, err
		}
	}
	fmt.Fprintln(o.Out)
	sum.ObjectsVerified = verifyObjects(waitCtx, o.Out, ns.ClientURL(), out.objectRefs(), objects)
	fmt.Fprintf(o.Out, "summary: %d/%d commands relayed, %d/%d bad events dead-lettered, %d/%d large results verified in the object store, outcomes %v\n",
		sum.Results, sum.Commands, sum.DeadLetters, sum.ExpectedDeadLetters, sum.ObjectsVerified, sum.Objects, sum.Outcomes)
	fmt.Fprintf(o.Out, "simulator: %d link calls, %d action calls, %d token calls, %d throttled (429), %d calls during Retry-After, %d blob downloads\n",
		st.LinkCalls, st.ActionCalls, st.TokenCalls, st.Throttled, st.CallsDuringRetryAfter, st.BlobDownloads)
	if sum.OK() {
		fmt.Fprintln(o.Out, "OK: every command relayed exactly once, every bad event dead-lettered, zero 429s")
	} else {
		fmt.Fprintln(o.Out, "NOT OK: see the counts above")
	}
	if !o.Serve {
		return sum, nil
	}
	printExplore(o.Out, ns.ClientURL(), addr, cfg, out.objectRefs())
	select {
	case <-ctx.Done():
	case err := <-runErr:
		return sum, fmt.Errorf("relay stopped: %w", err)
	}
	fmt.Fprintln(o.Out, "stopping the demo")
	stopRelay()
	if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) {
		return sum, err
	}
	return sum, nil
}

// badEvents are the awkward inputs that must be dead-lettered, each with its own reason.
func badEvents(sim *simulator.Simulator) []badEvent {
	forbidden := "7d2c4e1a-0f3b-4c5d-9e6f-a1b2c3d4e5f6"
	sim.AddAction(simulator.Action{Forbidden: true, MachineAction: simulatorAction(forbidden)})
	return []badEvent{
		{name: "invalid JSON", payload: []byte(`{"id": "c0ffee00-0000-4000-8000-000000000001", "commands": [`)},
		{name: "not a GUID", payload: []byte(`{"id": "not-a-guid", "commands": []}`)},
		{name: "schema violation", payload: []byte(`{"id": "c0ffee00-0000-4000-8000-000000000002", "commands": [{"index": -1}]}`)},
		{name: "unknown action (404)", payload: []byte(`{"id": "c0ffee00-0000-4000-8000-00000000dead"}`)},
		{name: "missing permission (403)", payload: []byte(`{"id": "` + forbidden + `"}`)},
	}
}

func publish(ctx context.Context, url string, cfg config.Config, samples []simulator.Action, bad []badEvent) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// The relay provisions the streams; wait until the source stream exists.
	for {
		if _, err := js.Stream(ctx, cfg.SourceStream); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, a := range samples {
		payload, err := json.Marshal(a.MachineAction)
		if err != nil {
			return err
		}
		if _, err := js.Publish(ctx, cfg.SourceSubject, payload, jetstream.WithMsgID("finished."+a.MachineAction.ID)); err != nil {
			return err
		}
	}
	for _, b := range bad {
		if _, err := js.Publish(ctx, cfg.SourceSubject, b.payload); err != nil {
			return fmt.Errorf("publishing bad event %q: %w", b.name, err)
		}
	}
	return nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// printer prints results and dead letters as they are published.
type printer struct {
	mu       sync.Mutex
	w        io.Writer
	json     bool
	results  int
	dead     int
	outcomes map[string]int
	// refs are the Object Store references of the results, by <actionId>.<index>.
	refs map[string]*result.ObjectRef
}

func (p *printer) outcomeCounts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.outcomes)
}

func (p *printer) objectRefs() map[string]*result.ObjectRef {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.refs)
}

func (p *printer) counts() (int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.results, p.dead
}

func (p *printer) result(ev *result.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.results++
	p.outcomes[ev.Outcome]++
	if ev.Script != nil && ev.Script.OutputObject != nil {
		p.refs[relay.MsgID(ev.Tenant, ev.ActionID, ev.Index)] = ev.Script.OutputObject
	}
	if ev.File != nil && ev.File.Object != nil {
		p.refs[relay.MsgID(ev.Tenant, ev.ActionID, ev.Index)] = ev.File.Object
	}
	if p.json {
		b, _ := json.Marshal(ev)
		fmt.Fprintln(p.w, string(b))
		return
	}
	fmt.Fprintf(p.w, "result  %s #%d %-9s %-9s %-11s %s\n", ev.ActionID[:8], ev.Index, ev.CommandType, ev.CommandStatus, ev.Outcome, describe(ev))
}

func (p *printer) deadLetter(dl *relay.DeadLetter) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dead++
	if p.json {
		b, _ := json.Marshal(dl)
		fmt.Fprintln(p.w, string(b))
		return
	}
	fmt.Fprintf(p.w, "dead    event seq %-4d %-17s %s\n", dl.Sequence, dl.Reason, oneLine(dl.Message, 100))
}

func describe(ev *result.Event) string {
	switch {
	case ev.Script != nil:
		s := ev.Script
		exit := "?"
		if s.ExitCode != nil {
			exit = fmt.Sprint(*s.ExitCode)
		}
		extra := ""
		if s.OutputJSON != nil {
			extra += " json"
		}
		if s.TrailingNULs > 0 {
			extra += fmt.Sprintf(" nuls-stripped=%d", s.TrailingNULs)
		}
		if s.InvalidUTF8 {
			extra += " invalid-utf8"
		}
		if s.OutputObject != nil {
			extra += " object " + s.OutputObject.Bucket + "/" + s.OutputObject.Name
		}
		return fmt.Sprintf("%s exit=%s out=%dB%s %q", s.ScriptName, exit, s.OutputBytes, extra, oneLine(s.Output, 40))
	case ev.File != nil:
		f := ev.File
		where := "inline"
		if !f.Inline {
			where = f.NotInlineReason
			if f.Object != nil {
				where = "object " + f.Object.Bucket + "/" + f.Object.Name
			}
		}
		return fmt.Sprintf("%s %dB (gz %dB) sha256=%.12s… %s", f.Name, f.Bytes, f.CompressedBytes, f.SHA256, where)
	case ev.Problem != nil:
		return ev.Problem.Code + ": " + oneLine(ev.Problem.Message, 80)
	case len(ev.Errors) > 0:
		return "errors: " + oneLine(strings.Join(ev.Errors, "; "), 80)
	}
	return ""
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
