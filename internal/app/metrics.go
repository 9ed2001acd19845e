package app

import (
	"errors"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns the registry lr-relay serves on /metrics: the Go runtime and process collectors (memory,
// goroutines, CPU, open files), to which New adds lr-relay's own collectors. `lr-relay run` and the tests that
// check the dashboard's metric names use this same function.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// opsMetrics are the process-level gauges an on-call engineer alerts on: build, readiness, consumer lag and
// the object bucket's fill. The lag and bucket gauges are set by the lag sampler (lag.go).
type opsMetrics struct {
	pending, ackPending, redelivered, oldestAge prometheus.Gauge
	objectBytes, objectMaxBytes                 prometheus.Gauge
}

// registerOpsMetrics registers the build, readiness, lag and object store gauges with reg. ready is read at
// scrape time. A collector already registered under the same name (a second App on one registry) is reused.
func registerOpsMetrics(reg prometheus.Registerer, ready func() bool) *opsMetrics {
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "lr", Name: "build_info",
		Help: "Always 1; the labels name the running lr-relay version and the Go version it was built with."},
		[]string{"version", "goversion"})
	build = register(reg, build)
	build.WithLabelValues(Version, runtime.Version()).Set(1)

	register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "lr", Name: "ready",
		Help: "1 while /-/ready answers 200 (connected to NATS and bound to the consumer), 0 otherwise."},
		func() float64 {
			if ready() {
				return 1
			}
			return 0
		}))

	gauge := func(name, help string) prometheus.Gauge {
		return register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "lr", Name: name, Help: help}))
	}
	return &opsMetrics{
		pending: gauge("consumer_pending_messages",
			"Source events not yet delivered to any replica (the durable consumer's num_pending), sampled every 15 s."),
		ackPending: gauge("consumer_ack_pending_messages",
			"Source events delivered and not yet acknowledged (being worked on, or waiting for a redelivery), sampled every 15 s."),
		redelivered: gauge("consumer_redelivered_messages",
			"Unacknowledged source events that were delivered more than once (num_redelivered), sampled every 15 s."),
		oldestAge: gauge("consumer_oldest_pending_age_seconds",
			"Age of the oldest source event not yet acknowledged (0 when there is none), sampled every 15 s."),
		objectBytes: gauge("object_store_bytes",
			"Bytes stored in the object store bucket (LR_OBJECT_BUCKET), sampled every 15 s."),
		objectMaxBytes: gauge("object_store_max_bytes",
			"Size cap of the object store bucket in bytes (-1 when it has none), sampled every 15 s."),
	}
}

// register registers c, or returns the collector of the same kind registered earlier under the same name.
// Any other clash is a programming error.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
