package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"sigs.k8s.io/yaml"

	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

// decodeStrict decodes JSON, failing on any field the target type does not know: a misspelt JetStream
// field would otherwise be ignored by natscli's decoder and silently take its default.
func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if dec.More() {
		t.Fatalf("%s: data after the JSON object", path)
	}
}

type natsFiles struct {
	source, results, deadLetter jetstream.StreamConfig
	consumer                    jetstream.ConsumerConfig
}

func loadNATS(t *testing.T) natsFiles {
	t.Helper()
	var f natsFiles
	decodeStrict(t, "nats/stream-live-response.json", &f.source)
	decodeStrict(t, "nats/stream-results.json", &f.results)
	decodeStrict(t, "nats/stream-deadletter.json", &f.deadLetter)
	decodeStrict(t, "nats/consumer-lr-relay.json", &f.consumer)
	return f
}

func TestNATSFilesAreKnown(t *testing.T) {
	known := []string{"consumer-lr-relay.json", "stream-deadletter.json", "stream-live-response.json", "stream-results.json"}
	got, err := filepath.Glob("nats/*.json")
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i] = filepath.Base(got[i])
	}
	slices.Sort(got)
	if !slices.Equal(got, known) {
		t.Errorf("got nats/*.json %v, want %v (add a new file to this test so that it is checked)", got, known)
	}
}

func TestNATSDefinitions(t *testing.T) {
	f := loadNATS(t)
	const day = 24 * time.Hour
	streams := []struct {
		name         string
		cfg          jetstream.StreamConfig
		wantName     string
		wantSubjects []string
		wantMaxAge   time.Duration
		wantDup      time.Duration
	}{
		{"source", f.source, "LIVE_RESPONSE", []string{"mde.liveresponse.finished"}, 7 * day, 2 * time.Minute},
		{"results", f.results, "LIVE_RESPONSE_RESULTS", []string{"mde.liveresponse.results.>"}, 30 * day, time.Hour},
		{"deadletter", f.deadLetter, "LIVE_RESPONSE_DEADLETTER", []string{"mde.liveresponse.deadletter"}, 90 * day, 2 * time.Minute},
	}
	for _, s := range streams {
		t.Run(s.name, func(t *testing.T) {
			c := s.cfg
			if c.Name != s.wantName {
				t.Errorf("got name %q, want %q", c.Name, s.wantName)
			}
			if !slices.Equal(c.Subjects, s.wantSubjects) {
				t.Errorf("got subjects %v, want %v", c.Subjects, s.wantSubjects)
			}
			if c.MaxAge != s.wantMaxAge {
				t.Errorf("got max_age %v, want %v", c.MaxAge, s.wantMaxAge)
			}
			if c.Duplicates != s.wantDup {
				t.Errorf("got duplicate_window %v, want %v", c.Duplicates, s.wantDup)
			}
			if c.Storage != jetstream.FileStorage {
				t.Errorf("got storage %v, want file", c.Storage)
			}
			if c.Retention != jetstream.LimitsPolicy {
				t.Errorf("got retention %v, want limits (a dead-lettered event must stay fetchable)", c.Retention)
			}
			if c.Replicas != 3 {
				t.Errorf("got num_replicas %d, want 3", c.Replicas)
			}
		})
	}
	t.Run("consumer", func(t *testing.T) {
		c := f.consumer
		if c.Durable != "lr-relay" || c.Name != "lr-relay" {
			t.Errorf("got durable %q name %q, want lr-relay for both", c.Durable, c.Name)
		}
		if c.DeliverSubject != "" {
			t.Errorf("got deliver_subject %q, want a pull consumer", c.DeliverSubject)
		}
		if c.AckPolicy != jetstream.AckExplicitPolicy {
			t.Errorf("got ack_policy %v, want explicit", c.AckPolicy)
		}
		if c.AckWait != 60*time.Second {
			t.Errorf("got ack_wait %v, want 60s", c.AckWait)
		}
		if c.MaxDeliver != -1 || c.MaxAckPending != 10000 {
			t.Errorf("got max_deliver %d max_ack_pending %d, want -1 (lr-relay dead-letters itself) and 10000", c.MaxDeliver, c.MaxAckPending)
		}
		if c.FilterSubject != "mde.liveresponse.finished" {
			t.Errorf("got filter_subject %q, want mde.liveresponse.finished", c.FilterSubject)
		}
		if c.DeliverPolicy != jetstream.DeliverAllPolicy {
			t.Errorf("got deliver_policy %v, want all", c.DeliverPolicy)
		}
		if c.InactiveThreshold != 0 {
			t.Errorf("got inactive_threshold %v, want none: the server would delete a durable waiting on the rate limiter", c.InactiveThreshold)
		}
	})
}

