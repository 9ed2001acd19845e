package app

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/internal/quota"
)

// budget is a limiter as the app uses it: the client's Wait and Pause, and the relay's look at when a tenant
// could make its next calls.
type budget interface {
	mde.Limiter
	NextFree(key quota.Key, n int) time.Time
}

// limiterFor returns the limiter of a set of windows, building it on first use. Tenants and endpoints with the
// same windows share one limiter (the key selects the budget), so a deployment of many tenants binds the KV
// bucket once per distinct set of windows, not once per tenant. With LR_QUOTA_SHARED (the default) the budget
// lives in a JetStream KV bucket, so every replica draws from the same windows; without a JetStream context
// (lr-relay fetch) or with LR_QUOTA_SHARED=false it is local to this process.
func (a *App) limiterFor(ctx context.Context, js jetstream.JetStream, ws []quota.Window) (budget, error) {
	id := quota.FormatWindows(ws)
	if l, ok := a.limiters[id]; ok {
		return l, nil
	}
	opts := []quota.Option{
		quota.WithMargin(a.cfg.QuotaMargin),
		quota.WithRegisterer(a.o.Registry),
		quota.WithLogger(a.log.With().Str("component", "quota").Logger()),
	}
	var l budget
	if js == nil || !a.cfg.QuotaShared {
		l = quota.NewLocal(ws, opts...)
	} else {
		s, err := quota.NewShared(ctx, js, quota.SharedConfig{
			Bucket:         a.cfg.QuotaBucket,
			Windows:        ws,
			Processes:      a.cfg.QuotaProcesses,
			Provision:      a.cfg.Provision,
			BucketReplicas: a.cfg.StreamReplicas,
			OpTimeout:      a.cfg.QuotaOpTimeout,
			ProbeInterval:  a.cfg.QuotaProbeInterval,
		}, opts...)
		if err != nil {
			return nil, fmt.Errorf("shared quota bucket %q (LR_QUOTA_BUCKET): %w", a.cfg.QuotaBucket, err)
		}
		a.mu.Lock()
		a.degraded = append(a.degraded, s.Degraded)
		a.mu.Unlock()
		l = s
	}
	if a.limiters == nil {
		a.limiters = map[string]budget{}
	}
	a.limiters[id] = l
	return l, nil
}
