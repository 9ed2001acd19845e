package deploy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/lr-relay/lr-relay/internal/app"
)

type networkPolicyPort struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
}

type networkPolicyPeer struct {
	PodSelector *struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"podSelector"`
	NamespaceSelector *struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"namespaceSelector"`
	IPBlock *struct {
		CIDR   string   `json:"cidr"`
		Except []string `json:"except"`
	} `json:"ipBlock"`
}

type networkPolicyRule struct {
	Ports []networkPolicyPort `json:"ports"`
	From  []networkPolicyPeer `json:"from"`
	To    []networkPolicyPeer `json:"to"`
}

type networkPolicySpec struct {
	PodSelector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"podSelector"`
	PolicyTypes []string            `json:"policyTypes"`
	Ingress     []networkPolicyRule `json:"ingress"`
	Egress      []networkPolicyRule `json:"egress"`
}

func (p networkPolicyPort) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

func TestKustomizationLeavesOutTheSecret(t *testing.T) {
	objs := loadKubernetes(t)
	if n := len(objs["Secret"]); n != 0 {
		t.Errorf("got %d Secrets in deploy/kubernetes, want none: the base references an existing Secret by name", n)
	}
	for _, r := range only(t, objs, "Kustomization").Resources {
		if strings.Contains(r, "secret") || strings.Contains(r, "examples") {
			t.Errorf("the kustomization lists %q, want no Secret and no example", r)
		}
	}
	var d deploymentSpec
	if err := json.Unmarshal(only(t, objs, "Deployment").Spec, &d); err != nil {
		t.Fatal(err)
	}
	secret := only(t, loadManifests(t, "kubernetes/examples/secret.yaml"), "Secret")
	var names []string
	for _, v := range d.Template.Spec.Volumes {
		if v.Secret != nil {
			names = append(names, v.Secret.SecretName)
		}
	}
	if !slices.Equal(names, []string{secret.Metadata.Name}) {
		t.Errorf("the Deployment mounts Secrets %v, want the example's name %q", names, secret.Metadata.Name)
	}
}

func TestNetworkPolicy(t *testing.T) {
	objs := loadKubernetes(t)
	var np networkPolicySpec
	if err := json.Unmarshal(only(t, objs, "NetworkPolicy").Spec, &np); err != nil {
		t.Fatal(err)
	}
	var d deploymentSpec
	if err := json.Unmarshal(only(t, objs, "Deployment").Spec, &d); err != nil {
		t.Fatal(err)
	}
	cm := only(t, objs, "ConfigMap")

	if len(np.PodSelector.MatchLabels) == 0 {
		t.Error("the NetworkPolicy selects every pod of the namespace, want lr-relay's")
	}
	for k, v := range np.PodSelector.MatchLabels {
		if d.Template.Metadata.Labels[k] != v {
			t.Errorf("the NetworkPolicy selects %s=%s, which the pod template does not carry", k, v)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(np.PolicyTypes)), []string{"Egress", "Ingress"}) {
		t.Errorf("got policyTypes %v, want Ingress and Egress", np.PolicyTypes)
	}

	t.Run("ingress: the metrics port only", func(t *testing.T) {
		_, portStr, err := net.SplitHostPort(cm.Data["LR_HTTP_ADDR"])
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := strconv.Atoi(portStr)
		var ports []string
		for _, r := range np.Ingress {
			if len(r.Ports) == 0 {
				t.Error("an ingress rule without ports admits every port")
			}
			for _, p := range r.Ports {
				ports = append(ports, p.String())
			}
		}
		if want := []string{fmt.Sprintf("%d/TCP", metrics)}; !slices.Equal(ports, want) {
			t.Errorf("got ingress ports %v, want %v (LR_HTTP_ADDR)", ports, want)
		}
	})

	t.Run("egress: NATS, DNS and HTTPS to public addresses", func(t *testing.T) {
		u, err := url.Parse(strings.Split(cm.Data["LR_NATS_URL"], ",")[0])
		if err != nil {
			t.Fatal(err)
		}
		var ports []string
		for _, r := range np.Egress {
			if len(r.Ports) == 0 || len(r.To) == 0 {
				t.Errorf("egress rule %+v allows every port or every destination", r)
			}
			for _, p := range r.Ports {
				ports = append(ports, p.String())
				if p.Port != 443 {
					continue
				}
				// HTTPS goes to public addresses only: not the cluster, the node or the metadata service.
				for _, peer := range r.To {
					if peer.IPBlock == nil {
						t.Errorf("443 is open to %+v, want ipBlocks", peer)
						continue
					}
					if _, all, _ := net.ParseCIDR(peer.IPBlock.CIDR); all != nil && all.IP.To4() != nil {
						for _, private := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} {
							if !slices.Contains(peer.IPBlock.Except, private) {
								t.Errorf("443 to %s does not except %s", peer.IPBlock.CIDR, private)
							}
						}
					}
				}
			}
		}
		slices.Sort(ports)
		want := []string{"443/TCP", u.Port() + "/TCP", "53/TCP", "53/UDP"}
		slices.Sort(want)
		if !slices.Equal(ports, want) {
			t.Errorf("got egress ports %v, want %v (HTTPS, NATS from LR_NATS_URL, DNS)", ports, want)
		}
	})
}

func TestWorkloadIdentityExample(t *testing.T) {
	objs := loadManifests(t, "kubernetes/examples/workload-identity/*.yaml")
	comp := only(t, objs, "Component")
	if !strings.HasPrefix(comp.APIVersion, "kustomize.config.k8s.io/") {
		t.Errorf("got apiVersion %q for the Component", comp.APIVersion)
	}
	var files []string
	for _, p := range []string{"serviceaccount.yaml", "configmap-patch.yaml", "deployment-patch.yaml", "kustomization.yaml"} {
		if _, err := os.Stat(filepath.Join("kubernetes/examples/workload-identity", p)); err != nil {
			t.Error(err)
		}
		files = append(files, p)
	}
	var k struct {
		Resources []string `json:"resources"`
		Patches   []struct {
			Path string `json:"path"`
		} `json:"patches"`
	}
	b, err := os.ReadFile("kubernetes/examples/workload-identity/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(stripTypeMeta(b), &k); err != nil {
		t.Fatal(err)
	}
	listed := slices.Clone(k.Resources)
	for _, p := range k.Patches {
		listed = append(listed, p.Path)
	}
	listed = append(listed, "kustomization.yaml")
	if !slices.Equal(slices.Sorted(slices.Values(listed)), slices.Sorted(slices.Values(files))) {
		t.Errorf("the Component lists %v, want %v", listed, files)
	}

	sa := only(t, objs, "ServiceAccount")
	var saMeta struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	b, _ = os.ReadFile("kubernetes/examples/workload-identity/serviceaccount.yaml")
	if err := yaml.Unmarshal(b, &saMeta); err != nil {
		t.Fatal(err)
	}
	if saMeta.Metadata.Annotations["azure.workload.identity/client-id"] == "" {
		t.Error("the ServiceAccount lacks the azure.workload.identity/client-id annotation")
	}

	var d deploymentSpec
	if err := json.Unmarshal(only(t, objs, "Deployment").Spec, &d); err != nil {
		t.Fatal(err)
	}
	var podSpec struct {
		Template struct {
			Spec struct {
				ServiceAccountName string `json:"serviceAccountName"`
			} `json:"spec"`
		} `json:"template"`
	}
	if err := json.Unmarshal(only(t, objs, "Deployment").Spec, &podSpec); err != nil {
		t.Fatal(err)
	}
	if got := d.Template.Metadata.Labels["azure.workload.identity/use"]; got != "true" {
		t.Errorf("got pod label azure.workload.identity/use %q, want \"true\" (the webhook injects the token only then)", got)
	}
	if got := podSpec.Template.Spec.ServiceAccountName; got != sa.Metadata.Name {
		t.Errorf("got serviceAccountName %q, want the annotated %q", got, sa.Metadata.Name)
	}
	cm := only(t, objs, "ConfigMap")
	if got := cm.Data["LR_MDE_AUTH"]; got != "workload-identity" {
		t.Errorf("got LR_MDE_AUTH %q, want workload-identity", got)
	}
	// LR_MDE_AUTH is added by the Entra authentication work; every other variable must be internal/config's.
	known := configVars(t)
	known["LR_MDE_AUTH"] = ""
	for name := range cm.Data {
		if _, ok := known[name]; !ok {
			t.Errorf("%s is not a variable of internal/config", name)
		}
	}
	b, _ = os.ReadFile("kubernetes/examples/workload-identity/deployment-patch.yaml")
	if !regexp.MustCompile(`(?m)- name: LR_MDE_CLIENT_SECRET_FILE\n\s+\$patch: delete`).Match(b) {
		t.Error("the Deployment patch does not delete LR_MDE_CLIENT_SECRET_FILE")
	}
}

// stripTypeMeta drops apiVersion and kind so that a strict decode checks only the fields of interest.
func stripTypeMeta(b []byte) []byte {
	return regexp.MustCompile(`(?m)^(apiVersion|kind):.*$`).ReplaceAll(b, nil)
}

// TestKustomizeRenders renders the base and an overlay with the workload identity Component through
// kubectl's built-in kustomize, when kubectl is installed (CI has only Go: there it is skipped, and the
// tests above check the files).
func TestKustomizeRenders(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	render := func(dir string) map[string][]map[string]any {
		t.Helper()
		out, err := exec.Command(kubectl, "kustomize", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
		}
		byKind := map[string][]map[string]any{}
		for _, doc := range splitYAML(out) {
			var m map[string]any
			if err := yaml.Unmarshal(doc, &m); err != nil {
				t.Fatal(err)
			}
			kind, _ := m["kind"].(string)
			byKind[kind] = append(byKind[kind], m)
		}
		return byKind
	}
	base := render("kubernetes")
	var kinds []string
	for k := range base {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	if want := []string{"ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget"}; !slices.Equal(kinds, want) {
		t.Errorf("the base renders %v, want %v", kinds, want)
	}

	// An overlay cannot sit inside the base it uses, so it goes in a temporary directory, with relative paths.
	overlay := t.TempDir()
	abs, err := filepath.Abs("kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(overlay, abs)
	if err != nil {
		t.Fatal(err)
	}
	k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - " + rel +
		"\ncomponents:\n  - " + filepath.Join(rel, "examples/workload-identity") + "\n"
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(k), 0o600); err != nil {
		t.Fatal(err)
	}
	wi := render(overlay)
	if len(wi["ServiceAccount"]) != 1 || len(wi["Secret"]) != 0 {
		t.Errorf("the overlay renders %d ServiceAccounts and %d Secrets, want 1 and 0", len(wi["ServiceAccount"]), len(wi["Secret"]))
	}
	b, err := json.Marshal(wi["Deployment"])
	if err != nil {
		t.Fatal(err)
	}
	var deps []struct {
		Spec deploymentSpec `json:"spec"`
	}
	if err := json.Unmarshal(b, &deps); err != nil || len(deps) != 1 {
		t.Fatalf("%d Deployments, %v", len(deps), err)
	}
	d := deps[0].Spec
	c := d.Template.Spec.Containers[0]
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "LR_MDE_CLIENT_SECRET") {
			t.Errorf("the rendered Deployment still sets %s", e.Name)
		}
	}
	for _, v := range d.Template.Spec.Volumes {
		if v.Secret != nil {
			t.Errorf("the rendered Deployment still mounts Secret %s", v.Secret.SecretName)
		}
	}
	for _, m := range c.VolumeMounts {
		if m.Name == "mde-secret" {
			t.Errorf("the rendered Deployment still mounts %s at %s", m.Name, m.MountPath)
		}
	}
	if d.Template.Metadata.Labels["azure.workload.identity/use"] != "true" {
		t.Error("the rendered pod lacks azure.workload.identity/use")
	}
	data, _ := wi["ConfigMap"][0]["data"].(map[string]any)
	if data["LR_MDE_AUTH"] != "workload-identity" || data["LR_NATS_URL"] == nil {
		t.Errorf("the rendered ConfigMap has LR_MDE_AUTH %v and LR_NATS_URL %v, want the patch merged into the base", data["LR_MDE_AUTH"], data["LR_NATS_URL"])
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	t.Run("base images pinned by digest", func(t *testing.T) {
		froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
		if len(froms) != 2 {
			t.Fatalf("got %d FROM lines, want 2 (build and runtime)", len(froms))
		}
		pinned := regexp.MustCompile(`^[a-z0-9./-]+:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}$`)
		for _, f := range froms {
			if !pinned.MatchString(f[1]) {
				t.Errorf("FROM %s: want name:tag@sha256:<64 hex digits>", f[1])
			}
		}
		goMod, err := os.ReadFile("../go.mod")
		if err != nil {
			t.Fatal(err)
		}
		goLine := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(goMod)
		if goLine == nil || !strings.HasPrefix(froms[0][1], "golang:"+string(goLine[1])+"@") {
			t.Errorf("build image %s, want golang:<go.mod's go version>@sha256:...", froms[0][1])
		}
		if !strings.HasPrefix(froms[1][1], "gcr.io/distroless/static-debian12:nonroot@") {
			t.Errorf("runtime image %s, want distroless static-debian12:nonroot", froms[1][1])
		}
	})
	t.Run("version through -ldflags -X into app.Version", func(t *testing.T) {
		want := reflect.TypeFor[app.Options]().PkgPath() + ".Version=${VERSION}"
		if !strings.Contains(df, "-X "+want) {
			t.Errorf("the Dockerfile does not build with -ldflags \"-X %s\"", want)
		}
		if !regexp.MustCompile(`(?m)^ARG VERSION=`).MatchString(df) {
			t.Error("no ARG VERSION")
		}
	})
	t.Run("OCI labels", func(t *testing.T) {
		for _, l := range []string{"title", "description", "source", "version=\"${VERSION}\"", "revision=\"${REVISION}\"",
			"created=\"${CREATED}\"", "base.name", "base.digest"} {
			if !strings.Contains(df, "org.opencontainers.image."+l) {
				t.Errorf("no label org.opencontainers.image.%s", l)
			}
		}
	})
}

// TestDockerignore checks that the build context keeps what the build needs and leaves out the rest. The
// matching is Docker's for these simple patterns: a path is out when it or one of its parent directories
// matches a pattern, and "**/" matches any depth.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			if strings.HasPrefix(l, "!") {
				t.Fatalf("pattern %q: exceptions are not understood by this test", l)
			}
			patterns = append(patterns, strings.TrimPrefix(l, "/"))
		}
	}
	ignored := func(path string) bool {
		parts := strings.Split(path, "/")
		for _, p := range patterns {
			for i := 1; i <= len(parts); i++ {
				prefix := strings.Join(parts[:i], "/")
				if ok, _ := filepath.Match(p, prefix); ok {
					return true
				}
				if rest, found := strings.CutPrefix(p, "**/"); found {
					if ok, _ := filepath.Match(rest, parts[i-1]); ok {
						return true
					}
				}
			}
		}
		return false
	}
	for _, keep := range []string{"go.mod", "go.sum", "cmd/lr-relay/main.go", "internal/app/app.go",
		"schemas/result.schema.json", "schemas/schemas.go"} {
		if ignored(keep) {
			t.Errorf("%s is ignored, but the build needs it", keep)
		}
	}
	for _, drop := range []string{".git/HEAD", "deploy/kubernetes/deployment.yaml", "README.md", "internal/app/app_test.go",
		".ci/run", "lr-relay", "Dockerfile"} {
		if !ignored(drop) {
			t.Errorf("%s is in the build context, want it left out", drop)
		}
	}
}
