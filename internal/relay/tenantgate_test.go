package relay

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// budgetTenant is a tenant whose budget allows room calls until free, and any number after.
func budgetTenant(name string, room int, free time.Time) *Tenant {
	return &Tenant{Name: name, NextCall: func(n int) time.Time {
		if n <= room {
			return time.Time{}
		}
		return free
	}}
}

func TestGateSetsAsideEventsWithoutBudget(t *testing.T) {
	now := time.Now()
	free := now.Add(3 * time.Second)
	busy := budgetTenant("busy", 10, free)
	later := free.Add(time.Second)
	quiet := budgetTenant("quiet", 100, time.Time{})
	g := newTenantGate(4, 2, 10)

	// busy may start one 6-call event; a second would need 12 calls of its 10.
	tk, _, ok := g.admit(busy, 6, now)
	if !ok {
		t.Fatal("first event of busy not admitted")
	}
	if _, due, ok := g.admit(busy, 6, now); ok || !due.Equal(free) {
		t.Fatalf("second event of busy: admitted %v, due %v; want set aside until %v", ok, due, free)
	}
	// The quiet tenant is not held up by busy's lack of budget.
	if _, _, ok := g.admit(quiet, 1, now); !ok {
		t.Fatal("quiet tenant not admitted")
	}
	var msg jetstream.Msg
	if !g.park(parkedMsg{msg: msg, tenant: busy, calls: 6, due: free}) {
		t.Fatal("park refused")
	}
	if due, ok := g.nextDue(); !ok || !due.Equal(free) {
		t.Fatalf("nextDue = %v %v, want %v", due, ok, free)
	}
	if _, _, ok := g.takeParked(now); ok {
		t.Fatal("a parked event started before it came due")
	}
	// Once due, it still needs the budget: the running event holds 6 of the 10 calls until it is released.
	busy.NextCall = func(n int) time.Time {
		if n <= 10 {
			return time.Time{}
		}
		return later
	}
	if _, _, ok := g.takeParked(free); ok {
		t.Fatal("a parked event started while the running event's calls were still claimed")
	}
	if due, _ := g.nextDue(); !due.Equal(later) {
		t.Fatalf("nextDue = %v after a failed look, want the new estimate %v", due, later)
	}
	g.release(tk)
	if _, _, ok := g.takeParked(free); !ok {
		t.Fatal("the parked event did not start once due with the budget free")
	}
	if g.total != 0 || len(g.parked) != 0 {
		t.Errorf("parking not empty: total %d, %v", g.total, g.parked)
	}
}

func TestGateWorkerCapAndParkingLimits(t *testing.T) {
	now := time.Now()
	a := &Tenant{Name: "a"}
	g := newTenantGate(1, 1, 1)
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