// TestNATSDefinitionsOnServer creates every stream and the consumer on a real (embedded, single-node) server,
// so that anything the server refuses fails here; replicas are lowered to 1 for that single node.
func TestNATSDefinitionsOnServer(t *testing.T) {
	f := loadNATS(t)
	js := embeddedtest.JetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for _, cfg := range []jetstream.StreamConfig{f.source, f.results, f.deadLetter} {
		cfg.Replicas = 1
		st, err := js.CreateStream(ctx, cfg)
		if err != nil {
			t.Fatalf("creating stream %s: %v", cfg.Name, err)
		}
		got := st.CachedInfo().Config
		if got.Duplicates != cfg.Duplicates || got.MaxAge != cfg.MaxAge || got.Compression != cfg.Compression {
			t.Errorf("stream %s: server kept duplicates %v max_age %v compression %v, want %v %v %v",
				cfg.Name, got.Duplicates, got.MaxAge, got.Compression, cfg.Duplicates, cfg.MaxAge, cfg.Compression)
		}
	}
	cons, err := js.CreateConsumer(ctx, f.source.Name, f.consumer)
	if err != nil {
		t.Fatalf("creating consumer: %v", err)
	}

	publishes := []struct {
		subject, msgID, wantStream string
	}{
		{"mde.liveresponse.finished", "a", f.source.Name},
		{"mde.liveresponse.results.contoso.7f1c2a3b-4d5e-4f60-8a9b-0c1d2e3f4a5b.0", "r0", f.results.Name},
		{"mde.liveresponse.deadletter", "d", f.deadLetter.Name},
	}
	for _, p := range publishes {
		ack, err := js.Publish(ctx, p.subject, []byte(`{}`), jetstream.WithMsgID(p.msgID))
		if err != nil {
			t.Fatalf("publishing to %s: %v", p.subject, err)
		}
		if ack.Stream != p.wantStream {
			t.Errorf("%s landed in stream %q, want %q", p.subject, ack.Stream, p.wantStream)
		}
	}
	// A republished result (same Nats-Msg-Id) is dropped: what makes at-least-once processing store once.
	ack, err := js.Publish(ctx, publishes[1].subject, []byte(`{}`), jetstream.WithMsgID(publishes[1].msgID))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Errorf("got PubAck.Duplicate false for a repeated result id, want true")
	}

	// The consumer's pending count follows the stream asynchronously: poll for it.
	var info *jetstream.ConsumerInfo
	testutil.Eventually(t, 5*time.Second, func() error {
		if info, err = cons.Info(ctx); err != nil {
			return err
		}
		if info.NumPending != 1 {
			return fmt.Errorf("got %d pending on the consumer, want the 1 source event", info.NumPending)
		}
		return nil
	})
	if info.Config.InactiveThreshold != 0 {
		t.Errorf("got inactive threshold %v on the server, want none", info.Config.InactiveThreshold)
	}
}

// configVars returns the LR_ variables of internal/config and their defaults, from the envconfig tags of
// config.Config: the names and defaults that envconfig itself reads.
func configVars(t *testing.T) map[string]string {
	t.Helper()
	vars := map[string]string{}
	typ := reflect.TypeFor[config.Config]()
	for i := range typ.NumField() {
		tag := typ.Field(i).Tag
		if name := tag.Get("envconfig"); name != "" {
			vars[config.Prefix+"_"+name] = tag.Get("default")
		}
	}
	if len(vars) == 0 {
		t.Fatal("found no envconfig fields in config.Config: update configVars")
	}
	return vars
}

