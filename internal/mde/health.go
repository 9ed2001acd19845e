package mde

import (
	"context"
	"sync"
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
	_, err := c.tokens.get(ctx)
	return err
}

// CheckAuthAll runs CheckAuth for every client, at most concurrency at a time, and returns when all are
// done or ctx ends. A thousand tenants starting together thus send their first token requests a few at a
// time, not in one burst.
func CheckAuthAll(ctx context.Context, clients []*Client, concurrency int) {
	concurrency = max(1, concurrency)
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for _, c := range clients {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = c.CheckAuth(ctx)
		}()
	}
	wg.Wait()
}

// withJitter replaces the source of the token refresh jitter (uniform in [0, 1)), for tests.
func withJitter(f func() float64) Option { return func(o *options) { o.jitter = f } }
