package provision_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/embedded"
	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
	"github.com/lr-relay/lr-relay/internal/provision"
)

// race runs fn from n clients of their own at the same moment and returns every error.
func race(t *testing.T, n int, fn func(ctx context.Context, js jetstream.JetStream) error) []error {
	t.Helper()
	s := embeddedtest.Server(t, embedded.Options{})
	clients := make([]jetstream.JetStream, n)
	for i := range clients {
		clients[i] = embeddedtest.Connect(t, s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, js := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = fn(ctx, js)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// Every binder must come back with the bucket (or stream), however many create it at the same moment.
func TestConcurrentCreatesAllBind(t *testing.T) {
	const n = 16
	var seq atomic.Int64
	cases := map[string]func(ctx context.Context, js jetstream.JetStream) error{
		"kv": func(ctx context.Context, js jetstream.JetStream) error {
			// Tenants with other windows ask for another TTL: the first create wins, the others bind it.
			ttl := time.Hour + time.Duration(seq.Add(1))*time.Minute
			kv, err := provision.KeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: "q", History: 1, TTL: ttl}, true)
			if err == nil && kv.Bucket() != "q" {
				err = fmt.Errorf("bound %q", kv.Bucket())
			}
			return err
		},
		"object store": func(ctx context.Context, js jetstream.JetStream) error {
			_, err := provision.ObjectStore(ctx, js, jetstream.ObjectStoreConfig{Bucket: "o", TTL: time.Hour}, true)
			return err
		},
		"stream": func(ctx context.Context, js jetstream.JetStream) error {
			_, err := provision.Stream(ctx, js, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}, true)
			return err
		},
	}
	for name, fn := range cases {
		t.Run(name, func(t *testing.T) {
			for round := range 5 {
				for i, err := range race(t, n, fn) {
					if err != nil {
						t.Errorf("round %d, client %d: %v", round, i, err)
					}
				}
			}
		})
	}
}

// Without create, a missing bucket is an error that names the setting.
func TestMissingWithoutCreate(t *testing.T) {
	js := embeddedtest.JetStream(t)
	_, err := provision.KeyValue(context.Background(), js, jetstream.KeyValueConfig{Bucket: "none"}, false)
	if err == nil {
		t.Fatal("want an error for a missing bucket without create")
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) || !strings.Contains(err.Error(), "LR_PROVISION is false") {
		t.Errorf("error = %v, want ErrBucketNotFound naming LR_PROVISION", err)
	}
}
