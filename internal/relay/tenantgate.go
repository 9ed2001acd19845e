package relay

import (
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// tenantGate keeps a worker from sitting on one tenant's events while another tenant's event could run. A
// worker that holds an event waits for its tenant's call budget; without the gate a flooded tenant (or one in a
// 429 pause) would hold every worker and delay every other tenant's results behind it.
//
// The policy is applied call by call: when an event is pulled, when a set-aside event comes due, and before
// each further result-link call of a running event (another):
//   - budget: the call goes ahead only if its tenant could make one more call now (Tenant.NextCall, an estimate
//     from the grant log last seen, counting the calls claimed by the tenant's other running events in this
//     process);
//   - workers: a tenant holds at most limit workers at once.
//
// An event that may not go on is set aside: parked in this process (kept alive with InProgress, with the work
// done so far) until it comes due (the budget's estimate, or a worker of its tenant freeing), up to maxParked
// per tenant and maxTotal in all; beyond that it is deferred (NakWithDelay until it comes due, not counted as a
// failed delivery), so the workers go on pulling and other tenants' events behind the flood in the stream are
// reached. A worker therefore never waits for a budget between the calls of a long event either: an event of
// 5 commands against a window of 1 call per 5 s holds a worker for its calls only, not for the 20 s between
// them. Nothing runs for a tenant with nothing parked: no timer, no polling.
type tenantGate struct {
	limit     int // 0: no gate (single tenant)
	maxParked int
	maxTotal  int
	maxBytes  int // of the parked events' payloads

	mu      sync.Mutex
	busy    map[string]int // workers held
	claimed map[string]int // calls claimed by running events and not yet made (at most one per event)
	parked  map[string][]parkedMsg
	total   int
	bytes   int

	// wake tells the dispatcher that a parked event may be worth a look sooner than it planned: one was parked,
	// or a worker of a tenant with parked events freed.
	wake chan struct{}
}

// parkedMsg is an event set aside until due.
type parkedMsg struct {
	msg    jetstream.Msg
	tenant *Tenant
	calls  int // result-link calls its next step needs (0 or 1)
	due    time.Time
	work   *eventWork // the work done so far, nil for an event not started
}

// ticket is a started event's hold on its tenant's worker slot and its claimed call; release gives them back.
type ticket struct {
	name  string
	calls int  // claimed and not yet made
	fresh bool // the claim was taken on admission and the event has not used it yet
}

func newTenantGate(limit, maxParked, maxTotal, maxBytes int) *tenantGate {
	return &tenantGate{
		limit: limit, maxParked: maxParked, maxTotal: maxTotal, maxBytes: maxBytes,
		busy: map[string]int{}, claimed: map[string]int{}, parked: map[string][]parkedMsg{},
		wake: make(chan struct{}, 1),
	}
}

// admit decides whether an event of t whose next step needs calls result-link calls (0 or more) may start
// now. If so it takes the worker slot and claims the next call; if not it returns when the event is worth
// another look (the zero time when that is when one of t's workers frees).
func (g *tenantGate) admit(t *Tenant, calls int, now time.Time) (ticket, time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.admitLocked(t, calls, now)
}

func (g *tenantGate) admitLocked(t *Tenant, calls int, now time.Time) (ticket, time.Time, bool) {
	if g.busy[t.Name] >= g.limit {
		return ticket{}, time.Time{}, false
	}
	calls = min(calls, 1)
	if t.NextCall != nil && calls > 0 {
		if at := t.NextCall(g.claimed[t.Name] + calls); at.After(now) {
			return ticket{}, at, false
		}
	}
	g.busy[t.Name]++
	g.claimed[t.Name] += calls
	return ticket{name: t.Name, calls: calls, fresh: true}, time.Time{}, true
}

// made drops the claim of the running event holding tk once its call has been made: the call is then in the
// limiter's log, where NextCall counts it.
func (g *tenantGate) made(tk *ticket) {
	if tk == nil || tk.name == "" || tk.calls == 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.claimed[tk.name] -= min(tk.calls, g.claimed[tk.name])
	tk.calls, tk.fresh = 0, false
}

// another decides whether the running event holding tk may make one more result-link call of t now. Its
// previous call has been made by then (and is in the limiter's log), so its claim is dropped first. If the
// call may go ahead it is claimed; if not, the event should be set aside until the returned time. The first
// call after admission uses the claim admission took.
func (g *tenantGate) another(tk *ticket, t *Tenant, now time.Time) (time.Time, bool) {
	if tk == nil || tk.name == "" {
		return time.Time{}, true
	}
	if tk.fresh {
		tk.fresh = false
		return time.Time{}, true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.claimed[tk.name] -= min(tk.calls, g.claimed[tk.name])
	tk.calls = 0
	if t.NextCall != nil {
		if at := t.NextCall(g.claimed[tk.name] + 1); at.After(now) {
			return at, false
		}
	}
	g.claimed[tk.name]++
	tk.calls = 1
	return time.Time{}, true
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
		g.signal()
	}
	if g.busy[tk.name] == 0 {
		delete(g.busy, tk.name)
		delete(g.claimed, tk.name)
	}
}

// park keeps p for later; false when the tenant's or the process's parking is full. An event already started
// (p.work set) goes to the head of its tenant's queue: the tenant's events finish in the order they started.
func (g *tenantGate) park(p parkedMsg) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	size := p.size()
	if len(g.parked[p.tenant.Name]) >= g.maxParked || g.total >= g.maxTotal || g.bytes+size > g.maxBytes {
		return false
	}
	q := g.parked[p.tenant.Name]
	if p.work != nil {
		// Behind the other started events, ahead of those not started.
		i := 0
		for i < len(q) && q[i].work != nil {
			i++
		}
		q = slices.Insert(q, i, p)
	} else {
		q = append(q, p)
	}
	g.parked[p.tenant.Name] = q
	g.total++
	g.bytes += size
	g.signal()
	return true
}

// signal wakes the dispatcher without blocking.
func (g *tenantGate) signal() {
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

// size is what a parked event holds in memory, roughly: its payload, and as much again for its parsed action.
func (p parkedMsg) size() int {
	if p.msg == nil {
		return 0
	}
	n := len(p.msg.Data())
	if p.work != nil {
		n *= 2
	}
	return n
}

// takeParked returns a parked event that may go on now, with its slot taken; it looks only at the head of each
// tenant's parked queue (events of one tenant start in the order they were pulled).
func (g *tenantGate) takeParked(now time.Time) (ticket, parkedMsg, bool) {
	if g.limit == 0 {
		return ticket{}, parkedMsg{}, false
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
		p := *head
		q[0] = parkedMsg{}
		if len(q) == 1 {
			delete(g.parked, name)
		} else {
			g.parked[name] = q[1:]
		}
		g.total--
		g.bytes -= p.size()
		return tk, p, true
	}
	return ticket{}, parkedMsg{}, false
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
	g.total, g.bytes = 0, 0
	return out
}
