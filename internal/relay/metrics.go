package relay

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	events        *prometheus.CounterVec
	results       *prometheus.CounterVec
	deadLetters   *prometheus.CounterVec
	duplicates    prometheus.Counter
	skipped       prometheus.Counter
	inflight      prometheus.Gauge
	parked        *prometheus.CounterVec
	deferred      *prometheus.CounterVec
	eventDuration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "lr", Name: "events_total",
			Help: "Source events by fate: relayed, retried, handed_back, deferred, dead_lettered."}, []string{"fate"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "lr", Name: "results_published_total",
			Help: "Result events stored in the results stream, by command type (RunScript, GetFile, PutFile or other) and outcome."}, []string{"command_type", "outcome"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "lr", Name: "deadletters_total",
			Help: "Dead-letter records stored, by reason."}, []string{"reason"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "lr", Name: "results_duplicate_total",
			Help: "Result publishes the results stream refused as duplicates (Nats-Msg-Id, or a result already stored on the subject)."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "lr", Name: "results_already_stored_total",
			Help: "Commands skipped on redelivery because their result was already stored."}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "lr", Name: "events_in_flight",
			Help: "Events being processed by this process."}),
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "lr", Name: "tenant_events_parked_total",
			Help: "Events parked because their tenant held its worker cap."}, []string{"tenant"}),
		deferred: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "lr", Name: "tenant_events_deferred_total",
			Help: "Events handed back for later because their tenant held its worker cap and parking was full."}, []string{"tenant"}),
		eventDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "lr", Name: "event_duration_seconds",
			Help: "Time from pulling an event to settling it.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}),
	}
	// Every label value is from a closed set, and each known one starts at zero, so that increase() sees the
	// first dead letter instead of a series appearing from nowhere.
	for _, f := range []string{"relayed", "retried", "handed_back", "deferred", "dead_lettered"} {
		m.events.WithLabelValues(f)
	}
	for _, c := range commandLabels {
		for _, o := range outcomes {
			m.results.WithLabelValues(c, o)
		}
	}
	for _, reason := range Reasons {
		m.deadLetters.WithLabelValues(reason)
	}
	if reg != nil {
		reg.MustRegister(m.events, m.results, m.deadLetters, m.duplicates, m.skipped, m.inflight, m.parked, m.deferred, m.eventDuration)
	}
	return m
}
