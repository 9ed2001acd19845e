package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lr-relay/lr-relay/internal/app"
	"github.com/lr-relay/lr-relay/internal/simulator"
)

// TestWrongSecretWaitsForTheFix: a tenant whose secret is wrong is a condition of the tenant, not of its
// events. The tenant is reported unhealthy, its events wait well past LR_MAX_DELIVER deliveries without being
// dead-lettered, and once the secret file is fixed every event is relayed, without a restart.
func TestWrongSecretWaitsForTheFix(t *testing.T) {
	e := newEnv(t, simulator.Config{})
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("not-the-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := e.config(t, map[string]string{
		"LR_MDE_CLIENT_SECRET": "", "LR_MDE_CLIENT_SECRET_FILE": secretFile,
		"LR_MAX_DELIVER": "2", "LR_TENANT_AUTH_RETRY": "300ms", "LR_RETRY_BACKOFF": "100ms",
	})
	e.startRelay(t, cfg, func(o *app.Options) { o.Registry = reg })
	actions := simulator.GenerateActions(5, 2, 200, 811)
	commands := 0
	for _, a := range actions {
		e.sim.AddAction(a)
		commands += len(a.MachineAction.Commands)
	}
	e.publishActions(t, cfg, actions)

	deferred := func() float64 {
		return metricValue(t, reg, "lr_events_total", map[string]string{"fate": "deferred"})
	}
	// Every event waits at least LR_MAX_DELIVER+1 times: had those deliveries counted, they would be dead letters.
	waitFor(t, 60*time.Second, "three deferrals per event", func() bool { return deferred() >= 3*float64(len(actions)) })
	if n := e.streamMsgs(t, cfg.DeadLetterStream); n != 0 {
		t.Fatalf("%d dead letters while the secret was wrong, want 0", n)
	}
	if got := metricValue(t, reg, "lr_tenant_auth_ok", map[string]string{"tenant": "default"}); got != 0 {
		t.Errorf("lr_tenant_auth_ok{tenant=default} = %v while the secret is wrong, want 0", got)
	}
	if !strings.Contains(e.logs.String(), "credentials rejected") {
		t.Error("no log line says the credentials were rejected")
	}

	if err := os.WriteFile(secretFile, []byte(simulator.DefaultClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.waitResults(t, cfg, commands, 60*time.Second)
	e.waitSettled(t, cfg, 30*time.Second)
	verify(t, e, cfg, actions).check(t, expect{})
	if got := metricValue(t, reg, "lr_tenant_auth_ok", map[string]string{"tenant": "default"}); got != 1 {
		t.Errorf("lr_tenant_auth_ok{tenant=default} = %v after the fix, want 1", got)
	}
	assertNoSecrets(t, e.logs.String(), simulator.DefaultClientSecret, "not-the-secret")
}

// metricValue returns the value of the first series of a gathered metric whose labels include labels, or -1
// when there is none yet.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue series
				}
			}
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return -1
}
