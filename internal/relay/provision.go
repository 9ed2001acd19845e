package relay

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/provision"
)

// StreamConfig names the streams, subjects and consumer, and the settings used when provisioning them. It has
// no defaults: every field comes from the configuration (internal/config), and provisioning refuses settings
// that are not filled in.
type StreamConfig struct {
	SourceStream        string
	SourceSubject       string
	Consumer            string
	ResultStream        string
	ResultSubjectPrefix string
	DeadLetterStream    string
	DeadLetterSubject   string
	// Provision creates what is missing. Existing streams and consumers are used as they are, so the
	// settings below matter only then.
	Provision bool
	// Replicas of the streams created (LR_STREAM_REPLICAS).
	Replicas int
	// ResultDuplicates is the duplicate window of the results and dead-letter streams created
	// (LR_RESULT_DUPLICATE_WINDOW).
	ResultDuplicates time.Duration
	// AckWait of the consumer created (LR_ACK_WAIT).
	AckWait time.Duration
}

// checkProvision reports the settings that provisioning needs and that are not filled in.
func (c StreamConfig) checkProvision() error {
	var errs []error
	if c.Replicas < 1 {
		errs = append(errs, fmt.Errorf("relay: stream replicas must be at least 1, got %d", c.Replicas))
	}
	if c.ResultDuplicates <= 0 {
		errs = append(errs, fmt.Errorf("relay: result duplicate window must be positive, got %s", c.ResultDuplicates))
	}
	if c.AckWait <= 0 {
		errs = append(errs, fmt.Errorf("relay: consumer ack wait must be positive, got %s", c.AckWait))
	}
	return errors.Join(errs...)
}

// EnsureStreams creates the source, results and dead-letter streams when they are missing and Provision is
// set, and otherwise only checks that they exist.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamConfig) error {
	if c.Provision {
		if err := c.checkProvision(); err != nil {
			return err
		}
	}
	replicas, dup := c.Replicas, c.ResultDuplicates
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
	if err := c.checkProvision(); err != nil {
		return nil, err
	}
	cons, err = js.CreateOrUpdateConsumer(ctx, c.SourceStream, jetstream.ConsumerConfig{
		Durable:       c.Consumer,
		Description:   "lr-relay: shared by every replica",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 10000,
		FilterSubject: c.SourceSubject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		Replicas:      0,
	})
	if err != nil {
		return nil, fmt.Errorf("creating consumer %q on %q: %w", c.Consumer, c.SourceStream, err)
	}
	return cons, nil
}
