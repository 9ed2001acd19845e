package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/lr-relay/lr-relay/internal/config"
)

// notLRVariables are the environment variables the chart may set that are not lr-relay's: the Go runtime's.
var notLRVariables = []string{"GOMEMLIMIT"}

// usageVariables returns the variables listed by config.PrintUsage, what `lr-relay --help` prints.
func usageVariables(t *testing.T) map[string]bool {
	t.Helper()
	var b bytes.Buffer
	if err := config.PrintUsage(&b); err != nil {
		t.Fatal(err)
	}
	vars := map[string]bool{}
	for _, line := range strings.Split(b.String(), "\n")[1:] { // the first line is the header
		if f := strings.Fields(line); len(f) > 0 {
			vars[f[0]] = true
		}
	}
	if len(vars) < 20 || !vars["LR_NATS_URL"] {
		t.Fatalf("config.PrintUsage listed %d variables: %v", len(vars), vars)
	}
	return vars
}

// k8sObject is the part of a manifest the tests read; Spec and Data stay raw.
type k8sObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec json.RawMessage   `json:"spec"`
	Data map[string]string `json:"data"`
}

// helmTemplate renders the chart with extra `helm template` arguments and returns its objects by kind.
func helmTemplate(t *testing.T, args ...string) map[string][]k8sObject {
	t.Helper()
	helm, err := exec.LookPath("helm")
	if err != nil {
		t.Skip("helm is not on PATH, so the chart is not rendered here; CI installs it (go install helm.sh/helm/v3/cmd/helm@v3.21.4)")
	}
	cmd := exec.Command(helm, append([]string{"template", "lr-relay", "helm/lr-relay", "--namespace", "siem"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, stderr.String())
	}
	objs := map[string][]k8sObject{}
	for _, doc := range strings.Split(string(out), "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(doc), "---")) == "" {
			continue
		}
		var o k8sObject
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatalf("rendered manifest does not parse: %v\n%s", err, doc)
		}
		if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
			// Comments only (a template whose condition is false).
			if strings.Contains(doc, "kind:") {
				t.Fatalf("rendered manifest without apiVersion, kind or name:\n%s", doc)
			}
			continue
		}
		objs[o.Kind] = append(objs[o.Kind], o)
	}
	return objs
}

// readManifest reads one kustomize manifest of deploy/kubernetes.
func readManifest(t *testing.T, path string) k8sObject {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var o k8sObject
	if err := yaml.Unmarshal(b, &o); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return o
}

