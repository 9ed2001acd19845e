package app

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/internal/quota"
)

// newLimiter builds one limiter for a set of windows. With LR_QUOTA_SHARED (the default) the budget lives in a
// JetStream KV bucket, so every replica draws from the same windows; without a JetStream context (lr-relay
// fetch) or with LR_QUOTA_SHARED=false it is local to this process.
func (a *App) newLimiter(ctx context.Context, js jetstream.JetStream, ws []quota.Window) (mde.Limiter, error) {
	opts := []quota.Option{
		quota.WithMargin(a.cfg.QuotaSkewMargin),
		quota.WithRegisterer(a.o.Registry),
		quota.WithLogger(a.log.With().Str("component", "quota").Logger()),
	}
	if js == nil || !a.cfg.QuotaShared {
		return quota.NewLocal(ws, opts...), nil
	}
	s, err := quota.NewShared(ctx, js, quota.SharedConfig{
		Bucket:     a.cfg.QuotaBucket,
		Windows:    ws,
		Replicas:   a.cfg.QuotaReplicas,
		SkewMargin: a.cfg.QuotaSkewMargin,
		Provision:  a.cfg.Provision,
		ReplicasKV: a.cfg.StreamReplicas,
	}, opts[1:]...)
	if err != nil {
		return nil, fmt.Errorf("shared quota bucket %q (LR_QUOTA_BUCKET): %w", a.cfg.QuotaBucket, err)
	}
	a.mu.Lock()
	a.degraded = append(a.degraded, s.Degraded)
	a.mu.Unlock()
	return s, nil
}
