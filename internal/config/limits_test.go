package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// validated loads the environment vars and returns Validate's error lines (none when valid).
func validated(t *testing.T, vars map[string]string) []string {
	t.Helper()
	setAll(t, vars)
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		return strings.Split(err.Error(), "\n")
	}
	return nil
}

// hasLine reports whether one of lines contains every one of parts.
func hasLine(lines []string, parts ...string) bool {
	return slices.ContainsFunc(lines, func(l string) bool {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				return false
			}
		}
		return true
	})
}

func TestValidateRateLimits(t *testing.T) {
	got := validated(t, map[string]string{"LR_RATE_LIMITS": "100/1m,1500/1x", "LR_ACTION_RATE_LIMITS": "many/1m"})
	for _, want := range []string{
		`LR_RATE_LIMITS="100/1m,1500/1x": item 2 "1500/1x": duration "1x": want a Go duration such as 1m, 1h, 500ms`,
		`LR_ACTION_RATE_LIMITS="many/1m": item 1 "many/1m": limit "many" is not an integer`,
	} {
		if !slices.Contains(got, want) {
			t.Errorf("Validate lacks %q:\n%s", want, strings.Join(got, "\n"))
		}
	}
	if got := validated(t, map[string]string{"LR_RATE_LIMITS": "50/1m,1000/1h", "LR_ACTION_RATE_LIMITS": "10/500ms"}); got != nil {
		t.Errorf("valid limits refused: %v", got)
	}
}

func TestWarningsAboveMicrosoftLimits(t *testing.T) {
	tests := []struct {
		links, actions string
		want           []string // substrings of the warnings, in order; none = no warning
	}{
		{links: "100/1m,1500/1h", actions: "100/1m,1500/1h"},
		{links: "50/1m,1000/1h", actions: "1/1s,1500/1h"},
		{links: "200/1m,1500/1h", want: []string{"LR_RATE_LIMITS=200/1m,1500/1h allows up to 200 calls in a minute (Microsoft allows 100)"}},
		{links: "100/1m", want: []string{"LR_RATE_LIMITS=100/1m allows up to 6000 calls in an hour (Microsoft allows 1500)"}},
		// The simulator's scaled windows, as the end-to-end tests use them: 60 times the real rate.
		{actions: "100/1s,1500/15s", want: []string{"LR_ACTION_RATE_LIMITS=100/1s,1500/15s allows up to 6000 calls in a minute (Microsoft allows 100) and up to 360000 calls in an hour"}},
		{links: "2/1s", want: []string{"up to 120 calls in a minute", "expect 429s"}},
		{links: "not/parsed"},
	}
	for _, tt := range tests {
		c := Config{RateLimits: tt.links, ActionRateLimits: tt.actions}
		if c.RateLimits == "" {
			c.RateLimits = "100/1m,1500/1h"
		}
		if c.ActionRateLimits == "" {
			c.ActionRateLimits = "100/1m,1500/1h"
		}
		got := c.Warnings()
		if len(tt.want) == 0 {
			if len(got) != 0 {
				t.Errorf("%s / %s: got warnings %q, want none", tt.links, tt.actions, got)
			}
			continue
		}
		if len(got) != 1 {
			t.Errorf("%s / %s: got warnings %q, want one", tt.links, tt.actions, got)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(got[0], w) {
				t.Errorf("%s / %s: warning %q lacks %q", tt.links, tt.actions, got[0], w)
			}
		}
	}
}

func TestValidateCloud(t *testing.T) {
	got := validated(t, map[string]string{"LR_MDE_CLOUD": "gcc-hihg"})
	if !hasLine(got, `LR_MDE_CLOUD="gcc-hihg": must be one of commercial,`, "did you mean gcc-high?") {
		t.Errorf("Validate = %q, want LR_MDE_CLOUD named with a suggestion", got)
	}
	if got := validated(t, map[string]string{"LR_MDE_CLOUD": "GCC-High"}); got != nil {
		t.Errorf("GCC-High refused: %v", got)
	}
}

