package mde

import (
	"context"
	"sync"
	"time"
)

// AuthHealthy reports whether the tenant's credentials are accepted: true once a token was obtained and
// not rejected since. When false, the reason says whether no token was obtained yet (and the last error,
// if any) or the credentials were rejected (with the token endpoint's code). It never blocks on the network.
func (c *Client) AuthHealthy() (bool, string) {
	return c.tokens.healthy()
}

// Tenant is the tenant's name inside lr-relay.
func (c *Client) Tenant() string { return c.tenant }

// CheckAuth fetches the tenant's first token (or returns the cached one), so that wrong credentials show
// at start rather than at the first event. The outcome is recorded in lr_tenant_auth_ok and AuthHealthy;
// the error is returned for callers that want it.
func (c *Client) CheckAuth(ctx context.Context) error {
	_, err := c.tokens.obtain(ctx, false)
	return err
}

// Close stops the client's background token refresh (its timer and any refresh in flight) and waits for it.
// Calls made after Close still work: their tokens are fetched on demand.
func (c *Client) Close() { c.tokens.close() }

// CheckAuthAll runs CheckAuth for every client, at most concurrency at a time, so that a thousand tenants
// starting together send their first token requests a few at a time, not in one burst. Then, every recheck
// (if positive) until ctx ends, it checks again the clients whose authentication is not ok, so that a
// tenant whose secret or certificate was fixed shows healthy again even before its next event. Healthy
// tenants cost nothing here: a token checked here arms no background refresh until a call uses it. Rejected ones cost at most one token
// request per rejectedPace (the pacing in the token cache applies).
func CheckAuthAll(ctx context.Context, clients []*Client, concurrency int, recheck time.Duration) {
	checkAll(ctx, clients, concurrency)
	if recheck <= 0 {
		return
	}
	t := time.NewTicker(recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var failing []*Client
		for _, c := range clients {
			if ok, _ := c.AuthHealthy(); !ok {
				failing = append(failing, c)
			}
		}
		checkAll(ctx, failing, concurrency)
	}
}

func checkAll(ctx context.Context, clients []*Client, concurrency int) {
	sem := make(chan struct{}, max(1, concurrency))
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, c := range clients {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = c.CheckAuth(ctx)
		}()
	}
}

// withJitter replaces the source of the token refresh jitter (uniform in [0, 1)), for tests.
func withJitter(f func() float64) Option { return func(o *options) { o.jitter = f } }
