package quota

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestInitMetrics checks that the counters of every key exist at zero before any call, and that a limiter
// registered afterwards counts into the same series.
func TestInitMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	InitMetrics(reg, Key{"contoso", EndpointLinks}, Key{"contoso", EndpointActions})
	InitMetrics(reg, Key{"contoso", EndpointLinks}) // again: the registered collectors are reused
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v != 0 {
				t.Errorf("%s %v: got %v, want 0", mf.GetName(), m.GetLabel(), v)
			}
			got[mf.GetName()]++
		}
	}
	for _, name := range []string{"lr_quota_calls_granted_total", "lr_quota_paused_total", "lr_quota_grants_discarded_total"} {
		if got[name] != 2 {
			t.Errorf("%s: got %d series, want 2 (links and actions)", name, got[name])
		}
	}

	m := newMetrics(reg)
	m.observePause(Key{"contoso", EndpointLinks})
	mfs, err = reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lr_quota_paused_total" {
			continue
		}
		var sum float64
		for _, mt := range mf.GetMetric() {
			sum += mt.GetCounter().GetValue()
		}
		if len(mf.GetMetric()) != 2 || sum != 1 {
			t.Errorf("lr_quota_paused_total: %d series summing to %v, want 2 summing to 1", len(mf.GetMetric()), sum)
		}
	}
}
