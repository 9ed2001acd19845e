package relay

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// tenantGate keeps a worker from sitting on one tenant's events while another tenant's event could run. A
// worker that holds an event waits for its tenant's call budget; without the gate a flooded tenant (or one in a
// 429 pause) would hold every worker and delay every other tenant's results behind it.
//
// The policy, applied when an event is pulled and again when a set-aside event comes due:
//   - budget: the event starts only if its tenant could make its calls now (Tenant.NextCall, an estimate from
//     the grant log last seen, counting the calls of the tenant's events already running in this process);
//   - workers: a tenant holds at most limit workers at once.
//
// An event that may not start is set aside: parked in this process (kept alive with InProgress) until it comes
// due (the budget's estimate, or a worker of its tenant freeing), up to maxParked per tenant and maxTotal in
// all; beyond that it is deferred (NakWithDelay until it comes due, not counted as a failed delivery), so the
// workers go on pulling and other tenants' events behind the flood in the stream are reached. Nothing runs for
// a tenant with nothing parked: no timer, no polling.
type tenantGate struct {
	limit     int // 0: no gate (single tenant)
	maxParked int
	maxTotal  int

	mu      sync.Mutex
	busy    map[string]int // workers held
	claimed map[string]int // calls of the running events
	parked  map[string][]parkedMsg
	total   int
}

// parkedMsg is an event set aside until due.
type parkedMsg struct {
	msg    jetstream.Msg
	tenant *Tenant
	calls  int
	due    time.Time
}

// ticket is a started event's hold on its tenant's worker slot and claimed calls; release gives them back.
type ticket struct {
	name  string
	calls int
}

func newTenantGate(limit, maxParked, maxTotal int) *tenantGate {
	return &tenantGate{
		limit: limit, maxParked: maxParked, maxTotal: maxTotal,
		busy: map[string]int{}, claimed: map[string]int{}, parked: map[string][]parkedMsg{},
	}
}

// admit decides whether an event of t needing calls budgeted calls may start now. If so it takes the worker
// slot and claims the calls; if not it returns when the event is worth another look (the zero time when that
// is when one of t's workers frees).
func (g *tenantGate) admit(t *Tenant, calls int, now time.Time) (ticket, time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.admitLocked(t, calls, now)
}

func (g *tenantGate) admitLocked(t *Tenant, calls int, now time.Time) (ticket, time.Time, bool) {
	if g.busy[t.Name] >= g.limit {
		return ticket{}, time.Time{}, false
	}
	if t.NextCall != nil && calls > 0 {
		if at := t.NextCall(g.claimed[t.Name] + calls); at.After(now) {
			return ticket{}, at, false
		}
	}
	g.busy[t.Name]++
	g.claimed[t.Name] += calls
	return ticket{name: t.Name, calls: calls}, time.Time{}, true
}

func (g *tenantGate) release(tk ticket) {
	if tk.name == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.busy[tk.name] > 0 {
		g.busy[tk.name]--
	}
	g.claimed[tk.name] -= min(tk.calls, g.claimed[tk.name])
	if q := g.parked[tk.name]; len(q) > 0 {
		q[0].due = time.Time{} // its wait may have counted the calls just released: look again
	}
	if g.busy[tk.name] == 0 {
		delete(g.busy, tk.name)
		delete(g.claimed, tk.name)
	}
}

// park keeps m for later; false when the tenant's or the process's parking is full.
func (g *tenantGate) park(p parkedMsg) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.parked[p.tenant.Name]) >= g.maxParked || g.total >= g.maxTotal {
		return false
	}
	g.parked[p.tenant.Name] = append(g.parked[p.tenant.Name], p)
	g.total++
	return true
}

// takeParked returns a parked event that may start now, with its slot taken; it looks only at the head of each
// tenant's parked queue (events of one tenant start in the order they were pulled).
func (g *tenantGate) takeParked(now time.Time) (ticket, jetstream.Msg, bool) {
	if g.limit == 0 {
		return ticket{}, nil, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for name, q := range g.parked {
		head := &q[0]
		if head.due.After(now) {
			continue
		}
		tk, at, ok := g.admitLocked(head.tenant, head.calls, now)
		if !ok {
			head.due = at
			continue
		}
		m := head.msg
		q[0] = parkedMsg{}
		if len(q) == 1 {
			delete(g.parked, name)
		} else {
			g.parked[name] = q[1:]
		}
		g.total--
		return tk, m, true
	}
	return ticket{}, nil, false
}

// nextDue returns the earliest instant a parked event is worth another look (ok false when nothing is parked
// or every parked event waits for a worker of its tenant to free).
func (g *tenantGate) nextDue() (due time.Time, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, q := range g.parked {
		if d := q[0].due; !d.IsZero() && (!ok || d.Before(due)) {
			due, ok = d, true
		}
	}
	return due, ok
}

// parkedMsgs returns the parked events, for the keep-alive.
func (g *tenantGate) parkedMsgs() []jetstream.Msg {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]jetstream.Msg, 0, g.total)
	for _, q := range g.parked {
		for _, p := range q {
			out = append(out, p.msg)
		}
	}
	return out
}

// drain removes and returns every parked event (shutdown hands them back).
func (g *tenantGate) drain() []jetstream.Msg {
	out := g.parkedMsgs()
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.parked)
	g.total = 0
	return out
}
