package app

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/embedded"
	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

// TestReadyShowsTenantAuth runs the app with two tenants, one of whose secrets the token endpoint rejects:
// the process becomes ready (the other tenant works), /-/ready names the failing tenant, and
// lr_tenant_auth_ok says 1 and 0.
func TestReadyShowsTenantAuth(t *testing.T) {
	ns := embeddedtest.Server(t, embedded.Options{})
	sim, err := simulator.New(simulator.Config{
		ExtraTenants: []simulator.Credentials{{TenantID: "fabrikam-tenant", ClientID: "fabrikam-app", ClientSecret: "right"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	secret := filepath.Join(dir, "fabrikam-secret")
	if err := os.WriteFile(secret, []byte("revoked\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tenants := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(tenants, []byte("tenants:\n  - {name: fabrikam, tenantId: fabrikam-tenant, clientId: fabrikam-app, clientSecretFile: "+
		secret+", apiUrl: "+srv.URL+", tokenUrl: \""+srv.URL+"/{tenant}/oauth2/v2.0/token\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var cfg config.Config
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "LR_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	if cfg, err = config.Load(); err != nil {
		t.Fatal(err)
	}
	cfg.NATSURL = ns.ClientURL()
	cfg.HTTPAddr = ""
	cfg.MDEAPIURL, cfg.MDETokenURL = srv.URL, srv.URL+"/{tenant}/oauth2/v2.0/token"
	cfg.MDETenantID, cfg.MDEClientID, cfg.MDEClientSecret = simulator.DefaultTenantID, simulator.DefaultClientID, simulator.DefaultClientSecret
	cfg.TenantsFile = tenants
	reg := prometheus.NewRegistry()
	a, err := New(Options{Config: cfg, Logger: zerolog.Nop(), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("Run: %v", err)
		}
	}()

	var why string
	testutil.Eventually(t, 20*time.Second, func() error {
		var ok bool
		ok, why = a.Ready()
		if ok && strings.Contains(why, "tenant fabrikam auth: credentials rejected") && !strings.Contains(why, "tenant default") {
			return nil
		}
		return fmt.Errorf("Ready = %v, %q; want ready, naming fabrikam's rejected credentials and not the default tenant", ok, why)
	})
	if !strings.Contains(why, "AADSTS7000215") || strings.Contains(why, "revoked") {
		t.Errorf("Ready detail %q: want the AADSTS code and no secret", why)
	}
	gauges := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lr_tenant_auth_ok" {
			continue
		}
		for _, m := range mf.GetMetric() {
			gauges[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	if gauges["default"] != 1 || gauges["fabrikam"] != 0 || len(gauges) != 2 {
		t.Errorf("lr_tenant_auth_ok = %v, want default 1, fabrikam 0", gauges)
	}
}
