package relay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
)

// TestProvisionHasNoDefaults: provisioning uses the configured settings as they are, and refuses settings
// that are not filled in instead of replacing them with defaults of its own.
func TestProvisionHasNoDefaults(t *testing.T) {
	js := embeddedtest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	filled := StreamConfig{SourceStream: "SRC", SourceSubject: "src.finished", Consumer: "c",
		ResultStream: "RES", ResultSubjectPrefix: "res", DeadLetterStream: "DL", DeadLetterSubject: "dl",
		Provision: true, Replicas: 1, ResultDuplicates: 90 * time.Minute, AckWait: 7 * time.Second}

	for name, change := range map[string]func(*StreamConfig){
		"no replicas":         func(c *StreamConfig) { c.Replicas = 0 },
		"no duplicate window": func(c *StreamConfig) { c.ResultDuplicates = 0 },
		"no ack wait":         func(c *StreamConfig) { c.AckWait = 0 },
	} {
		c := filled
		change(&c)
		if err := EnsureStreams(ctx, js, c); err == nil {
			t.Errorf("EnsureStreams with %s: err = nil, want a refusal", name)
		}
	}
	if _, err := js.Stream(ctx, "SRC"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("a refused config created a stream: %v", err)
	}
	if _, err := EnsureDeferrals(ctx, js, "deferrals", 0, true); err == nil {
		t.Error("EnsureDeferrals with 0 replicas: err = nil, want a refusal")
	}

	if err := EnsureStreams(ctx, js, filled); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"RES", "DL"} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.Duplicates; got != 90*time.Minute {
			t.Errorf("stream %s duplicate window %s, want the configured 1h30m", name, got)
		}
	}
	noAckWait := filled
	noAckWait.AckWait = 0
	if _, err := EnsureConsumer(ctx, js, noAckWait); err == nil {
		t.Error("EnsureConsumer with no AckWait: err = nil, want a refusal")
	}
	cons, err := EnsureConsumer(ctx, js, filled)
	if err != nil {
		t.Fatal(err)
	}
	if got := cons.CachedInfo().Config.AckWait; got != 7*time.Second {
		t.Errorf("consumer AckWait %s, want the configured 7s", got)
	}
	// Binding what exists needs none of the provisioning settings.
	if _, err := EnsureConsumer(ctx, js, StreamConfig{SourceStream: "SRC", Consumer: "c"}); err != nil {
		t.Errorf("binding the existing consumer: %v", err)
	}
}
