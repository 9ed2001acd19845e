// Package provision binds the JetStream buckets lr-relay uses, creating them when they are missing, in a way
// that tolerates every replica of a new deployment doing the same at the same moment.
//
// Why not CreateOrUpdateKeyValue: two processes that both find a bucket missing both try to create its
// stream; the server serialises the creates, and the loser gets "stream name already in use" (10058) or
// "bucket exists" instead of the bucket. A start-up that treats that as fatal crashes the second pod of a
// fresh deployment. Here the loser simply binds what the winner created. An existing bucket is used as it is:
// the operator may have tuned it.
package provision

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// errNameInUse is the JetStream error code for a create that lost a race with another create of the same
// stream under a different configuration.
const errNameInUse jetstream.ErrorCode = 10058

// lostRace reports whether a create failed only because someone else created the same thing first.
func lostRace(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == errNameInUse)
}

// KeyValue binds the KV bucket cfg.Bucket, creating it with cfg when it is missing and create is set.
func KeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig, create bool) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, err
	}
	if !create {
		return nil, fmt.Errorf("KV bucket %q does not exist and LR_PROVISION is false: %w", cfg.Bucket, err)
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if lostRace(err) {
		return js.KeyValue(ctx, cfg.Bucket)
	}
	return kv, err
}

// ObjectStore binds the Object Store bucket cfg.Bucket, creating it with cfg when it is missing and create
// is set.
func ObjectStore(ctx context.Context, js jetstream.JetStream, cfg jetstream.ObjectStoreConfig, create bool) (jetstream.ObjectStore, error) {
	obs, err := js.ObjectStore(ctx, cfg.Bucket)
	if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
		return obs, err
	}
	if !create {
		return nil, fmt.Errorf("object store bucket %q does not exist and LR_PROVISION is false: %w", cfg.Bucket, err)
	}
	obs, err = js.CreateObjectStore(ctx, cfg)
	if lostRace(err) {
		return js.ObjectStore(ctx, cfg.Bucket)
	}
	return obs, err
}

// Stream binds the stream cfg.Name, creating it with cfg when it is missing and create is set.
func Stream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, create bool) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, cfg.Name)
	if err == nil || !errors.Is(err, jetstream.ErrStreamNotFound) {
		return s, err
	}
	if !create {
		return nil, fmt.Errorf("stream %q does not exist and LR_PROVISION is false: %w", cfg.Name, err)
	}
	s, err = js.CreateStream(ctx, cfg)
	if lostRace(err) {
		return js.Stream(ctx, cfg.Name)
	}
	return s, err
}
