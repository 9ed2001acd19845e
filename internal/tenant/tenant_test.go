package tenant

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// write puts content into a file of the test's temporary directory and returns its path.
func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	secretFile := write(t, "secret", "  s3cret-from-file\n")
	want := []Spec{
		{Name: "contoso", TenantID: "11111111-1111-4111-8111-111111111111", ClientID: "app-a", ClientSecret: "inline-secret",
			Cloud: "eu", RateLimits: "100/1m,1500/1h"},
		{Name: "fabrikam", TenantID: "22222222-2222-4222-8222-222222222222", ClientID: "app-b",
			ClientSecret: "s3cret-from-file", ClientSecretFile: secretFile, APIURL: "http://127.0.0.1:1",
			TokenURL: "http://127.0.0.1:1/{tenant}/token", ActionRateLimits: "10/1s"},
	}
	tests := []struct {
		name, file, content string
	}{
		{"yaml", "tenants.yaml", `
tenants:
  - name: contoso
    tenantId: 11111111-1111-4111-8111-111111111111
    clientId: app-a
    clientSecret: inline-secret
    cloud: eu
    rateLimits: "100/1m,1500/1h"
  - name: fabrikam
    tenantId: 22222222-2222-4222-8222-222222222222
    clientId: app-b
    clientSecretFile: ` + secretFile + `
    apiUrl: http://127.0.0.1:1
    tokenUrl: "http://127.0.0.1:1/{tenant}/token"
    actionRateLimits: 10/1s
`},
		{"json", "tenants.json", `{"tenants": [
  {"name": "contoso", "tenantId": "11111111-1111-4111-8111-111111111111", "clientId": "app-a",
   "clientSecret": "inline-secret", "cloud": "eu", "rateLimits": "100/1m,1500/1h"},
  {"name": "fabrikam", "tenantId": "22222222-2222-4222-8222-222222222222", "clientId": "app-b",
   "clientSecretFile": "` + secretFile + `", "apiUrl": "http://127.0.0.1:1",
   "tokenUrl": "http://127.0.0.1:1/{tenant}/token", "actionRateLimits": "10/1s"}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Load(write(t, tc.file, tc.content))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load:\n got %+v\nwant %+v", got, want)
			}
			if err := Validate(got); err != nil {
				t.Errorf("Validate of a good file: %v", err)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	tests := []struct {
		name    string
		path    func(t *testing.T) string
		wantErr []string
		wantIs  error
	}{
		{"missing file", func(*testing.T) string { return missing }, []string{"LR_TENANTS_FILE"}, fs.ErrNotExist},
		{"unknown field", func(t *testing.T) string {
			return write(t, "t.yaml", "tenants:\n  - name: a\n    clientSecert: typo\n")
		}, []string{"LR_TENANTS_FILE", "clientSecert"}, nil},
		{"not a document", func(t *testing.T) string { return write(t, "t.json", `{"tenants": [`) }, []string{"LR_TENANTS_FILE"}, nil},
		{"both secret files missing", func(t *testing.T) string {
			return write(t, "t.yaml", "tenants:\n"+
				"  - {name: a, tenantId: t-a, clientId: c, clientSecretFile: "+missing+"-a}\n"+
				"  - {name: b, tenantId: t-b, clientId: c, clientSecretFile: "+missing+"-b}\n")
		}, []string{`tenant "a": clientSecretFile`, `tenant "b": clientSecretFile`}, fs.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.path(t))
			if err == nil {
				t.Fatal("Load: got nil error, want one")
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v: errors.Is(%v) = false, want true", err, tc.wantIs)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	good := func(name, id string) Spec {
		return Spec{Name: name, TenantID: id, ClientID: "client", ClientSecret: "secret"}
	}
	tests := []struct {
		name  string
		specs []Spec
		want  []string // every fragment must appear in the one error
	}{
		{"valid", []Spec{good("a", "id-a"), good("b_2", "id-b"), good("default", "id-c")}, nil},
		{"every problem at once", []Spec{
			{Name: "Bad Name", Cloud: "mars"},
			good("dup", "same-id"),
			good("dup", "SAME-ID"),
		}, []string{
			`tenant 0 ("Bad Name"): name must be lowercase`,
			`tenant 0 ("Bad Name"): tenantId is required`,
			`tenant 0 ("Bad Name"): clientId is required`,
			`tenant 0 ("Bad Name"): clientSecret or clientSecretFile is required`,
			`tenant 0 ("Bad Name"): mde: unknown cloud "mars"`,
			`tenant 2 ("dup"): name used twice`,
			`tenant 2 ("dup"): tenantId used twice`,
		}},
		{"name too long", []Spec{good(strings.Repeat("a", 64), "id")}, []string{"name must be lowercase"}},
		{"name starts with dash", []Spec{good("-a", "id")}, []string{"name must be lowercase"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.specs)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: got nil, want errors %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error does not report %q; got:\n%v", w, err)
				}
			}
			if got, want := len(strings.Split(err.Error(), "\n")), len(tc.want); got != want {
				t.Errorf("Validate reported %d problems, want %d:\n%v", got, want, err)
			}
		})
	}
}

func TestMDEConfig(t *testing.T) {
	s := Spec{Name: "gov", TenantID: "tid", ClientID: "cid", ClientSecret: "sec", Cloud: "gcc-high",
		TokenURL: "http://login.test/{tenant}/token"}
	c, err := s.MDEConfig("ua/1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.TokenURL, "http://login.test/tid/token"; got != want {
		t.Errorf("TokenURL = %q, want %q", got, want)
	}
	if got, want := c.APIURL, "https://api-gov.securitycenter.microsoft.us"; got != want {
		t.Errorf("APIURL = %q, want %q (the gcc-high cloud's)", got, want)
	}
	if c.Tenant != "gov" || c.TenantID != "tid" || c.ClientID != "cid" || c.ClientSecret != "sec" || c.UserAgent != "ua/1" {
		t.Errorf("MDEConfig = %+v: identity fields not carried over", c)
	}
	if _, err := (Spec{Cloud: "mars"}).MDEConfig("ua"); err == nil {
		t.Error("MDEConfig with an unknown cloud: got nil error")
	}
}

func TestRouter(t *testing.T) {
	byID := map[string]string{"AAAA-Tenant": "a", "bbbb": "b"}
	tests := []struct {
		name       string
		hasDefault bool
		tenantID   string
		want       string
		wantOK     bool
	}{
		{"no tenantId goes to the default", true, "", "default", true},
		{"no tenantId without a default", false, "", "", false},
		{"exact id", true, "bbbb", "b", true},
		{"id differs in case", true, "aaaa-tenant", "a", true},
		{"id in upper case", true, "BBBB", "b", true},
		{"unknown id is not the default", true, "cccc", "", false},
		{"unknown id without a default", false, "cccc", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			def := ""
			if tc.hasDefault {
				def = "default"
			}
			r := NewRouter(byID, def, tc.hasDefault)
			got, ok := r.Route(tc.tenantID)
			if got != tc.want || ok != tc.wantOK {
				t.Errorf("Route(%q) = %q, %v; want %q, %v", tc.tenantID, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestAuthModes(t *testing.T) {
	pem := write(t, "client.pem", "cert and key")
	path := write(t, "tenants.yaml", `
tenants:
  - name: certs
    tenantId: 11111111-1111-4111-8111-111111111111
    clientId: app-a
    auth: certificate
    clientCertificateFile: `+pem+`
    clientCertificatePasswordFile: `+pem+`
    cloud: gcc-high
  - name: implied
    tenantId: 22222222-2222-4222-8222-222222222222
    clientId: app-b
    clientCertificateFile: `+pem+`
  - name: workload
    tenantId: 33333333-3333-4333-8333-333333333333
    clientId: app-c
    auth: workload-identity
  - name: managed
    tenantId: 44444444-4444-4444-8444-444444444444
    auth: managed-identity
`)
	t.Setenv(EnvFederatedTokenFile, "/var/run/secrets/azure/tokens/azure-identity-token")
	specs, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(specs); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	want := []struct{ mode, cert, pass, fed string }{
		{"certificate", pem, pem, ""},
		{"certificate", pem, "", ""},
		{"workload-identity", "", "", "/var/run/secrets/azure/tokens/azure-identity-token"},
		{"managed-identity", "", "", ""},
	}
	for i, s := range specs {
		c, err := s.MDEConfig("ua")
		if err != nil {
			t.Fatal(err)
		}
		if c.Auth != want[i].mode || c.ClientCertFile != want[i].cert || c.ClientCertPasswordFile != want[i].pass || c.FederatedTokenFile != want[i].fed {
			t.Errorf("tenant %s: auth %q cert %q pass %q fed %q; want %+v", s.Name, c.Auth, c.ClientCertFile, c.ClientCertPasswordFile, c.FederatedTokenFile, want[i])
		}
	}
	// The sovereign cloud keeps its login host, which azidentity gets as its authority.
	if c, _ := specs[0].MDEConfig("ua"); c.TokenURL != "https://login.microsoftonline.us/11111111-1111-4111-8111-111111111111/oauth2/v2.0/token" {
		t.Errorf("gcc-high token URL = %q", c.TokenURL)
	}

	bad := []struct {
		name string
		spec Spec
		env  string
		want string
	}{
		{"unknown auth", Spec{Name: "a", TenantID: "t", ClientID: "c", Auth: "kerberos"}, "x", "auth must be one of"},
		{"certificate without file", Spec{Name: "a", TenantID: "t", ClientID: "c", Auth: "certificate"}, "x", "clientCertificateFile is required"},
		{"certificate file missing", Spec{Name: "a", TenantID: "t", ClientID: "c", ClientCertificateFile: pem + ".absent"}, "x", "clientCertificateFile:"},
		{"certificate and secret", Spec{Name: "a", TenantID: "t", ClientID: "c", Auth: "certificate", ClientCertificateFile: pem, ClientSecret: "s"}, "x", "not used with auth: certificate"},
		{"secret with a certificate password", Spec{Name: "a", TenantID: "t", ClientID: "c", ClientSecret: "s", ClientCertificatePasswordFile: pem}, "x", "only used with auth: certificate"},
		{"workload without token file", Spec{Name: "a", TenantID: "t", ClientID: "c", Auth: "workload-identity"}, "", EnvFederatedTokenFile},
		{"workload without client id", Spec{Name: "a", TenantID: "t", Auth: "workload-identity"}, "x", "clientId is required"},
		{"managed identity with a secret", Spec{Name: "a", TenantID: "t", Auth: "managed-identity", ClientSecret: "s"}, "x", "not used with auth: managed-identity"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvFederatedTokenFile, tc.env)
			err := Validate([]Spec{tc.spec})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
