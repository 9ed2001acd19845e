package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/lr-relay/lr-relay/internal/simulator"
)

// holLimits are the windows of every tenant in TestNoHeadOfLineBlocking, in the simulator and in the relay: a
// backlog of 150 calls per tenant needs three 5s windows.
const holLimits = "10/1s,50/5s"

// TestNoHeadOfLineBlocking gives 8 tenants a backlog beyond their windows and sends a ninth, quiet tenant a
// trickle of single-command events, on one process with 8 workers. The quiet tenant's budget is idle, so its
// quota-implied delay is zero: each of its events must be relayed within 2s, while the workers are never
// short of other tenants' events. Every tenant's results must arrive exactly once, with zero 429s.
func TestNoHeadOfLineBlocking(t *testing.T) {
	const (
		busyTenants      = 8
		busyActions      = 30
		busyCommands     = 5
		trickle          = 8
		bound            = 2 * time.Second
		trickleInterval  = 500 * time.Millisecond
		resultsDeadline  = 60 * time.Second
		backlogStartedAt = 50 // calls of each busy tenant before the trickle starts: its 5s window is spent
	)
	var tenants []quotaTenant
	for i := range busyTenants + 1 {
		name := fmt.Sprintf("busy%d", i)
		if i == busyTenants {
			name = "quiet"
		}
		tenants = append(tenants, quotaTenant{
			name: name, id: fmt.Sprintf("%08x-0000-4000-8000-%012x", 0xb0b0+i, i),
			client: "client-" + name, secret: "secret-" + name, limits: holLimits,
		})
	}
	busy, quiet := tenants[:busyTenants], tenants[busyTenants]
	e, extra := quotaTenantsEnv(t, holLimits, tenants)
	extra["LR_WORKERS"] = "8"
	extra["LR_RATE_LIMITS"] = holLimits
	extra["LR_ACK_WAIT"] = "10s"
	cfg := e.config(t, extra)
	e.startRelay(t, cfg)
	e.waitStream(t, cfg.SourceStream)
	e.waitStream(t, cfg.ResultStream)

	// Every result, timed as it is stored, by <actionId>.<index> (Nats-Msg-Id less its tenant; one per command).
	var (
		mu      sync.Mutex
		arrived = map[string]time.Time{}
		dups    int
	)
	sub, err := e.nc.Subscribe(cfg.ResultSubjectPrefix+".>", func(m *nats.Msg) {
		_, id, _ := strings.Cut(m.Header.Get("Nats-Msg-Id"), ".")
		mu.Lock()
		defer mu.Unlock()
		if _, dup := arrived[id]; dup {
			dups++
			return
		}
		arrived[id] = time.Now()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	want := 0
	for i, tn := range busy {
		actions := quotaActions(e, busyActions, busyCommands, int64(300+i), tn.id)
		e.publishActions(t, cfg, actions)
		want += busyActions * busyCommands
	}
	waitFor(t, 30*time.Second, "every busy tenant spending its 5s window", func() bool {
		for _, tn := range busy {
			if len(e.sim.Admitted(tn.id, simulator.EndpointLinks)) < backlogStartedAt {
				return false
			}
		}
		return true
	})

	published := map[string]time.Time{} // Nats-Msg-Id of the quiet tenant's results -> publish time
	tick := time.NewTicker(trickleInterval)
	defer tick.Stop()
	for i, a := range quotaActions(e, trickle, 1, 399, quiet.id) {
		if i > 0 {
			<-tick.C
		}
		payload, err := json.Marshal(a.MachineAction)
		if err != nil {
			t.Fatal(err)
		}
		published[strings.ToLower(a.MachineAction.ID)+".0"] = time.Now()
		e.publishRaw(t, cfg, payload)
	}
	want += trickle
	waitFor(t, resultsDeadline, fmt.Sprintf("all %d results", want), func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(arrived) >= want
	})

	mu.Lock()
	var lat []time.Duration
	for id, p := range published {
		got, ok := arrived[id]
		if !ok {
			t.Errorf("quiet tenant's result %s never arrived", id)
			continue
		}
		lat = append(lat, got.Sub(p))
	}
	n, d := len(arrived), dups
	mu.Unlock()
	slices.Sort(lat)
	var backlogDone []string
	for _, tn := range busy {
		adm := e.sim.Admitted(tn.id, simulator.EndpointLinks)
		backlogDone = append(backlogDone, fmt.Sprintf("%s %d calls", tn.name, len(adm)))
	}
	t.Logf("quiet tenant: %d events, publish-to-result latency %v (p99 = max); busy tenants: %s",
		len(lat), lat, strings.Join(backlogDone, ", "))
	if len(lat) > 0 && lat[len(lat)-1] > bound {
		t.Errorf("quiet tenant's p99 latency %s, want at most %s (its own budget was idle): it waited behind the "+
			"other tenants' backlogs", lat[len(lat)-1].Round(time.Millisecond), bound)
	}
	if n != want || d != 0 {
		t.Errorf("%d distinct results and %d duplicates, want %d and 0", n, d, want)
	}
	if got := e.streamMsgs(t, cfg.ResultStream); got != uint64(want) {
		t.Errorf("results stream holds %d results, want %d", got, want)
	}
	if st := e.sim.Stats(); st.Throttled != 0 || st.CallsDuringRetryAfter != 0 {
		t.Errorf("simulator answered %d 429s and saw %d calls during Retry-After, want 0 and 0", st.Throttled, st.CallsDuringRetryAfter)
	}
	if got := e.streamMsgs(t, cfg.DeadLetterStream); got != 0 {
		t.Errorf("dead-letter stream holds %d records, want 0", got)
	}
}
