package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/app"
	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/embedded"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

// env is one test world: a JetStream server, a simulator and a client connection.
type env struct {
	t    testing.TB
	ns   *server.Server
	sim  *simulator.Simulator
	addr string // simulator host:port
	nc   *nats.Conn
	js   jetstream.JetStream
	logs *testutil.SyncBuffer
}

func newEnv(t testing.TB, simCfg simulator.Config) *env {
	t.Helper()
	return newEnvWith(t, simCfg, envOptions{})
}

// envOptions adjust newEnv for benchmarks.
type envOptions struct {
	// quietSimulator turns the simulator's debug log off.
	quietSimulator bool
	// wrapListener wraps the simulator's listener (to count connections).
	wrapListener func(net.Listener) net.Listener
	// server, when set, starts the NATS server instead of embedded.Start (a server with users and
	// permissions); the env's own connection must then be let in without credentials.
	server func(testing.TB) *server.Server
}

func newEnvWith(t testing.TB, simCfg simulator.Config, o envOptions) *env {
	t.Helper()
	var ns *server.Server
	var err error
	if o.server != nil {
		ns = o.server(t)
	} else {
		ns, err = embedded.Start(embedded.Options{StoreDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ns.Shutdown)
	}
	e := &env{t: t, ns: ns, logs: &testutil.SyncBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(e.logs.String(), "\n")
			t.Logf("last log lines:\n%s", strings.Join(lines[max(0, len(lines)-400):], "\n"))
		}
	})
	if simCfg.Seed == 0 {
		simCfg.Seed = 7
	}
	simCfg.Log = zerolog.New(e.logs).Level(zerolog.DebugLevel).With().Str("component", "simulator").Logger()
	if o.quietSimulator {
		simCfg.Log = zerolog.Nop()
	}
	e.sim, err = simulator.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if o.wrapListener != nil {
		ln = o.wrapListener(ln)
	}
	e.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.sim.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })

	e.nc, err = nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	e.js, err = jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// vars returns the LR_ variables of a relay pointing at this env, with test-friendly timings; extra wins.
func (e *env) vars(extra map[string]string) map[string]string {
	vars := map[string]string{
		"LR_NATS_URL":               e.ns.ClientURL(),
		"LR_MDE_API_URL":            "http://" + e.addr,
		"LR_MDE_TOKEN_URL":          "http://" + e.addr + "/{tenant}/oauth2/v2.0/token",
		"LR_MDE_TENANT_ID":          simulator.DefaultTenantID,
		"LR_MDE_CLIENT_ID":          simulator.DefaultClientID,
		"LR_MDE_CLIENT_SECRET":      simulator.DefaultClientSecret,
		"LR_DOWNLOAD_ALLOW_HTTP":    "true",
		"LR_DOWNLOAD_ALLOWED_HOSTS": e.addr,
		"LR_HTTP_ADDR":              "",
		"LR_LOG_LEVEL":              "debug",
		"LR_RETRY_BACKOFF":          "100ms,300ms,1s",
		"LR_ACK_WAIT":               "5s",
		"LR_SHUTDOWN_TIMEOUT":       "5s",
		"LR_QUOTA_SKEW_MARGIN":      "0s",
	}
	for k, v := range extra {
		vars[k] = v
	}
	return vars
}

// config returns the relay configuration of vars(extra), loaded the way main loads it.
func (e *env) config(t testing.TB, extra map[string]string) config.Config {
	t.Helper()
	for k, v := range e.vars(extra) {
		t.Setenv(k, v)
	}
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startRelay runs an in-process relay until the test ends; it returns a stop function that waits.
func (e *env) startRelay(t testing.TB, cfg config.Config, opts ...func(*app.Options)) (stop func()) {
	t.Helper()
	o := app.Options{Config: cfg, Logger: zerolog.New(e.logs).Level(zerolog.DebugLevel)}
	for _, f := range opts {
		f(&o)
	}
	a, err := app.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("relay returned %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("relay did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// publishActions publishes each action as a "finished" event, after the source stream exists.
func (e *env) publishActions(t testing.TB, cfg config.Config, actions []simulator.Action) {
	t.Helper()
	e.waitStream(t, cfg.SourceStream)
	for _, a := range actions {
		payload, err := json.Marshal(a.MachineAction)
		if err != nil {
			t.Fatal(err)
		}
		e.publishRaw(t, cfg, payload)
	}
}

func (e *env) publishRaw(t testing.TB, cfg config.Config, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.Publish(ctx, cfg.SourceSubject, payload); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func (e *env) waitStream(t testing.TB, name string) {
	t.Helper()
	waitFor(t, 20*time.Second, "stream "+name+" exists", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := e.js.Stream(ctx, name)
		return err == nil
	})
}

// streamMsgs returns the number of messages stored in a stream.
func (e *env) streamMsgs(t testing.TB, name string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, name)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// readAll returns every message of a stream, in order.
func (e *env) readAll(t testing.TB, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		out = append(out, m)
	}
	return out
}

// waitFor polls cond until it holds and fails the test naming what it waited for once timeout has passed.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, timeout, func() error {
		if !cond() {
			return fmt.Errorf("still waiting for: %s", what)
		}
		return nil
	})
}

// assertNoSecrets fails when a secret shows up in the captured logs.
func assertNoSecrets(t testing.TB, logs string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("secret %q appears in the logs", s)
		}
	}
	for _, line := range strings.Split(logs, "\n") {
		if i := strings.Index(line, "sig="); i >= 0 && !strings.HasPrefix(line[i+4:], "REDACTED") {
			t.Errorf("a SAS signature appears in a log line: %s", line)
		}
		if strings.Contains(strings.ToLower(line), "bearer ") {
			t.Errorf("a bearer token appears in a log line: %s", line)
		}
	}
}