// chartDeployment is the part of a Deployment the chart test compares with deploy/kubernetes.
type chartDeployment struct {
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
			TerminationGracePeriodSeconds int             `json:"terminationGracePeriodSeconds"`
			AutomountServiceAccountToken  bool            `json:"automountServiceAccountToken"`
			SecurityContext               json.RawMessage `json:"securityContext"`
			Containers                    []struct {
				Args    []string `json:"args"`
				EnvFrom []struct {
					ConfigMapRef *struct {
						Name string `json:"name"`
					} `json:"configMapRef"`
					SecretRef json.RawMessage `json:"secretRef"`
				} `json:"envFrom"`
				Env []struct {
					Name      string          `json:"name"`
					Value     string          `json:"value"`
					ValueFrom json.RawMessage `json:"valueFrom"`
				} `json:"env"`
				Ports           json.RawMessage `json:"ports"`
				ReadinessProbe  json.RawMessage `json:"readinessProbe"`
				LivenessProbe   json.RawMessage `json:"livenessProbe"`
				Resources       json.RawMessage `json:"resources"`
				SecurityContext json.RawMessage `json:"securityContext"`
				VolumeMounts    []struct {
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

func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// TestHelmChart renders deploy/helm/lr-relay (when helm is on PATH) and checks that the manifests parse, that
// every environment variable of the Deployment (its env and its ConfigMap) is one `lr-relay --help` lists, and
// that the default values render what deploy/kubernetes holds.
func TestHelmChart(t *testing.T) {
	known := usageVariables(t)
	objs := helmTemplate(t)

	for _, kind := range []string{"Deployment", "ConfigMap", "PodDisruptionBudget", "Service"} {
		if len(objs[kind]) != 1 {
			t.Fatalf("rendered %d %s, want 1", len(objs[kind]), kind)
		}
	}
	if len(objs["ServiceMonitor"]) != 0 || len(objs["Secret"]) != 0 {
		t.Errorf("rendered %d ServiceMonitor and %d Secret by default, want none (the chart only mounts existing Secrets)",
			len(objs["ServiceMonitor"]), len(objs["Secret"]))
	}
	var d chartDeployment
	if err := json.Unmarshal(objs["Deployment"][0].Spec, &d); err != nil {
		t.Fatal(err)
	}
	cm := objs["ConfigMap"][0]
	c := d.Template.Spec.Containers[0]

	t.Run("every variable is lr-relay's", func(t *testing.T) {
		names := []string{}
		for k := range cm.Data {
			names = append(names, k)
		}
		for _, e := range c.Env {
			names = append(names, e.Name)
		}
		for _, n := range names {
			if !known[n] && !slices.Contains(notLRVariables, n) {
				t.Errorf("the chart sets %s, which `lr-relay --help` does not list", n)
			}
		}
		if len(c.EnvFrom) != 1 || c.EnvFrom[0].ConfigMapRef == nil || c.EnvFrom[0].ConfigMapRef.Name != cm.Metadata.Name {
			t.Errorf("envFrom %+v, want only the chart's ConfigMap %s", c.EnvFrom, cm.Metadata.Name)
		}
		if cm.Data["LR_MDE_CLIENT_SECRET"] != "" {
			t.Error("the ConfigMap holds LR_MDE_CLIENT_SECRET")
		}
	})

	t.Run("equivalent to deploy/kubernetes", func(t *testing.T) {
		kd := readManifest(t, "kubernetes/deployment.yaml")
		var k chartDeployment
		if err := json.Unmarshal(kd.Spec, &k); err != nil {
			t.Fatal(err)
		}
		kc := k.Template.Spec.Containers[0]
		if d.Replicas != k.Replicas || d.Template.Spec.TerminationGracePeriodSeconds != k.Template.Spec.TerminationGracePeriodSeconds ||
			d.Template.Spec.AutomountServiceAccountToken != k.Template.Spec.AutomountServiceAccountToken {
			t.Errorf("replicas %d grace %d automount %v, kustomize has %d %d %v", d.Replicas, d.Template.Spec.TerminationGracePeriodSeconds,
				d.Template.Spec.AutomountServiceAccountToken, k.Replicas, k.Template.Spec.TerminationGracePeriodSeconds, k.Template.Spec.AutomountServiceAccountToken)
		}
		for name, pair := range map[string][2]json.RawMessage{
			"pod securityContext":       {d.Template.Spec.SecurityContext, k.Template.Spec.SecurityContext},
			"container securityContext": {c.SecurityContext, kc.SecurityContext},
			"resources":                 {c.Resources, kc.Resources},
			"readinessProbe":            {c.ReadinessProbe, kc.ReadinessProbe},
			"livenessProbe":             {c.LivenessProbe, kc.LivenessProbe},
			"ports":                     {c.Ports, kc.Ports},
		} {
			if !sameJSON(pair[0], pair[1]) {
				t.Errorf("%s: chart %s, kustomize %s", name, pair[0], pair[1])
			}
		}
		if !slices.Equal(c.Args, kc.Args) {
			t.Errorf("args %v, kustomize %v", c.Args, kc.Args)
		}
		env := func(list []struct {
			Name      string          `json:"name"`
			Value     string          `json:"value"`
			ValueFrom json.RawMessage `json:"valueFrom"`
		}) map[string]string {
			m := map[string]string{}
			for _, e := range list {
				m[e.Name] = e.Value
			}
			return m
		}
		if got, want := env(c.Env), env(kc.Env); !reflect.DeepEqual(got, want) {
			t.Errorf("env %v, kustomize %v", got, want)
		}
		if kcm := readManifest(t, "kubernetes/configmap.yaml"); !reflect.DeepEqual(cm.Data, kcm.Data) {
			t.Errorf("ConfigMap data differs from kubernetes/configmap.yaml:\nchart     %v\nkustomize %v", cm.Data, kcm.Data)
		}
		for k, v := range d.Template.Metadata.Annotations {
			if strings.HasPrefix(k, "prometheus.io/") && k8sAnnotation(t, kd, k) != v {
				t.Errorf("annotation %s %q, kustomize %q", k, v, k8sAnnotation(t, kd, k))
			}
		}
		var pdb, kpdb struct {
			MaxUnavailable int `json:"maxUnavailable"`
			Selector       struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
		}
		if err := json.Unmarshal(objs["PodDisruptionBudget"][0].Spec, &pdb); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(readManifest(t, "kubernetes/poddisruptionbudget.yaml").Spec, &kpdb); err != nil {
			t.Fatal(err)
		}
		if pdb.MaxUnavailable != kpdb.MaxUnavailable {
			t.Errorf("PDB maxUnavailable %d, kustomize %d", pdb.MaxUnavailable, kpdb.MaxUnavailable)
		}
		for name, sel := range map[string]map[string]string{"deployment": d.Selector.MatchLabels, "pdb": pdb.Selector.MatchLabels} {
			if len(sel) == 0 {
				t.Errorf("%s: empty selector", name)
			}
			for k, v := range sel {
				if d.Template.Metadata.Labels[k] != v {
					t.Errorf("%s selects %s=%s, which the pod template does not carry", name, k, v)
				}
			}
		}
	})

	t.Run("existing secrets by name", func(t *testing.T) {
		objs := helmTemplate(t, "--set", "natsCredentials.secretName=nats-creds", "--set", "tenantsFile.secretName=tenants",
			"--set", "extraSecretMounts[0].name=contoso-cert", "--set", "extraSecretMounts[0].secretName=contoso-mde-cert",
			"--set", "extraSecretMounts[0].mountPath=/etc/lr-relay/tenants-certs/contoso", "--set", "serviceMonitor.enabled=true")
		if len(objs["ServiceMonitor"]) != 1 {
			t.Errorf("rendered %d ServiceMonitor with serviceMonitor.enabled=true, want 1", len(objs["ServiceMonitor"]))
		}
		if len(objs["Secret"]) != 0 {
			t.Errorf("rendered %d Secrets, want none", len(objs["Secret"]))
		}
		var d chartDeployment
		if err := json.Unmarshal(objs["Deployment"][0].Spec, &d); err != nil {
			t.Fatal(err)
		}
		c := d.Template.Spec.Containers[0]
		mounts := map[string]string{}
		for _, m := range c.VolumeMounts {
			mounts[m.Name] = m.MountPath
		}
		secrets := map[string]string{}
		for _, v := range d.Template.Spec.Volumes {
			if v.Secret != nil {
				secrets[v.Name] = v.Secret.SecretName
			}
		}
		for _, want := range []struct{ env, volume, secret, file string }{
			{"LR_MDE_CLIENT_SECRET_FILE", "mde-secret", "lr-relay-mde", "/etc/lr-relay/mde/client-secret"},
			{"LR_NATS_CREDS_FILE", "nats-creds", "nats-creds", "/etc/lr-relay/nats/lr-relay.creds"},
			{"LR_TENANTS_FILE", "tenants", "tenants", "/etc/lr-relay/tenants/tenants.yaml"},
		} {
			var got string
			for _, e := range c.Env {
				if e.Name == want.env {
					got = e.Value
				}
				if !known[e.Name] && !slices.Contains(notLRVariables, e.Name) {
					t.Errorf("the chart sets %s, which `lr-relay --help` does not list", e.Name)
				}
			}
			if got != want.file || secrets[want.volume] != want.secret || !strings.HasPrefix(want.file, mounts[want.volume]+"/") {
				t.Errorf("%s=%q from volume %s (Secret %q, mounted at %q), want %s from Secret %s",
					want.env, got, want.volume, secrets[want.volume], mounts[want.volume], want.file, want.secret)
			}
		}
		if secrets["contoso-cert"] != "contoso-mde-cert" || mounts["contoso-cert"] != "/etc/lr-relay/tenants-certs/contoso" {
			t.Errorf("extra secret mount: volumes %v, mounts %v", secrets, mounts)
		}
	})
}

func k8sAnnotation(t *testing.T, o k8sObject, key string) string {
	t.Helper()
	var d chartDeployment
	if err := json.Unmarshal(o.Spec, &d); err != nil {
		t.Fatal(err)
	}
	return d.Template.Metadata.Annotations[key]
}