func TestRequireTenant(t *testing.T) {
	if err := (Config{}).RequireTenant(); err == nil || !strings.Contains(err.Error(), "LR_TENANTS_FILE") {
		t.Errorf("no tenant: %v, want an error naming the variables", err)
	}
	for _, c := range []Config{{MDEClientID: "c"}, {TenantsFile: "t.yaml"}} {
		if err := c.RequireTenant(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

func TestValidateTenantsFile(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "fabrikam-secret")
	writeFile(t, secret, "s3cret")
	good := `tenants:
  - name: contoso
    tenantId: 2b3c4d5e-0000-4000-8000-000000000002
    clientId: c1
    clientSecret: "s3cret"
    rateLimits: "50/1m,1000/1h"
  - name: fabrikam
    tenantId: 3c4d5e6f-0000-4000-8000-000000000003
    clientId: c2
    clientSecretFile: ` + secret + `
    cloud: gcc-high
`
	bad := `tenants:
  - name: contoso
    tenantId: 2b3c4d5e-0000-4000-8000-000000000002
    clientSecret: "s3cret"
    rateLimits: "50/1x"
  - name: fabrikam
    tenantId: 3c4d5e6f-0000-4000-8000-000000000003
    clientId: c2
    clientSecretFile: ` + filepath.Join(dir, "absent") + `
    cloud: gcc-hihg
  - name: default
    tenantId: 4d5e6f70-0000-4000-8000-000000000004
    clientId: c3
    clientSecret: "s3cret"
    actionRateLimits: "500/1m"
`
	files := map[string]string{"good.yaml": good, "bad.yaml": bad, "broken.yaml": "tenants: [", "empty.yaml": "tenants: []\n",
		"typo.yaml": "tenants:\n  - name: a\n    clientSecert: x\n"}
	for name, body := range files {
		writeFile(t, filepath.Join(dir, name), body)
	}
	path := func(name string) string { return filepath.Join(dir, name) }

	t.Run("good", func(t *testing.T) {
		if got := validated(t, map[string]string{"LR_TENANTS_FILE": path("good.yaml")}); got != nil {
			t.Errorf("Validate = %q", got)
		}
	})
	t.Run("every problem names the file, the tenant and the field", func(t *testing.T) {
		got := validated(t, map[string]string{"LR_TENANTS_FILE": path("bad.yaml"),
			"LR_MDE_TENANT_ID": "4D5E6F70-0000-4000-8000-000000000004", "LR_MDE_CLIENT_ID": "c", "LR_MDE_CLIENT_SECRET": "s"})
		where := "LR_TENANTS_FILE " + path("bad.yaml") + ": "
		for _, want := range [][]string{
			{where, `"contoso"`, "clientId is required"},
			{where, `"contoso"`, `rateLimits "50/1x"`, `duration "1x"`},
			{where, `"fabrikam"`, "clientSecretFile", "no such file"},
			{where, `"fabrikam"`, `unknown cloud "gcc-hihg"`},
			{where, `"default"`, "name is taken by the tenant of the LR_MDE_* variables"},
			{where, `"default"`, "tenantId is LR_MDE_TENANT_ID's"},
		} {
			if !hasLine(got, want...) {
				t.Errorf("no line with %q in:\n%s", want, strings.Join(got, "\n"))
			}
		}
		for _, l := range got {
			if strings.Contains(l, "s3cret") {
				t.Errorf("%q repeats a secret", l)
			}
		}
		setAll(t, map[string]string{"LR_TENANTS_FILE": path("bad.yaml")})
		c, err := Load()
		if err != nil {
			t.Fatal(err)
		}
		if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0], `tenant "default": actionRateLimits 500/1m allows up to 500 calls in a minute`) {
			t.Errorf("Warnings = %q, want one for the default tenant's actionRateLimits", w)
		}
	})
	for _, tt := range []struct{ file, want string }{
		{"absent.yaml", "LR_TENANTS_FILE: cannot read " + path("absent.yaml") + ": no such file or directory"},
		{"broken.yaml", "LR_TENANTS_FILE " + path("broken.yaml") + ": "},
		{"empty.yaml", "LR_TENANTS_FILE " + path("empty.yaml") + ": lists no tenants"},
		{"typo.yaml", `unknown field "clientSecert"`},
	} {
		t.Run(tt.file, func(t *testing.T) {
			got := validated(t, map[string]string{"LR_TENANTS_FILE": path(tt.file)})
			if !hasLine(got, tt.want) {
				t.Errorf("Validate = %q, want a line with %q", got, tt.want)
			}
		})
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
