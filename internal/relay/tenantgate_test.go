package relay

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// budgetTenant is a tenant whose budget allows room more calls until free, and any number after; made counts
// the calls the test says were made (they leave room).
type budgetTenant struct {
	Tenant
	room int
	made int
	free time.Time
}

func newBudgetTenant(name string, room int, free time.Time) *budgetTenant {
	b := &budgetTenant{room: room, free: free}
	b.Tenant = Tenant{Name: name, NextCall: func(n int) time.Time {
		if b.made+n <= b.room {
			return time.Time{}
		}
		return b.free
	}}
	return b
}

func TestGateAdmitsCallByCall(t *testing.T) {
	now := time.Now()
	free := now.Add(3 * time.Second)
	busy := newBudgetTenant("busy", 2, free)
	quiet := newBudgetTenant("quiet", 100, time.Time{})
	g := newTenantGate(4, 4, 10, 1<<20)

	// An event of 5 calls starts when its tenant has room for one call, not for all five.
	tk, _, ok := g.admit(&busy.Tenant, 5, now)
	if !ok {
		t.Fatal("event of 5 calls not admitted with room for 2")
	}
	// Its first call uses the claim taken on admission.
	if _, ok := g.another(&tk, &busy.Tenant, now); !ok {
		t.Fatal("first call refused after admission")
	}
	// A second event may claim the other call.
	tk2, _, ok := g.admit(&busy.Tenant, 5, now)
	if !ok {
		t.Fatal("second event not admitted with one call left")
	}
	// While both calls are under way their claims fill the budget: a third event is set aside on pulling.
	if _, due, ok := g.admit(&busy.Tenant, 1, now); ok || !due.Equal(free) {
		t.Fatalf("third event: admitted %v, due %v; want set aside until %v", ok, due, free)
	}
	// The first event's call is made (the limiter's log counts it now); its next call has no budget.
	busy.made++
	g.made(&tk)
	if due, ok := g.another(&tk, &busy.Tenant, now); ok || !due.Equal(free) {
		t.Fatalf("next call without budget: ok %v, due %v; want set aside until %v", ok, due, free)
	}
	// The quiet tenant is not held up by busy's lack of budget.
	if _, _, ok := g.admit(&quiet.Tenant, 1, now); !ok {
		t.Fatal("quiet tenant not admitted")
	}
	// The first event is parked with its work; a new event parked after it queues behind it, and a started
	// event parked later goes ahead of the new one.
	w1, w3 := &eventWork{next: 1}, &eventWork{next: 3}
	g.release(tk)
	if !g.park(parkedMsg{tenant: &busy.Tenant, calls: 1, due: free, work: w1}) ||
		!g.park(parkedMsg{tenant: &busy.Tenant, calls: 1, due: free}) ||
		!g.park(parkedMsg{tenant: &busy.Tenant, calls: 1, due: free, work: w3}) {
		t.Fatal("park refused")
	}
	if due, ok := g.nextDue(); !ok || !due.Equal(free) {
		t.Fatalf("nextDue = %v %v, want %v", due, ok, free)
	}
	if _, _, ok := g.takeParked(now); ok {
		t.Fatal("a parked event went on before it came due")
	}
	// Once due, the budget frees (the window moved on): the parked events go on in order, one claim each.
	busy.made, busy.room, busy.free = 0, 2, free.Add(5*time.Second)
	g.release(tk2)
	var order []*eventWork
	for {
		tk, p, ok := g.takeParked(free)
		if !ok {
			break
		}
		order = append(order, p.work)
		if _, ok := g.another(&tk, &busy.Tenant, free); !ok {
			t.Fatal("a resumed event could not use its admission's claim")
		}
		busy.made++
		g.made(&tk)
		defer g.release(tk)
	}
	if len(order) != 2 || order[0] != w1 || order[1] != w3 {
		t.Fatalf("resumed %v, want the two started events in the order they started (%p, %p)", order, w1, w3)
	}
	if due, ok := g.nextDue(); !ok || !due.Equal(busy.free) {
		t.Fatalf("the new event: nextDue = %v %v after its look found no room, want %v", due, ok, busy.free)
	}
}

func TestGateWorkerCapAndParkingLimits(t *testing.T) {
	now := time.Now()
	a := &Tenant{Name: "a"}
	g := newTenantGate(1, 1, 1, 1<<20)
	tk, _, ok := g.admit(a, 1, now)
	if !ok {
		t.Fatal("first event not admitted")
	}
	if _, due, ok := g.admit(a, 1, now); ok || !due.IsZero() {
		t.Fatalf("event beyond the worker cap: admitted %v, due %v; want set aside until a worker frees", ok, due)
	}
	if !g.park(parkedMsg{tenant: a, calls: 1}) {
		t.Fatal("park refused")
	}
	if g.park(parkedMsg{tenant: a, calls: 1}) {
		t.Fatal("park beyond maxParked accepted")
	}
	if g.park(parkedMsg{tenant: &Tenant{Name: "b"}, calls: 1}) {
		t.Fatal("park beyond maxTotal accepted")
	}
	if _, ok := g.nextDue(); ok {
		t.Error("nextDue reported a time for an event that waits for a worker")
	}
	g.release(tk)
	if _, _, ok := g.takeParked(now); !ok {
		t.Fatal("parked event not taken once the worker freed")
	}
}

// bigMsg is a parked message of a given size.
type bigMsg struct {
	jetstream.Msg
	data []byte
}

func (m bigMsg) Data() []byte { return m.data }

func TestGateParkingBytes(t *testing.T) {
	a := &Tenant{Name: "a"}
	g := newTenantGate(1, 100, 100, 1000)
	if !g.park(parkedMsg{tenant: a, msg: bigMsg{data: make([]byte, 400)}}) {
		t.Fatal("park refused under the byte bound")
	}
	// Started work counts twice its payload (the parsed action): 400 + 2*400 > 1000.
	if g.park(parkedMsg{tenant: a, msg: bigMsg{data: make([]byte, 400)}, work: &eventWork{}}) {
		t.Fatal("park beyond the byte bound accepted")
	}
	if !g.park(parkedMsg{tenant: a, msg: bigMsg{data: make([]byte, 600)}}) {
		t.Fatal("park refused at exactly the byte bound")
	}
	_ = g.drain()
	if g.bytes != 0 || g.total != 0 {
		t.Fatalf("after drain: %d bytes, %d events", g.bytes, g.total)
	}
}
