package mde

import (
	"strings"
	"testing"
)

func TestResolveCloud(t *testing.T) {
	const (
		comToken = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
		comScope = "https://api.securitycenter.microsoft.com/.default"
		govToken = "https://login.microsoftonline.us/{tenant}/oauth2/v2.0/token"
	)
	tests := []struct {
		name string
		in   string
		want Cloud
	}{
		{"default", "", Cloud{"commercial", "https://api.securitycenter.microsoft.com", comToken, comScope}},
		{"commercial", "commercial", Cloud{"commercial", "https://api.securitycenter.microsoft.com", comToken, comScope}},
		{"case and spaces", "  Commercial ", Cloud{"commercial", "https://api.securitycenter.microsoft.com", comToken, comScope}},
		{"us", "us", Cloud{"us", "https://us.api.security.microsoft.com", comToken, comScope}},
		{"eu", "eu", Cloud{"eu", "https://eu.api.security.microsoft.com", comToken, comScope}},
		{"uk", "uk", Cloud{"uk", "https://uk.api.security.microsoft.com", comToken, comScope}},
		{"au", "au", Cloud{"au", "https://au.api.security.microsoft.com", comToken, comScope}},
		{"swa", "swa", Cloud{"swa", "https://swa.api.security.microsoft.com", comToken, comScope}},
		{"ina", "ina", Cloud{"ina", "https://ina.api.security.microsoft.com", comToken, comScope}},
		{"gcc", "gcc", Cloud{"gcc", "https://api-gcc.securitycenter.microsoft.us", comToken, "https://api-gcc.securitycenter.microsoft.us/.default"}},
		{"gcc-high", "GCC-High", Cloud{"gcc-high", "https://api-gov.securitycenter.microsoft.us", govToken, "https://api-gov.securitycenter.microsoft.us/.default"}},
		{"dod", "dod", Cloud{"dod", "https://api-gov.securitycenter.microsoft.us", govToken, "https://api-gov.securitycenter.microsoft.us/.default"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveCloud(tt.in)
			if err != nil {
				t.Fatalf("ResolveCloud(%q) error: %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ResolveCloud(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
	t.Run("every listed name resolves", func(t *testing.T) {
		for _, n := range CloudNames() {
			if c, err := ResolveCloud(n); err != nil || c.Name != n {
				t.Errorf("ResolveCloud(%q) = %+v, %v; want cloud named %q", n, c, err, n)
			}
		}
	})
	for _, bad := range []string{"gov", "azure", "usgov", "gcc high"} {
		t.Run("unknown "+bad, func(t *testing.T) {
			_, err := ResolveCloud(bad)
			if err == nil {
				t.Fatalf("ResolveCloud(%q) error = nil, want an error", bad)
			}
			for _, n := range CloudNames() {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("error %q does not list valid name %q", err, n)
				}
			}
		})
	}
}

func TestCloudTokenURL(t *testing.T) {
	c, err := ResolveCloud("gcc-high")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, tenant, want string }{
		{"guid", testTenantID, "https://login.microsoftonline.us/" + testTenantID + "/oauth2/v2.0/token"},
		{"domain", "contoso.onmicrosoft.us", "https://login.microsoftonline.us/contoso.onmicrosoft.us/oauth2/v2.0/token"},
		{"path characters escaped", "a/../b", "https://login.microsoftonline.us/a%2F..%2Fb/oauth2/v2.0/token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.TokenURL(tt.tenant); got != tt.want {
				t.Errorf("TokenURL(%q) = %q, want %q", tt.tenant, got, tt.want)
			}
		})
	}
}
