package mde

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the client's collectors. A nil *metrics records nothing, so that metrics stay optional.
type metrics struct {
	tenant   string
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	tokens   *prometheus.CounterVec
	auth     *prometheus.GaugeVec
}

// newMetrics registers the collectors with reg. Several clients (one per tenant) share one registry, so a
// collector that is already registered is reused rather than treated as an error.
func newMetrics(reg prometheus.Registerer, tenant string) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "lr", Subsystem: "mde", Name: "requests_total",
		Help: "Defender API requests by tenant, operation and result (ok, throttled, unauthorized, client_error, server_error, transport_error).",
	}, []string{"tenant", "op", "result"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "lr", Subsystem: "mde", Name: "request_duration_seconds",
		Help:    "Duration of Defender API requests that got an answer, by tenant and operation.",
		Buckets: prometheus.DefBuckets,
	}, []string{"tenant", "op"})
	tokens := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "lr", Subsystem: "mde", Name: "token_requests_total",
		Help: "OAuth2 token requests by tenant and result (ok, error).",
	}, []string{"tenant", "result"})
	auth := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "lr", Subsystem: "tenant", Name: "auth_ok",
		Help: "1 while the tenant's credentials are accepted (its last token request succeeded), 0 before its first token and after the token endpoint rejected them.",
	}, []string{"tenant"})
	m := &metrics{tenant: tenant}
	var err error
	m.requests, err = register(reg, requests)
	if err != nil {
		return nil, err
	}
	m.duration, err = register(reg, duration)
	if err != nil {
		return nil, err
	}
	m.tokens, err = register(reg, tokens)
	if err != nil {
		return nil, err
	}
	m.auth, err = register(reg, auth)
	if err != nil {
		return nil, err
	}
	// Every known label value starts at zero, so that an alert on increase() sees the first 429 or failure.
	for _, o := range []op{opGetAction, opGetLink} {
		for _, r := range requestResults {
			m.requests.WithLabelValues(tenant, o.Label, r)
		}
	}
	for _, r := range []string{"ok", "error"} {
		m.tokens.WithLabelValues(tenant, r)
	}
	return m, nil
}

// requestResults are the values of the result label of lr_mde_requests_total (see resultLabel).
var requestResults = []string{"ok", "throttled", "unauthorized", "client_error", "server_error", "transport_error"}

// register registers c, or returns the identical collector registered earlier.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		var zero C
		return zero, err
	}
	return c, nil
}

func (m *metrics) request(op, result string, seconds float64) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(m.tenant, op, result).Inc()
	if seconds >= 0 {
		m.duration.WithLabelValues(m.tenant, op).Observe(seconds)
	}
}

func (m *metrics) token(result string) {
	if m == nil {
		return
	}
	m.tokens.WithLabelValues(m.tenant, result).Inc()
}

func (m *metrics) authOK(ok bool) {
	if m == nil {
		return
	}
	v := 0.0
	if ok {
		v = 1
	}
	m.auth.WithLabelValues(m.tenant).Set(v)
}
