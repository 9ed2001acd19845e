package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/app"
	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/simulator"
)

// The permission blocks operators install, read from deploy/ so that the files themselves are what is tested.
const (
	permissionsFile          = "../../deploy/nats/permissions.conf"
	permissionsProvisionFile = "../../deploy/nats/permissions-provision.conf"
	relayUser, relayPassword = "lr-relay", "relay-password-for-tests"
)

// violationLog records the server's own log lines about permissions violations.
type violationLog struct {
	mu    sync.Mutex
	lines []string
}

func (v *violationLog) record(format string, args ...any) {
	if line := fmt.Sprintf(format, args...); strings.Contains(line, "Violation") {
		v.mu.Lock()
		v.lines = append(v.lines, line)
		v.mu.Unlock()
	}
}
func (v *violationLog) Noticef(f string, a ...any) { v.record(f, a...) }
func (v *violationLog) Warnf(f string, a ...any)   { v.record(f, a...) }
func (v *violationLog) Fatalf(f string, a ...any)  { v.record(f, a...) }
func (v *violationLog) Errorf(f string, a ...any)  { v.record(f, a...) }
func (v *violationLog) Debugf(f string, a ...any)  { v.record(f, a...) }
func (v *violationLog) Tracef(f string, a ...any)  { v.record(f, a...) }

func (v *violationLog) all() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.lines)
}

