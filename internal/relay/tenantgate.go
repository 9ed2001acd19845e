package relay

import (
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// tenantGate keeps one tenant from holding every worker. Workers of one process wait on a tenant's call
// budget while they hold its events; without a cap, a flooded tenant (or one in a 429 pause) would park every
// worker and delay every other tenant's results behind it.
//
// The policy: a tenant may hold at most limit workers at once. An event pulled for a tenant at its limit is
// parked (kept alive with InProgress) up to maxParked per tenant, and taken up by the next worker that
// tenant frees; beyond that it is deferred (NakWithDelay, not counted as a failed delivery), so the workers
// go on pulling, and other tenants' events behind the flood in the stream are reached.
type tenantGate struct {
	limit     int // 0: no gate (single tenant)
	maxParked int

	mu     sync.Mutex
	busy   map[string]int
	parked map[string][]jetstream.Msg
}

func newTenantGate(limit, maxParked int) *tenantGate {
	return &tenantGate{limit: limit, maxParked: maxParked, busy: map[string]int{}, parked: map[string][]jetstream.Msg{}}
}

// acquire takes a worker slot for tenant t; "" (unknown or unparseable events, which end quickly) is never
// gated.
func (g *tenantGate) acquire(t string) bool {
	if g.limit == 0 || t == "" {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy[t] >= g.limit {
		return false
	}
	g.busy[t]++
	return true
}

func (g *tenantGate) release(t string) {
	if g.limit == 0 || t == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy[t] > 0 {
		g.busy[t]--
	}
}

// park keeps m for later; false when the tenant's parking is full.
func (g *tenantGate) park(t string, m jetstream.Msg) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.parked[t]) >= g.maxParked {
		return false
	}
	g.parked[t] = append(g.parked[t], m)
	return true
}

// takeParked returns a parked event of a tenant that has a free slot, with the slot taken.
func (g *tenantGate) takeParked() (string, jetstream.Msg, bool) {
	if g.limit == 0 {
		return "", nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for t, q := range g.parked {
		if len(q) == 0 || g.busy[t] >= g.limit {
			continue
		}
		m := q[0]
		q[0] = nil
		g.parked[t] = q[1:]
		g.busy[t]++
		return t, m, true
	}
	return "", nil, false
}

// parkedMsgs returns the parked events, for the keep-alive.
func (g *tenantGate) parkedMsgs() []jetstream.Msg {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []jetstream.Msg
	for _, q := range g.parked {
		out = append(out, q...)
	}
	return out
}

// drain removes and returns every parked event (shutdown hands them back).
func (g *tenantGate) drain() []jetstream.Msg {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []jetstream.Msg
	for t, q := range g.parked {
		out = append(out, q...)
		delete(g.parked, t)
	}
	return out
}
