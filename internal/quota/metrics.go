package quota

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the collectors shared by Local and Shared. All labels come
// from the Key and the configured windows, never from
// request ids.
type metrics struct {
	granted  *prometheus.CounterVec
	wait     *prometheus.HistogramVec
	paused   *prometheus.CounterVec
	discard  *prometheus.CounterVec
	degraded prometheus.Gauge
}

// newMetrics returns collectors registered with reg, or unregistered ones when
// reg is nil, so that the hot path never checks for nil. A collector that is
// already registered (a second limiter on the same registry) is reused.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		granted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "lr", Subsystem: "quota", Name: "calls_granted_total",
			Help: "Calls allowed by the quota limiter.",
		}, []string{"tenant", "endpoint"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "lr", Subsystem: "quota", Name: "wait_seconds",
			Help:    "Time a call waited for the quota limiter, including pauses.",
			Buckets: []float64{0.001, 0.01, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600},
		}, []string{"tenant", "endpoint"}),
		paused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "lr", Subsystem: "quota", Name: "paused_total",
			Help: "Pauses requested for a key, typically after a 429 with Retry-After.",
		}, []string{"tenant", "endpoint"}),
		discard: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "lr", Subsystem: "quota", Name: "grants_discarded_total",
			Help: "Grants left unused because the shared store recorded them later than half the skew margin allows.",
		}, []string{"tenant", "endpoint"}),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "lr", Subsystem: "quota", Name: "degraded",
			Help: "1 while the shared quota store is unreachable and the local fallback share is in use.",
		}),
	}
	if reg == nil {
		return m
	}
	m.granted = register(reg, m.granted)
	m.wait = register(reg, m.wait)
	m.paused = register(reg, m.paused)
	m.discard = register(reg, m.discard)
	return m
}

// InitMetrics creates the counters of each key at zero on reg, so that an increase() over them sees the first
// grant, pause or discarded grant. lr-relay calls it with every configured tenant's keys. A nil reg does
// nothing.
func InitMetrics(reg prometheus.Registerer, keys ...Key) {
	if reg == nil {
		return
	}
	m := newMetrics(reg)
	for _, key := range keys {
		m.granted.WithLabelValues(key.Tenant, key.Endpoint)
		m.paused.WithLabelValues(key.Tenant, key.Endpoint)
		m.discard.WithLabelValues(key.Tenant, key.Endpoint)
	}
}

func (m *metrics) registerDegraded(reg prometheus.Registerer) {
	if reg != nil {
		m.degraded = register(reg, m.degraded)
	}
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		// A clash with a different collector of the same name: keep counting
		// into the unregistered one rather than failing the limiter.
	}
	return c
}

func (m *metrics) observeGrant(key Key, waited time.Duration) {
	m.granted.WithLabelValues(key.Tenant, key.Endpoint).Inc()
	m.wait.WithLabelValues(key.Tenant, key.Endpoint).Observe(waited.Seconds())
}

func (m *metrics) observeDiscard(key Key) {
	m.discard.WithLabelValues(key.Tenant, key.Endpoint).Inc()
}

func (m *metrics) observePause(key Key) {
	m.paused.WithLabelValues(key.Tenant, key.Endpoint).Inc()
}

// utilisationCollector reports, at scrape time, the share of each window's
// limit used in the window that ends now, so the value decays when traffic
// stops instead of freezing at the last grant. One registry has one collector
// (a second would clash on the metric name), which reports for every limiter
// registered with it: lr-relay has a limiter per tenant and endpoint.
type utilisationCollector struct {
	desc  *prometheus.Desc
	limit *prometheus.Desc

	mu        sync.Mutex
	snapshots []func() []utilisation
}

type utilisation struct {
	key    Key
	window Window
	ratio  float64
}

// registerUtilisation adds a limiter's snapshot, read on its own clock, to the
// registry's utilisation collector, registering one first if there is none.
func registerUtilisation(reg prometheus.Registerer, clock Clock, snapshot func(now time.Time) []utilisation) {
	c := register(reg, newUtilisationCollector())
	c.mu.Lock()
	c.snapshots = append(c.snapshots, func() []utilisation { return snapshot(clock.Now()) })
	c.mu.Unlock()
}

func newUtilisationCollector() *utilisationCollector {
	return &utilisationCollector{
		desc: prometheus.NewDesc("lr_quota_utilisation_ratio",
			"Grants in the sliding window that ends now divided by the window's limit.",
			[]string{"tenant", "endpoint", "window"}, nil),
		limit: prometheus.NewDesc("lr_quota_window_limit",
			"Calls allowed in the window (the limit); with lr_quota_utilisation_ratio it gives calls used.",
			[]string{"tenant", "endpoint", "window"}, nil),
	}
}

func (c *utilisationCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.limit }

func (c *utilisationCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	snapshots := slices.Clone(c.snapshots)
	c.mu.Unlock()
	// Two limiters on one key would report the same series twice, which fails
	// the whole scrape: the first one wins.
	seen := map[[3]string]bool{}
	for _, snapshot := range snapshots {
		for _, u := range snapshot() {
			t, e := u.key.Tenant, u.key.Endpoint
			id := [3]string{t, e, u.window.String()}
			if seen[id] {
				continue
			}
			seen[id] = true
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, u.ratio, t, e, u.window.String())
			ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(u.window.Limit), t, e, u.window.String())
		}
	}
}