func TestNATSMatchesConfigDefaults(t *testing.T) {
	f := loadNATS(t)
	def := configVars(t)
	dur := func(name string) time.Duration {
		d, err := time.ParseDuration(def[name])
		if err != nil {
			t.Fatalf("%s default %q: %v", name, def[name], err)
		}
		return d
	}
	checks := []struct {
		name, got, want string
	}{
		{"source stream", f.source.Name, def["LR_SOURCE_STREAM"]},
		{"source subject", strings.Join(f.source.Subjects, ","), def["LR_SOURCE_SUBJECT"]},
		{"consumer filter", f.consumer.FilterSubject, def["LR_SOURCE_SUBJECT"]},
		{"consumer name", f.consumer.Durable, def["LR_CONSUMER"]},
		{"result stream", f.results.Name, def["LR_RESULT_STREAM"]},
		{"result subjects", strings.Join(f.results.Subjects, ","), def["LR_RESULT_SUBJECT_PREFIX"] + ".>"},
		{"dead-letter stream", f.deadLetter.Name, def["LR_DEADLETTER_STREAM"]},
		{"dead-letter subject", strings.Join(f.deadLetter.Subjects, ","), def["LR_DEADLETTER_SUBJECT"]},
		{"ack wait", f.consumer.AckWait.String(), dur("LR_ACK_WAIT").String()},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %q in deploy/nats, want %q as in internal/config", c.got, c.want)
			}
		})
	}

	t.Run("results duplicate window covers the retry path", func(t *testing.T) {
		var backoff []time.Duration
		for _, s := range strings.Split(def["LR_RETRY_BACKOFF"], ",") {
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				t.Fatalf("LR_RETRY_BACKOFF default: %v", err)
			}
			backoff = append(backoff, d)
		}
		maxDeliver, err := strconv.Atoi(def["LR_MAX_DELIVER"])
		if err != nil || len(backoff) == 0 {
			t.Fatalf("LR_MAX_DELIVER %q, LR_RETRY_BACKOFF %v: cannot compute the retry path", def["LR_MAX_DELIVER"], backoff)
		}
		// The delays between the first and the last delivery (the last delay repeats), plus one ack wait
		// for a replica that died holding the event.
		path := f.consumer.AckWait
		for i := range maxDeliver - 1 {
			path += backoff[min(i, len(backoff)-1)]
		}
		if f.results.Duplicates < path {
			t.Errorf("got results duplicate_window %v, want at least the retry path %v", f.results.Duplicates, path)
		}
	})
}

// splitYAML splits a multi-document YAML file.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Resources  []string          `json:"resources"`  // Kustomization
	Data       map[string]string `json:"data"`       // ConfigMap
	StringData map[string]string `json:"stringData"` // Secret
	Spec       json.RawMessage   `json:"spec"`
}

// loadKubernetes parses every manifest of the base strictly (duplicate keys fail) and indexes them by kind.
func loadKubernetes(t *testing.T) map[string][]object {
	t.Helper()
	return loadManifests(t, "kubernetes/*.yaml")
}

// loadManifests parses every manifest matching pattern strictly and indexes them by kind.
func loadManifests(t *testing.T, pattern string) map[string][]object {
	t.Helper()
	paths, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no %s", pattern)
	}
	byKind := map[string][]object{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitYAML(b) {
			var generic map[string]any
			if err := yaml.UnmarshalStrict(doc, &generic); err != nil {
				t.Fatalf("%s document %d: %v", p, i, err)
			}
			var o object
			if err := yaml.Unmarshal(doc, &o); err != nil {
				t.Fatalf("%s document %d: %v", p, i, err)
			}
			if o.APIVersion == "" || o.Kind == "" {
				t.Errorf("%s document %d: got apiVersion %q kind %q, want both", p, i, o.APIVersion, o.Kind)
			}
			if o.Metadata.Name == "" && o.Kind != "Kustomization" && o.Kind != "Component" {
				t.Errorf("%s document %d: no metadata.name", p, i)
			}
			byKind[o.Kind] = append(byKind[o.Kind], o)
		}
	}
	return byKind
}

func only(t *testing.T, objs map[string][]object, kind string) object {
	t.Helper()
	if len(objs[kind]) != 1 {
		t.Fatalf("got %d %s manifests, want 1", len(objs[kind]), kind)
	}
	return objs[kind][0]
}

