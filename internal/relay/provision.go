package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/provision"
)

// StreamConfig names the streams, subjects and consumer, and the settings used when provisioning them.
type StreamConfig struct {
	SourceStream        string
	SourceSubject       string
	Consumer            string
	ResultStream        string
	ResultSubjectPrefix string
	DeadLetterStream    string
	DeadLetterSubject   string
	// Provision creates what is missing. Existing streams and consumers are used as they are.
	Provision        bool
	Replicas         int
	ResultDuplicates time.Duration
	AckWait          time.Duration
}

// EnsureStreams creates the source, results and dead-letter streams when they are missing and Provision is
// set, and otherwise only checks that they exist.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamConfig) error {
	replicas := max(c.Replicas, 1)
	dup := c.ResultDuplicates
	if dup <= 0 {
		dup = time.Hour
	}
	want := []jetstream.StreamConfig{
		{Name: c.SourceStream, Subjects: []string{c.SourceSubject}, Storage: jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy, MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute, Replicas: replicas,
			Description: "Live response finished events (lr-relay input)"},
		{Name: c.ResultStream, Subjects: []string{c.ResultSubjectPrefix + ".>"}, Storage: jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy, MaxAge: 30 * 24 * time.Hour, Duplicates: dup, Replicas: replicas,
			Description: "lr-relay result events, one per command"},
		{Name: c.DeadLetterStream, Subjects: []string{c.DeadLetterSubject}, Storage: jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy, MaxAge: 90 * 24 * time.Hour, Duplicates: dup, Replicas: replicas,
			Description: "lr-relay dead-letter records with the original payloads"},
	}
	for _, sc := range want {
		if _, err := provision.Stream(ctx, js, sc, c.Provision); err != nil {
			return fmt.Errorf("stream %q: %w", sc.Name, err)
		}
	}
	return nil
}

// EnsureConsumer binds the durable consumer, creating it when missing (and Provision is set). MaxDeliver is
// left unlimited on purpose: the relay itself dead-letters an event after LR_MAX_DELIVER deliveries, with its
// last error, so the server never drops one silently.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, c StreamConfig) (jetstream.Consumer, error) {
	cons, err := js.Consumer(ctx, c.SourceStream, c.Consumer)
	if err == nil {
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("looking up consumer %q on %q: %w", c.Consumer, c.SourceStream, err)
	}
	if !c.Provision {
		return nil, fmt.Errorf("consumer %q on stream %q does not exist and LR_PROVISION is false", c.Consumer, c.SourceStream)
	}
	ackWait := c.AckWait
	if ackWait <= 0 {
		ackWait = time.Minute
	}
	cons, err = js.CreateOrUpdateConsumer(ctx, c.SourceStream, jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "lr-relay: shared by every replica",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 1000,
		FilterSubject: c.SourceSubject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      0,
	})
	if err != nil {
		return nil, fmt.Errorf("creating consumer %q on %q: %w", c.Consumer, c.SourceStream, err)
	}
	return cons, nil
}
