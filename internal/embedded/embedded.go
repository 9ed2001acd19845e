// Package embedded runs an in-process NATS server with JetStream: the default of `lr-relay demo`, and the real
// server that tests run against.
package embedded

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures an embedded server.
type Options struct {
	// StoreDir is where JetStream keeps its files. Required: an empty one would fall back to a temporary
	// directory the caller does not control.
	StoreDir string
	// Port is the client port; 0 picks a free one.
	Port int
	// Cluster, when set, joins a cluster: Name, the route listen port and the routes to the other nodes.
	Cluster *Cluster
	// ServerName must be unique within a cluster.
	ServerName string
	// Log turns the server's own logging on (to stderr).
	Log bool
}

// Cluster is the route configuration of one node.
type Cluster struct {
	Name      string
	RoutePort int
	Routes    []string // nats-route://127.0.0.1:PORT
}

// Start starts a server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded: StoreDir is required")
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      !o.Log,
		// Room for the object store's 128 KiB chunks and the largest result events.
		MaxPayload: 1 << 20,
	}
	if o.Cluster != nil {
		opts.Cluster = server.ClusterOpts{Name: o.Cluster.Name, Host: "127.0.0.1", Port: o.Cluster.RoutePort}
		for _, r := range o.Cluster.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("embedded: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats-server: %w", err)
	}
	if o.Log {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats-server did not become ready within 15s")
	}
	return s, nil
}