type probe struct {
	HTTPGet *struct {
		Path string          `json:"path"`
		Port json.RawMessage `json:"port"`
	} `json:"httpGet"`
}

type deploymentSpec struct {
	Replicas int `json:"replicas"`
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	Template struct {
		Metadata struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
		Spec struct {
			TerminationGracePeriodSeconds *int64 `json:"terminationGracePeriodSeconds"`
			SecurityContext               struct {
				RunAsNonRoot *bool  `json:"runAsNonRoot"`
				RunAsUser    *int64 `json:"runAsUser"`
			} `json:"securityContext"`
			Containers []struct {
				Name    string `json:"name"`
				EnvFrom []struct {
					ConfigMapRef *struct {
						Name string `json:"name"`
					} `json:"configMapRef"`
					SecretRef *struct {
						Name string `json:"name"`
					} `json:"secretRef"`
				} `json:"envFrom"`
				Env []struct {
					Name  string `json:"name"`
					Value string `json:"value"`
				} `json:"env"`
				Ports []struct {
					Name          string `json:"name"`
					ContainerPort int    `json:"containerPort"`
				} `json:"ports"`
				ReadinessProbe *probe `json:"readinessProbe"`
				LivenessProbe  *probe `json:"livenessProbe"`
				Resources      struct {
					Requests map[string]string `json:"requests"`
					Limits   map[string]string `json:"limits"`
				} `json:"resources"`
				SecurityContext struct {
					AllowPrivilegeEscalation *bool `json:"allowPrivilegeEscalation"`
					ReadOnlyRootFilesystem   *bool `json:"readOnlyRootFilesystem"`
					Capabilities             struct {
						Drop []string `json:"drop"`
					} `json:"capabilities"`
				} `json:"securityContext"`
				VolumeMounts []struct {
					Name      string `json:"name"`
					MountPath string `json:"mountPath"`
				} `json:"volumeMounts"`
			} `json:"containers"`
			Volumes []struct {
				Name   string `json:"name"`
				Secret *struct {
					SecretName string `json:"secretName"`
					Items      []struct {
						Key  string `json:"key"`
						Path string `json:"path"`
					} `json:"items"`
				} `json:"secret"`
			} `json:"volumes"`
		} `json:"spec"`
	} `json:"template"`
}

