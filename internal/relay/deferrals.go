package relay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/provision"
)

// Deferrals counts, per source message, the deliveries the relay handed back on purpose (tenant gate) rather
// than because they failed. LR_MAX_DELIVER counts failed deliveries only, so a tenant's long backlog never
// dead-letters its own events. The record is written only when an event is deferred and read only when an
// event has reached LR_MAX_DELIVER deliveries, so the normal path costs nothing.
type Deferrals struct {
	kv jetstream.KeyValue
}

// EnsureDeferrals binds the bucket (LR_DEFERRALS_BUCKET), or creates it with replicas (LR_STREAM_REPLICAS, at
// least 1) when create is set and it is missing.
func EnsureDeferrals(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, create bool) (*Deferrals, error) {
	if bucket == "" {
		return nil, errors.New("relay: no deferrals bucket name")
	}
	if create && replicas < 1 {
		return nil, fmt.Errorf("relay: deferrals bucket %q: replicas must be at least 1, got %d", bucket, replicas)
	}
	kv, err := provision.KeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: bucket, Description: "lr-relay: deliveries deferred on purpose, per source message",
		TTL: 7 * 24 * time.Hour, History: 1, Storage: jetstream.FileStorage, Replicas: replicas,
	}, create)
	if err != nil {
		return nil, fmt.Errorf("deferrals bucket %q: %w", bucket, err)
	}
	return &Deferrals{kv: kv}, nil
}

func deferralKey(stream string, seq uint64) string { return stream + "." + strconv.FormatUint(seq, 10) }

// Add records one more deferral of a message. Only the process holding the message writes its record, so a
// plain read-modify-write is enough.
func (d *Deferrals) Add(ctx context.Context, stream string, seq uint64) error {
	n, err := d.Count(ctx, stream, seq)
	if err != nil {
		return err
	}
	_, err = d.kv.Put(ctx, deferralKey(stream, seq), []byte(strconv.FormatUint(n+1, 10)))
	return err
}

// Count returns how many deliveries of a message were deferrals.
func (d *Deferrals) Count(ctx context.Context, stream string, seq uint64) (uint64, error) {
	e, err := d.kv.Get(ctx, deferralKey(stream, seq))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(string(e.Value()), 10, 64)
}