// permissionsServer returns an env server hook: a JetStream server whose config includes the permission
// block (as deploy/nats/README.md tells operators to) for user lr-relay, while connections without
// credentials (the test's own) are an unrestricted admin user. block nil means lr-relay may do anything.
func permissionsServer(block []byte, violations *violationLog) func(testing.TB) *server.Server {
	return func(t testing.TB) *server.Server {
		t.Helper()
		dir := t.TempDir()
		perms := "permissions: $LR_RELAY_PERMISSIONS"
		if block == nil {
			perms = `permissions: { publish: ">", subscribe: ">" }`
		} else if err := os.WriteFile(filepath.Join(dir, "lr-relay-permissions.conf"), block, 0o600); err != nil {
			t.Fatal(err)
		}
		conf := fmt.Sprintf(`
listen: "127.0.0.1:-1"
max_payload: 1048576
jetstream { store_dir: %q }
%s
authorization {
  users = [
    { user: admin, password: admin-password }
    { user: %q, password: %q, %s }
  ]
}
no_auth_user: admin
`, filepath.Join(dir, "js"), map[bool]string{true: "", false: `include "lr-relay-permissions.conf"`}[block == nil],
			relayUser, relayPassword, perms)
		path := filepath.Join(dir, "nats-server.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		opts, err := server.ProcessConfigFile(path)
		if err != nil {
			t.Fatalf("nats-server rejects the permission block: %v", err)
		}
		opts.Port, opts.NoSigs = server.RANDOM_PORT, true
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		if violations != nil {
			s.SetLogger(violations, true, false)
		}
		go s.Start()
		if !s.ReadyForConnections(15 * time.Second) {
			s.Shutdown()
			t.Fatal("nats-server did not become ready")
		}
		t.Cleanup(s.Shutdown)
		return s
	}
}

func readBlock(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// permWorld is one env with the two tenants of the pipeline run (the LR_MDE_* default tenant and beta, so
// that the tenant gate is on) and the variables of a relay logged in as lr-relay.
type permWorld struct {
	e    *env
	vars map[string]string
}

var betaTenant = simulator.Credentials{TenantID: "bbbbbbbb-0000-4000-8000-00000000000b", ClientID: "client-beta",
	ClientSecret: "secret-beta"}

func newPermWorld(t *testing.T, block []byte, violations *violationLog) *permWorld {
	t.Helper()
	e := newEnvWith(t, simulator.Config{ExtraTenants: []simulator.Credentials{betaTenant}},
		envOptions{server: permissionsServer(block, violations)})
	tenants, err := json.Marshal(map[string]any{"tenants": []map[string]string{{
		"name": "beta", "tenantId": betaTenant.TenantID, "clientId": betaTenant.ClientID,
		"clientSecret": betaTenant.ClientSecret, "apiUrl": "http://" + e.addr,
		"tokenUrl": "http://" + e.addr + "/{tenant}/oauth2/v2.0/token",
	}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tenantsFile, passwordFile := filepath.Join(dir, "tenants.json"), filepath.Join(dir, "nats-password")
	if err := os.WriteFile(tenantsFile, tenants, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwordFile, []byte(relayPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &permWorld{e: e, vars: map[string]string{
		"LR_NATS_USER": relayUser, "LR_NATS_PASSWORD_FILE": passwordFile, "LR_TENANTS_FILE": tenantsFile,
		// Two workers, one per tenant, one parked event: a third event of a busy tenant is deferred.
		"LR_WORKERS": "2", "LR_TENANT_MAX_WORKERS": "1", "LR_TENANT_PARKED": "1", "LR_TENANT_DEFER_DELAY": "100ms",
		// A budget the default tenant's events must wait on, so that they pile up behind the gate.
		"LR_RATE_LIMITS": "3/1s", "LR_LOG_LEVEL": "debug",
	}}
}

// relayHandle is an in-process relay with its own metrics registry and /-/ready endpoint.
type relayHandle struct {
	reg   *prometheus.Registry
	ready string // URL of /-/ready
	stop  func()
}

func (w *permWorld) start(t *testing.T, extra map[string]string) *relayHandle {
	t.Helper()
	vars := withVars(w.vars, extra)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &relayHandle{reg: prometheus.NewRegistry(), ready: "http://" + ln.Addr().String() + "/-/ready"}
	h.stop = w.e.startRelay(t, w.e.config(t, vars), func(o *app.Options) { o.Registry, o.Listener = h.reg, ln })
	return h
}

// readiness returns whether /-/ready answers 200, and what it says.
func (h *relayHandle) readiness() (bool, string) {
	resp, err := http.Get(h.ready)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK, strings.TrimSpace(string(b))
}

// counter sums a counter family of the relay's registry.
func (h *relayHandle) counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// pipelineActions registers and returns what one run publishes: a large script output and a large GetFile
// (object store), six one-command actions of the default tenant (deferrals behind the gate and waits on the
// shared budget) and two of beta.
func pipelineActions(e *env, run int64) (big []simulator.Action, all []simulator.Action) {
	script, file := bigActions(200<<10, 300<<10)
	script.MachineAction.ID = fmt.Sprintf("5c000000-0000-4000-8000-%012d", run)
	file.MachineAction.ID = fmt.Sprintf("f1000000-0000-4000-8000-%012d", run)
	big = []simulator.Action{script, file}
	for _, a := range big {
		e.sim.AddAction(a)
	}
	all = append(all, big...)
	all = append(all, quotaActions(e, 6, 1, 31+10*run, "")...)
	all = append(all, quotaActions(e, 2, 1, 32+10*run, betaTenant.TenantID)...)
	return big, all
}

// runPipeline publishes pipelineActions and a bad event to a running relay and waits for every result and
// the dead letter.
func runPipeline(t *testing.T, w *permWorld, h *relayHandle, run int64) (big []simulator.Action) {
	t.Helper()
	e := w.e
	cfg := e.config(t, w.vars)
	waitFor(t, 30*time.Second, "relay ready", func() bool { ok, _ := h.readiness(); return ok })
	results0, dead0 := e.streamMsgs(t, cfg.ResultStream), e.streamMsgs(t, cfg.DeadLetterStream)
	big, all := pipelineActions(e, run)
	e.publishActions(t, cfg, all)
	e.publishRaw(t, cfg, []byte("this is not json"))
	results := results0
	for _, a := range all {
		results += uint64(len(a.MachineAction.Commands))
	}
	waitFor(t, 60*time.Second, fmt.Sprintf("%d results and a dead letter", results-results0), func() bool {
		return e.streamMsgs(t, cfg.ResultStream) >= results && e.streamMsgs(t, cfg.DeadLetterStream) > dead0
	})
	if got := e.streamMsgs(t, cfg.ResultStream); got != results {
		t.Errorf("results stream holds %d results, want %d", got, results)
	}
	return big
}

// TestLeastPrivilegePermissions runs the whole pipeline as a NATS user that holds exactly the permission
// block of deploy/nats (with LR_PROVISION=true, and with false on streams and buckets created ahead): results,
// a dead letter, the shared quota, a large result in the Object Store, a deferral of the tenant gate, and the
// janitor's listing, purge and delete all work, and the server saw no permissions violation.
func TestLeastPrivilegePermissions(t *testing.T) {
	for _, tc := range []struct {
		name, file, provision string
	}{
		{"LR_PROVISION=true", permissionsProvisionFile, "true"},
		{"LR_PROVISION=false", permissionsFile, "false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			violations := &violationLog{}
			w := newPermWorld(t, readBlock(t, tc.file), violations)
			e := w.e
			if tc.provision == "false" {
				// The operator creates streams, consumer and buckets ahead: here, a relay logged in as admin.
				admin := w.start(t, map[string]string{"LR_NATS_USER": "", "LR_NATS_PASSWORD_FILE": ""})
				waitFor(t, 30*time.Second, "admin relay provisioned everything", func() bool { ok, _ := admin.readiness(); return ok })
				admin.stop()
			}
			h := w.start(t, map[string]string{"LR_PROVISION": tc.provision})
			big := runPipeline(t, w, h, 1)
			cfg := e.config(t, w.vars)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			t.Run("large result in the object store", func(t *testing.T) {
				ev := e.resultOf(t, cfg.ResultStream, big[0].MachineAction.ID)
				if ev.Script == nil || ev.Script.OutputObject == nil {
					t.Fatalf("want the script output in the object store, got %+v", ev.Script)
				}
				rc, err := e.store(t, cfg.ObjectBucket).Get(ctx, ev.Script.OutputObject.Name)
				if err != nil {
					t.Fatal(err)
				}
				defer rc.Close()
				got, _ := digestOf(t, rc)
				want, _ := digestOf(t, simulator.GeneratedReader(200<<10, 5))
				if got != want {
					t.Errorf("stored output sha256 %s, want %s", got, want)
				}
				if f := e.resultOf(t, cfg.ResultStream, big[1].MachineAction.ID).File; f == nil || f.Object == nil {
					t.Errorf("want the GetFile content in the object store, got %+v", f)
				}
			})
			t.Run("dead letter", func(t *testing.T) {
				var dl relay.DeadLetter
				if err := json.Unmarshal(e.readAll(t, cfg.DeadLetterStream)[0].Data, &dl); err != nil {
					t.Fatal(err)
				}
				if dl.Reason != relay.ReasonInvalidJSON {
					t.Errorf("dead letter reason %q, want %q", dl.Reason, relay.ReasonInvalidJSON)
				}
			})
			t.Run("shared quota and deferrals", func(t *testing.T) {
				for _, bucket := range []string{cfg.QuotaBucket, cfg.DeferralsBucket} {
					kv, err := e.js.KeyValue(ctx, bucket)
					if err != nil {
						t.Fatalf("bucket %s: %v", bucket, err)
					}
					keys, err := kv.Keys(ctx)
					if err != nil || len(keys) == 0 {
						t.Errorf("bucket %s holds no keys (%v): it was not written", bucket, err)
					}
				}
				if n := h.counter(t, "lr_tenant_events_deferred_total"); n == 0 {
					t.Errorf("no event was deferred by the tenant gate")
				}
				if n := h.counter(t, "lr_quota_degraded"); n != 0 {
					t.Errorf("the shared quota is degraded: the KV bucket was not usable")
				}
			})
			t.Run("janitor and deferral reads as lr-relay", func(t *testing.T) {
				js := connectAs(t, e, relayUser, relayPassword)
				// An orphan: chunks that no object's meta points to.
				if _, err := e.js.Publish(ctx, "$O."+cfg.ObjectBucket+".C.ORPHANORPHANORPHANORPHAN", []byte("chunk")); err != nil {
					t.Fatal(err)
				}
				store, err := artifact.NewStore(ctx, js, artifact.StoreConfig{Bucket: cfg.ObjectBucket}, zerolog.Nop())
				if err != nil {
					t.Fatal(err)
				}
				if n, err := store.CleanOrphans(ctx, 0); err != nil || n != 1 {
					t.Errorf("janitor purged %d orphans (%v), want 1", n, err)
				}
				name := e.resultOf(t, cfg.ResultStream, big[1].MachineAction.ID).File.Object.Name
				if err := store.Delete(ctx, name); err != nil {
					t.Errorf("deleting object %s: %v", name, err)
				}
				if _, err := e.store(t, cfg.ObjectBucket).Get(ctx, name); err == nil {
					t.Errorf("object %s is still there after its delete", name)
				}
				d, err := relay.EnsureDeferrals(ctx, js, cfg.DeferralsBucket, 1, false)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := d.Count(ctx, cfg.SourceStream, 1); err != nil {
					t.Errorf("reading a deferral count: %v", err)
				}
			})

			if ok, why := h.readiness(); !ok {
				t.Errorf("relay not ready at the end: %s", why)
			}
			if v := violations.all(); len(v) > 0 {
				t.Errorf("the server saw %d permissions violations, first: %s", len(v), v[0])
			}
			if strings.Contains(e.logs.String(), "Permissions Violation") {
				t.Errorf("lr-relay logged a permissions violation")
			}
			assertNoSecrets(t, e.logs.String(), relayPassword)
		})
	}
}

func connectAs(t *testing.T, e *env, user, password string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(e.ns.ClientURL(), nats.UserInfo(user, password))
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

// TestMissingPermissionIsReported takes one permission out of the block at a time: lr-relay must say which
// subject it may not publish to, at error level and once (a retry meeting the same refusal logs at debug),
// and report unready on /-/ready, rather than retry in silence.
func TestMissingPermissionIsReported(t *testing.T) {
	for _, tc := range []struct {
		name, grant, subject string
		// retried: the event is retried, so the same refusal comes back (the result publish).
		retried bool
	}{
		{"results publish", `"mde.liveresponse.results.>"`, `Publish to \"mde.liveresponse.results.default.`, true},
		{"quota KV write", `"$KV.lr-quota.>"`, `Publish to \"$KV.lr-quota.default/links\"`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			block := string(readBlock(t, permissionsProvisionFile))
			if strings.Count(block, tc.grant) != 1 {
				t.Fatalf("%s does not grant %s exactly once", permissionsProvisionFile, tc.grant)
			}
			w := newPermWorld(t, []byte(strings.Replace(block, tc.grant, "", 1)), nil)
			e := w.e
			h := w.start(t, map[string]string{"LR_PROVISION": "true", "LR_RETRY_BACKOFF": "100ms"})
			cfg := e.config(t, w.vars)
			waitFor(t, 30*time.Second, "relay ready", func() bool { ok, _ := h.readiness(); return ok })
			e.publishActions(t, cfg, quotaActions(e, 1, 1, 41, ""))

			errorLines := func() (n int, last string) {
				for _, line := range strings.Split(e.logs.String(), "\n") {
					if strings.Contains(line, `"level":"error"`) && strings.Contains(line, "Permissions Violation for "+tc.subject) {
						n, last = n+1, line
					}
				}
				return n, last
			}
			waitFor(t, 30*time.Second, "an error line naming the subject", func() bool { n, _ := errorLines(); return n > 0 })
			_, line := errorLines()
			t.Logf("lr-relay says: %s", line)
			waitFor(t, 10*time.Second, "readiness false", func() bool { ok, _ := h.readiness(); return !ok })
			_, why := h.readiness()
			if !strings.Contains(why, "Permissions Violation for "+strings.ReplaceAll(tc.subject, `\"`, `"`)) {
				t.Errorf("/-/ready says %q, want the missing permission", why)
			}
			if !tc.retried {
				return
			}
			waitFor(t, 30*time.Second, "the retry's violation", func() bool {
				return strings.Contains(e.logs.String(), "NATS permission missing (again)")
			})
			if n, _ := errorLines(); n != 1 {
				t.Errorf("%d error lines for the missing permission, want exactly 1", n)
			}
			if e.streamMsgs(t, cfg.ResultStream) != 0 {
				t.Errorf("a result was stored without the permission to publish it")
			}
		})
	}
}

// TestDeriveNATSSubjects is the tool the permission blocks were derived with, not a check: with
// LR_DERIVE_NATS_SUBJECTS=1 it runs the pipeline (LR_PROVISION=true, then false) as a user who may do
// anything, watches every subject published in the account, and prints them. Run it after changing how
// lr-relay talks to JetStream, and compare with deploy/nats/permissions*.conf.
func TestDeriveNATSSubjects(t *testing.T) {
	if os.Getenv("LR_DERIVE_NATS_SUBJECTS") == "" {
		t.Skip("set LR_DERIVE_NATS_SUBJECTS=1 to print the subjects lr-relay publishes to")
	}
	w := newPermWorld(t, nil, nil)
	var mu sync.Mutex
	seen := map[string]int{}
	obs, err := nats.Connect(w.e.ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer obs.Close()
	phase := "provision"
	if _, err := obs.Subscribe(">", func(m *nats.Msg) {
		mu.Lock()
		seen[phase+" "+m.Subject]++
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	h := w.start(t, map[string]string{"LR_PROVISION": "true"})
	runPipeline(t, w, h, 1)
	h.stop()
	mu.Lock()
	phase = "existing"
	mu.Unlock()
	h = w.start(t, map[string]string{"LR_PROVISION": "false"})
	runPipeline(t, w, h, 2)
	h.stop()
	mu.Lock()
	defer mu.Unlock()
	var lines []string
	for s, n := range seen {
		lines = append(lines, fmt.Sprintf("%s %d", s, n))
	}
	slices.Sort(lines)
	t.Logf("subjects published in the account:\n%s", strings.Join(lines, "\n"))
}
