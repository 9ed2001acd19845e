package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/lr-relay/lr-relay/internal/app"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

// metricNameRE finds the names of lr-relay's, the Go runtime's and the process collector's series in a PromQL
// expression (label names and values never start with these prefixes followed by a word: they sit inside {}
// as name="value", and the values are checked by the caller not to match).
var metricNameRE = regexp.MustCompile(`\b(?:lr|go|process)_[a-zA-Z0-9_]+`)

// promQLNames returns the metric names used by expr, without label matchers and strings.
func promQLNames(expr string) []string {
	// Drop quoted strings (label values, legend formats) so that a value such as "lr_x" is not taken as a name.
	noStrings := regexp.MustCompile(`"(?:[^"\\]|\\.)*"`).ReplaceAllString(expr, `""`)
	return metricNameRE.FindAllString(noStrings, -1)
}

// dashboardExprs returns every PromQL expression of the Grafana dashboard: panel targets (also inside rows) and
// query variables.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Type       string `json:"type"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var exprs []string
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q has a target without expr", path, p.Title)
				}
				exprs = append(exprs, tg.Expr)
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			exprs = append(exprs, v.Definition)
		}
	}
	return exprs
}

// ruleExprs returns the expr of every rule in a Prometheus rule file.
func ruleExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Record      string            `json:"record"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	return exprs
}

// TestDashboardAndAlertMetricsExist runs a real relay in process (embedded JetStream, the simulator, the same
// registry as `lr-relay run`), relays the sample actions and a bad event so that every labelled series has
// appeared, and checks that each metric name used by deploy/grafana/lr-relay.json and
// deploy/prometheus/alerts.yaml is in its /metrics output. Histograms are matched by their _bucket, _sum and
// _count series.
func TestDashboardAndAlertMetricsExist(t *testing.T) {
	used := map[string][]string{} // name -> files using it
	add := func(file string, exprs []string) {
		if len(exprs) == 0 {
			t.Fatalf("%s: no expressions found", file)
		}
		for _, e := range exprs {
			for _, n := range promQLNames(e) {
				if !slices.Contains(used[n], file) {
					used[n] = append(used[n], file)
				}
			}
		}
	}
	add("deploy/grafana/lr-relay.json", dashboardExprs(t, "../../deploy/grafana/lr-relay.json"))
	add("deploy/prometheus/alerts.yaml", ruleExprs(t, "../../deploy/prometheus/alerts.yaml"))
	if len(used) < 10 {
		t.Fatalf("found only %d metric names in the dashboard and rules: %v", len(used), used)
	}

	e := newEnv(t, simulator.Config{})
	samples := simulator.SampleActions(simulator.DefaultTenantID)
	commands := 0
	for _, a := range samples {
		e.sim.AddAction(a)
		commands += len(a.MachineAction.Commands)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config(t, map[string]string{"LR_WORKERS": "4"})
	e.startRelay(t, cfg, func(o *app.Options) { o.Listener = ln; o.Registry = app.NewRegistry() })
	e.publishActions(t, cfg, samples)
	e.publishRaw(t, cfg, []byte("not json"))
	waitFor(t, 60*time.Second, "results and a dead letter", func() bool {
		return e.streamMsgs(t, cfg.ResultStream) >= uint64(commands) && e.streamMsgs(t, cfg.DeadLetterStream) >= 1
	})

	url := "http://" + ln.Addr().String() + "/metrics"
	var (
		exported map[string]bool
		text     string
		missing  []string
	)
	// The relay counts a result after its PubAck: scrape until every name is there.
	testutil.Eventually(t, 30*time.Second, func() error {
		exported, text = scrapeNames(t, url)
		missing = missing[:0]
		for n := range used {
			if !exported[n] {
				missing = append(missing, fmt.Sprintf("%s (used by %v)", n, used[n]))
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return fmt.Errorf("not on /metrics: %s", strings.Join(missing, ", "))
		}
		return nil
	})
	// The process-level gauges hold their values: ready, and the build that runs.
	for _, want := range []string{"\nlr_ready 1\n", `lr_build_info{goversion="` + runtime.Version() + `",version="` + app.Version + `"} 1`} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics has no line %q", strings.TrimSpace(want))
		}
	}
	// The lag sampler runs inside App.Run: the uncapped object bucket reports its cap as -1 once sampled.
	testutil.Eventually(t, 10*time.Second, func() error {
		if _, text = scrapeNames(t, url); !strings.Contains(text, "\nlr_object_store_max_bytes -1\n") {
			return errors.New("lr_object_store_max_bytes is not -1: the lag sampler did not sample the uncapped bucket")
		}
		return nil
	})
	t.Logf("%d metric names used by the dashboard and the rules, all exported (%d series names on /metrics)", len(used), len(exported))
}

// scrapeNames returns the series names of a Prometheus text exposition, and the exposition.
func scrapeNames(t *testing.T, url string) (map[string]bool, string) {
	t.Helper()
	body := metricsBody(t, url)
	names := map[string]bool{}
	for _, smp := range parseMetrics(t, body) {
		names[smp.name] = true
	}
	return names, string(body)
}
