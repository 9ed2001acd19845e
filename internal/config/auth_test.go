package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateAuth(t *testing.T) {
	dir := t.TempDir()
	pem := filepath.Join(dir, "client.pem")
	if err := os.WriteFile(pem, []byte("not checked here"), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{"LR_MDE_TENANT_ID": "t", "LR_MDE_CLIENT_ID": "c"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range ids {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name  string
		env   map[string]string
		azure map[string]string
		want  []string // variables named in the error; none means valid
		mode  string
	}{
		{name: "no default tenant", env: nil, mode: "secret"},
		{name: "secret", env: with(map[string]string{"LR_MDE_CLIENT_SECRET": "s"}), mode: "secret"},
		{name: "secret missing", env: with(nil), want: []string{"LR_MDE_CLIENT_SECRET_FILE"}},
		{name: "secret file missing", env: with(map[string]string{"LR_MDE_CLIENT_SECRET_FILE": filepath.Join(dir, "absent")}), want: []string{"LR_MDE_CLIENT_SECRET_FILE"}},
		{name: "unknown mode", env: with(map[string]string{"LR_MDE_AUTH": "kerberos"}), want: []string{"LR_MDE_AUTH"}},
		{name: "certificate implied", env: with(map[string]string{"LR_MDE_CLIENT_CERT_FILE": pem}), mode: "certificate"},
		{name: "certificate", env: with(map[string]string{"LR_MDE_AUTH": "certificate", "LR_MDE_CLIENT_CERT_FILE": pem}), mode: "certificate"},
		{name: "certificate without file", env: with(map[string]string{"LR_MDE_AUTH": "certificate"}), want: []string{"LR_MDE_CLIENT_CERT_FILE"}},
		{name: "certificate file absent", env: with(map[string]string{"LR_MDE_AUTH": "certificate", "LR_MDE_CLIENT_CERT_FILE": filepath.Join(dir, "nope.pem")}), want: []string{"LR_MDE_CLIENT_CERT_FILE"}},
		{name: "certificate and secret", env: with(map[string]string{"LR_MDE_AUTH": "certificate", "LR_MDE_CLIENT_CERT_FILE": pem, "LR_MDE_CLIENT_SECRET": "s"}), want: []string{"LR_MDE_CLIENT_SECRET"}},
		{name: "certificate without ids", env: map[string]string{"LR_MDE_AUTH": "certificate", "LR_MDE_CLIENT_CERT_FILE": pem}, want: []string{"LR_MDE_CLIENT_ID", "LR_MDE_TENANT_ID"}},
		{name: "certificate with a custom token path", env: with(map[string]string{"LR_MDE_AUTH": "certificate", "LR_MDE_CLIENT_CERT_FILE": pem, "LR_MDE_TOKEN_URL": "https://login.example/x/{tenant}/token"}), want: []string{"LR_MDE_TOKEN_URL"}},
		{name: "password file without certificate mode", env: with(map[string]string{"LR_MDE_CLIENT_SECRET": "s", "LR_MDE_CLIENT_CERT_PASSWORD_FILE": pem}), want: []string{"LR_MDE_CLIENT_CERT_PASSWORD_FILE"}},
		{name: "workload identity", env: map[string]string{"LR_MDE_AUTH": "workload-identity"}, azure: map[string]string{"AZURE_FEDERATED_TOKEN_FILE": pem, "AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"}, mode: "workload-identity"},
		{name: "workload identity without token file", env: with(map[string]string{"LR_MDE_AUTH": "workload-identity"}), want: []string{"AZURE_FEDERATED_TOKEN_FILE"}},
		{name: "workload identity with a secret", env: with(map[string]string{"LR_MDE_AUTH": "workload-identity", "LR_MDE_CLIENT_SECRET": "s"}), azure: map[string]string{"AZURE_FEDERATED_TOKEN_FILE": pem}, want: []string{"LR_MDE_CLIENT_SECRET"}},
		{name: "managed identity, system assigned", env: map[string]string{"LR_MDE_AUTH": "managed-identity", "LR_MDE_TENANT_ID": "t"}, mode: "managed-identity"},
		{name: "managed identity without tenant", env: map[string]string{"LR_MDE_AUTH": "managed-identity"}, want: []string{"LR_MDE_TENANT_ID"}},
		{name: "managed identity with a certificate", env: map[string]string{"LR_MDE_AUTH": "managed-identity", "LR_MDE_CLIENT_CERT_FILE": pem}, want: []string{"LR_MDE_CLIENT_CERT_FILE"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setAll(t, tt.env)
			for _, k := range []string{"AZURE_FEDERATED_TOKEN_FILE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID"} {
				t.Setenv(k, tt.azure[k])
			}
			c, err := Load()
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if got := c.AuthMode(); got != tt.mode {
					t.Errorf("AuthMode = %q, want %q", got, tt.mode)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted it, want errors naming %v", tt.want)
			}
			for _, name := range tt.want {
				if !strings.Contains(err.Error(), name+":") {
					t.Errorf("error %q does not name %s", err, name)
				}
			}
		})
	}
}

func TestWorkloadIdentityDefaultsFromAzureVariables(t *testing.T) {
	setAll(t, map[string]string{"LR_MDE_AUTH": "workload-identity"})
	t.Setenv("AZURE_CLIENT_ID", "azure-client")
	t.Setenv("AZURE_TENANT_ID", "azure-tenant")
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientID() != "azure-client" || c.TenantID() != "azure-tenant" {
		t.Errorf("ClientID, TenantID = %q, %q; want the AZURE_ values", c.ClientID(), c.TenantID())
	}
	c.MDEClientID, c.MDETenantID = "lr-client", "lr-tenant"
	if c.ClientID() != "lr-client" || c.TenantID() != "lr-tenant" {
		t.Errorf("ClientID, TenantID = %q, %q; want the LR_ values first", c.ClientID(), c.TenantID())
	}
}