func TestKubernetesManifests(t *testing.T) {
	objs := loadKubernetes(t)
	cm := only(t, objs, "ConfigMap")
	// The Secret is not in the base (it references an existing one by name); its example has the keys.
	secret := only(t, loadManifests(t, "kubernetes/examples/secret.yaml"), "Secret")
	dep := only(t, objs, "Deployment")
	pdb := only(t, objs, "PodDisruptionBudget")
	kust := only(t, objs, "Kustomization")

	var d deploymentSpec
	if err := json.Unmarshal(dep.Spec, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Template.Spec.Containers) != 1 {
		t.Fatalf("got %d containers, want 1", len(d.Template.Spec.Containers))
	}
	c := d.Template.Spec.Containers[0]
	ps := d.Template.Spec

	t.Run("kustomization lists every manifest", func(t *testing.T) {
		paths, _ := filepath.Glob("kubernetes/*.yaml")
		var want []string
		for _, p := range paths {
			if b := filepath.Base(p); b != "kustomization.yaml" {
				want = append(want, b)
			}
		}
		got := slices.Sorted(slices.Values(kust.Resources))
		if !slices.Equal(got, want) {
			t.Errorf("got resources %v, want %v", got, want)
		}
	})

	t.Run("replicas share the budget", func(t *testing.T) {
		if d.Replicas != 3 {
			t.Errorf("got replicas %d, want 3", d.Replicas)
		}
		if got := cm.Data["LR_QUOTA_REPLICAS"]; got != strconv.Itoa(d.Replicas) {
			t.Errorf("got LR_QUOTA_REPLICAS %q, want the Deployment's %d replicas", got, d.Replicas)
		}
	})

	t.Run("selectors match the pods", func(t *testing.T) {
		var p struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			MaxUnavailable *int `json:"maxUnavailable"`
		}
		if err := json.Unmarshal(pdb.Spec, &p); err != nil {
			t.Fatal(err)
		}
		for name, sel := range map[string]map[string]string{"deployment": d.Selector.MatchLabels, "pdb": p.Selector.MatchLabels} {
			if len(sel) == 0 {
				t.Errorf("%s: empty selector", name)
			}
			for k, v := range sel {
				if d.Template.Metadata.Labels[k] != v {
					t.Errorf("%s selects %s=%s, which the pod template does not carry", name, k, v)
				}
			}
		}
		if p.MaxUnavailable == nil || *p.MaxUnavailable != 1 {
			t.Errorf("got PDB maxUnavailable %v, want 1", p.MaxUnavailable)
		}
	})

	t.Run("configuration comes from the ConfigMap", func(t *testing.T) {
		var refs []string
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil {
				refs = append(refs, ef.ConfigMapRef.Name)
			}
			if ef.SecretRef != nil {
				t.Errorf("got envFrom secretRef %q, want secrets mounted as files only", ef.SecretRef.Name)
			}
		}
		if !slices.Equal(refs, []string{cm.Metadata.Name}) {
			t.Errorf("got envFrom configMapRefs %v, want [%s]", refs, cm.Metadata.Name)
		}
	})

	t.Run("client secret is a mounted file", func(t *testing.T) {
		if _, ok := cm.Data["LR_MDE_CLIENT_SECRET"]; ok {
			t.Error("the ConfigMap sets LR_MDE_CLIENT_SECRET, want the secret only in a Secret")
		}
		var file string
		for _, e := range c.Env {
			if e.Name == "LR_MDE_CLIENT_SECRET" {
				t.Error("the Deployment sets LR_MDE_CLIENT_SECRET, want LR_MDE_CLIENT_SECRET_FILE")
			}
			if e.Name == "LR_MDE_CLIENT_SECRET_FILE" {
				file = e.Value
			}
		}
		if file == "" {
			t.Fatal("LR_MDE_CLIENT_SECRET_FILE is not set")
		}
		found := false
		for _, m := range c.VolumeMounts {
			for _, v := range ps.Volumes {
				if v.Name != m.Name || v.Secret == nil || v.Secret.SecretName != secret.Metadata.Name {
					continue
				}
				for _, it := range v.Secret.Items {
					if filepath.Join(m.MountPath, it.Path) == file {
						found = true
						if _, ok := secret.StringData[it.Key]; !ok {
							t.Errorf("the Secret has no key %q", it.Key)
						}
					}
				}
			}
		}
		if !found {
			t.Errorf("LR_MDE_CLIENT_SECRET_FILE=%s is not a key of Secret %s mounted into the container", file, secret.Metadata.Name)
		}
	})

	t.Run("every LR_ variable exists", func(t *testing.T) {
		known := configVars(t)
		names := make([]string, 0, len(cm.Data)+len(c.Env))
		for k := range cm.Data {
			names = append(names, k)
		}
		for _, e := range c.Env {
			names = append(names, e.Name)
		}
		for _, n := range names {
			if _, ok := known[n]; strings.HasPrefix(n, "LR_") && !ok {
				t.Errorf("%s is not a variable of internal/config", n)
			}
		}
	})

	t.Run("consumer settings match deploy/nats", func(t *testing.T) {
		f := loadNATS(t)
		if f.consumer.MaxDeliver != -1 || cm.Data["LR_MAX_DELIVER"] == "" {
			t.Errorf("consumer max_deliver %d, LR_MAX_DELIVER %q: want -1 on the server and the limit in lr-relay",
				f.consumer.MaxDeliver, cm.Data["LR_MAX_DELIVER"])
		}
		if d, err := time.ParseDuration(cm.Data["LR_ACK_WAIT"]); err != nil || d != f.consumer.AckWait {
			t.Errorf("got LR_ACK_WAIT %q, want %v", cm.Data["LR_ACK_WAIT"], f.consumer.AckWait)
		}
		for v, want := range map[string]string{
			"LR_SOURCE_STREAM": f.source.Name, "LR_SOURCE_SUBJECT": f.consumer.FilterSubject, "LR_CONSUMER": f.consumer.Durable,
			"LR_RESULT_STREAM": f.results.Name, "LR_DEADLETTER_STREAM": f.deadLetter.Name,
			"LR_RESULT_SUBJECT_PREFIX": strings.TrimSuffix(f.results.Subjects[0], ".>"),
			"LR_DEADLETTER_SUBJECT":    f.deadLetter.Subjects[0],
		} {
			if got := cm.Data[v]; got != want {
				t.Errorf("got %s %q, want %q", v, got, want)
			}
		}
	})

	t.Run("shutdown fits in the grace period", func(t *testing.T) {
		shutdown, err := time.ParseDuration(cm.Data["LR_SHUTDOWN_TIMEOUT"])
		if err != nil {
			t.Fatalf("LR_SHUTDOWN_TIMEOUT: %v", err)
		}
		if ps.TerminationGracePeriodSeconds == nil {
			t.Fatal("terminationGracePeriodSeconds not set")
		}
		grace := time.Duration(*ps.TerminationGracePeriodSeconds) * time.Second
		if grace < shutdown+5*time.Second {
			t.Errorf("got terminationGracePeriodSeconds %v, want at least LR_SHUTDOWN_TIMEOUT %v + 5s", grace, shutdown)
		}
	})

	t.Run("probes and metrics on LR_HTTP_ADDR", func(t *testing.T) {
		_, portStr, err := net.SplitHostPort(cm.Data["LR_HTTP_ADDR"])
		if err != nil {
			t.Fatalf("LR_HTTP_ADDR: %v", err)
		}
		port, _ := strconv.Atoi(portStr)
		ports := map[string]int{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if ports["metrics"] != port {
			t.Errorf("got metrics containerPort %d, want %d from LR_HTTP_ADDR", ports["metrics"], port)
		}
		if got := d.Template.Metadata.Annotations["prometheus.io/port"]; got != portStr {
			t.Errorf("got prometheus.io/port %q, want %q", got, portStr)
		}
		if d.Template.Metadata.Annotations["prometheus.io/scrape"] != "true" {
			t.Error("prometheus.io/scrape is not \"true\"")
		}
		for name, pr := range map[string]struct {
			p    *probe
			path string
		}{"readiness": {c.ReadinessProbe, "/-/ready"}, "liveness": {c.LivenessProbe, "/-/healthy"}} {
			if pr.p == nil || pr.p.HTTPGet == nil {
				t.Errorf("%s probe: not an httpGet probe", name)
				continue
			}
			if pr.p.HTTPGet.Path != pr.path {
				t.Errorf("%s probe: got path %q, want %q", name, pr.p.HTTPGet.Path, pr.path)
			}
			var named string
			var num int
			if json.Unmarshal(pr.p.HTTPGet.Port, &named) == nil {
				num = ports[named]
			} else if err := json.Unmarshal(pr.p.HTTPGet.Port, &num); err != nil {
				t.Errorf("%s probe: port %s: %v", name, pr.p.HTTPGet.Port, err)
			}
			if num != port {
				t.Errorf("%s probe: got port %s (%d), want %d", name, pr.p.HTTPGet.Port, num, port)
			}
		}
	})

	t.Run("hardened", func(t *testing.T) {
		sc := c.SecurityContext
		if ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
			t.Error("pod runAsNonRoot is not true")
		}
		if ps.SecurityContext.RunAsUser == nil || *ps.SecurityContext.RunAsUser != 65532 {
			t.Errorf("got runAsUser %v, want 65532 (the image's nonroot user)", ps.SecurityContext.RunAsUser)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Error("readOnlyRootFilesystem is not true")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Error("allowPrivilegeEscalation is not false")
		}
		if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
			t.Errorf("got capabilities.drop %v, want [ALL]", sc.Capabilities.Drop)
		}
		if got := c.Resources.Limits["memory"]; got != "128Mi" {
			t.Errorf("got memory limit %q, want 128Mi", got)
		}
		if c.Resources.Requests["memory"] == "" || c.Resources.Requests["cpu"] == "" {
			t.Errorf("got requests %v, want cpu and memory", c.Resources.Requests)
		}
	})
}
