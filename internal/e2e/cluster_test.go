package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/embedded"
	"github.com/lr-relay/lr-relay/internal/simulator"
)

// restartServer shuts the env's nats-server down, runs whileDown, and starts a new server on the same port
// with the same store directory, which then replaces e.ns. Clients reconnect to the same URL.
func (e *env) restartServer(t *testing.T, whileDown func()) {
	t.Helper()
	old := e.ns
	port := old.Addr().(*net.TCPAddr).Port
	dir := filepath.Dir(old.StoreDir()) // StoreDir is <Options.StoreDir>/jetstream
	old.Shutdown()
	old.WaitForShutdown()
	if whileDown != nil {
		whileDown()
	}
	ns, err := embedded.Start(embedded.Options{StoreDir: dir, Port: port})
	if err != nil {
		t.Fatalf("restarting nats-server on port %d: %v", port, err)
	}
	t.Cleanup(ns.Shutdown)
	e.ns = ns
}

// TestNATSRestartLosesNothing restarts the nats-server (same port, same store) while three lr-relay
// processes are relaying: they must report not-ready while it is down, reconnect, and finish, with every
// command relayed once. Half of the events are published after the restart, so intake works again too.
func TestNATSRestartLosesNothing(t *testing.T) {
	e := newEnv(t, simulator.Config{LinkLimits: scaledLimits, ActionLimits: scaledLimits})
	actions, commands := e.load(1000, 501)
	vars := loadVars(nil)
	cfg := e.config(t, vars)
	var addrs []string
	var procs []*proc
	for _, name := range []string{"a", "b", "c"} {
		addr := freeAddr(t)
		addrs = append(addrs, addr)
		procs = append(procs, e.startProc(t, name, withVars(vars, map[string]string{"LR_HTTP_ADDR": addr})))
	}
	for i, addr := range addrs {
		waitFor(t, 30*time.Second, procs[i].name+" ready", func() bool { return ready(addr) == http.StatusOK })
	}
	e.publishActions(t, cfg, actions[:500])
	e.waitResults(t, cfg, commands/5, 120*time.Second)

	before := e.streamMsgs(t, cfg.ResultStream)
	e.restartServer(t, func() {
		for i, addr := range addrs {
			waitFor(t, 20*time.Second, procs[i].name+" not ready while NATS is down", func() bool {
				return ready(addr) == http.StatusServiceUnavailable
			})
		}
	})
	t.Logf("nats-server restarted with %d results stored", before)
	for i, addr := range addrs {
		waitFor(t, 60*time.Second, procs[i].name+" ready again", func() bool { return ready(addr) == http.StatusOK })
	}
	waitFor(t, 30*time.Second, "test client reconnected", e.nc.IsConnected)
	e.publishActions(t, cfg, actions[500:])

	e.waitSettled(t, cfg, 60*time.Second)
	for _, p := range procs {
		if p.exited() {
			t.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail(20))
		}
	}
	verify(t, e, cfg, actions).check(t, expect{})
	if !strings.Contains(e.logs.String(), "reconnected to NATS") {
		t.Errorf("no process logged a reconnection")
	}
}

// startCluster starts n embedded servers that form one JetStream cluster, and waits until JetStream answers
// (the meta leader is elected).
func startCluster(t *testing.T, n int) []*server.Server {
	t.Helper()
	routePorts := make([]int, n)
	var routes []string
	for i := range routePorts {
		_, p, _ := net.SplitHostPort(freeAddr(t))
		routePorts[i], _ = strconv.Atoi(p)
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", routePorts[i]))
	}
	nodes := make([]*server.Server, n)
	for i := range nodes {
		ns, err := embedded.Start(embedded.Options{
			StoreDir:   t.TempDir(),
			ServerName: fmt.Sprintf("n%d", i+1),
			Cluster:    &embedded.Cluster{Name: "lr-e2e", RoutePort: routePorts[i], Routes: routes},
		})
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
		t.Cleanup(ns.Shutdown)
		nodes[i] = ns
	}
	return nodes
}

func clusterURL(nodes []*server.Server) string {
	var urls []string
	for _, ns := range nodes {
		urls = append(urls, ns.ClientURL())
	}
	return strings.Join(urls, ",")
}

// TestClusterNodeLossLosesNothing runs three lr-relay processes against a three-node JetStream cluster with
// R3 streams, and shuts down the node that leads the consumer mid-run: nothing may be lost or duplicated.
func TestClusterNodeLossLosesNothing(t *testing.T) {
	e := newEnv(t, simulator.Config{LinkLimits: scaledLimits, ActionLimits: scaledLimits})
	// The env's single server is not used: the test world is the cluster.
	e.nc.Close()
	e.ns.Shutdown()
	nodes := startCluster(t, 3)
	url := clusterURL(nodes)
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e.nc, e.ns = nc, nodes[0]
	if e.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "JetStream cluster ready", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := e.js.AccountInfo(ctx)
		return err == nil
	})

	actions, commands := e.load(600, 601)
	vars := loadVars(map[string]string{"LR_NATS_URL": url, "LR_STREAM_REPLICAS": "3"})
	cfg := e.config(t, vars)
	// The three start together, as replicas of a deployment do, and race to provision the R3 streams and
	// buckets: a create request the cluster leaves unanswered must delay a process, not end it.
	var procs []*proc
	for _, name := range []string{"a", "b", "c"} {
		procs = append(procs, e.startProc(t, name, vars))
	}
	e.publishActions(t, cfg, actions)
	e.waitResults(t, cfg, commands/3, 120*time.Second)
	t.Logf("start-up steps retried because JetStream did not answer: %d", strings.Count(e.logs.String(), "JetStream did not answer"))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := e.js.Consumer(ctx, cfg.SourceStream, cfg.Consumer)
	if err != nil {
		t.Fatal(err)
	}
	ci := cons.CachedInfo()
	if ci.Cluster == nil || len(ci.Cluster.Replicas) != 2 {
		t.Fatalf("consumer cluster info %+v: want a leader and 2 replicas (R3)", ci.Cluster)
	}
	rs, err := e.js.Stream(ctx, cfg.ResultStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.CachedInfo().Config.Replicas; got != 3 {
		t.Fatalf("results stream has %d replicas, want 3", got)
	}
	leader := ci.Cluster.Leader
	var victim *server.Server
	for _, ns := range nodes {
		if ns.Name() == leader {
			victim = ns
		}
	}
	if victim == nil {
		t.Fatalf("consumer leader %q is none of the nodes", leader)
	}
	stored := e.streamMsgs(t, cfg.ResultStream)
	victim.Shutdown()
	victim.WaitForShutdown()
	t.Logf("shut down %s (consumer leader) with %d of %d results stored", leader, stored, commands)

	e.waitSettled(t, cfg, 90*time.Second)
	for _, p := range procs {
		if p.exited() {
			t.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail(20))
		}
	}
	verify(t, e, cfg, actions).check(t, expect{})
}
