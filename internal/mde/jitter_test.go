package mde

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// countingCredential hands out tokens of a fixed lifetime and counts the requests.
type countingCredential struct {
	life  time.Duration
	calls atomic.Int64
}

func (c *countingCredential) token(context.Context, context.Context) (string, time.Duration, error) {
	n := c.calls.Add(1)
	return "tok-" + time.Duration(n).String(), c.life, nil
}
func (c *countingCredential) files() string     { return "" }
func (c *countingCredential) secrets() []string { return nil }

// TestRefreshJitterSpreadsTenants gives 1000 tenants tokens issued in the same second and expiring in the
// same second, then walks a fake clock through their lifetime one second at a time, asking every tenant
// for its token each second as busy workers would. The refreshes must all fall in the last 20-10% of the
// lifetime and be spread over it, not bunched into one second.
func TestRefreshJitterSpreadsTenants(t *testing.T) {
	const (
		tenants = 1000
		life    = time.Hour
	)
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	start := clock.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	creds := make([]*countingCredential, tenants)
	caches := make([]*tokenCache, tenants)
	for i := range caches {
		creds[i] = &countingCredential{life: life}
		caches[i] = &tokenCache{cred: creds[i], now: clock.Now, jitter: rng.Float64, timeout: time.Second, log: zerolog.Nop()}
		if _, err := caches[i].get(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	perSecond := map[int]int{}
	first, last := life, time.Duration(0)
	for s := 1; s <= int(life/time.Second); s++ {
		clock.Advance(time.Second)
		for i, c := range caches {
			before := creds[i].calls.Load()
			if _, err := c.get(context.Background()); err != nil {
				t.Fatal(err)
			}
			if creds[i].calls.Load() == before+1 && before == 1 {
				at := clock.Now().Sub(start)
				perSecond[s]++
				first, last = min(first, at), max(last, at)
			}
		}
	}
	refreshed, busiest := 0, 0
	for _, n := range perSecond {
		refreshed += n
		busiest = max(busiest, n)
	}
	if refreshed != tenants {
		t.Fatalf("tenants refreshed = %d, want %d", refreshed, tenants)
	}
	if lo, hi := life*8/10, life*9/10+time.Second; first < lo || last > hi {
		t.Errorf("refreshes between %s and %s, want within [%s, %s]", first, last, lo, hi)
	}
	// 1000 refreshes spread uniformly over 360 s average 2.8 per second; a burst would put them in one.
	if busiest > 12 {
		t.Errorf("busiest second had %d refreshes, want at most 12 (spread over %s)", busiest, last-first)
	}
	t.Logf("1000 tenants: refreshes from %s to %s after issue, busiest second %d", first, last, busiest)
}
