// Package embeddedtest gives tests a real JetStream server (internal/embedded) and clients of it, cleaned up
// when the test ends.
package embeddedtest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/embedded"
)

// Server starts a server; an empty o.StoreDir gets a directory of the test's own.
func Server(t testing.TB, o embedded.Options) *server.Server {
	t.Helper()
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	s, err := embedded.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect opens a connection of its own to s, as a separate process would, and returns its JetStream context.
func Connect(t testing.TB, s *server.Server, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// JetStream starts a server and returns a client of it.
func JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	return Connect(t, Server(t, embedded.Options{}))
}
