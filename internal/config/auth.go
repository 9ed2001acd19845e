package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/lr-relay/lr-relay/internal/mde"
)

// The standard Azure workload identity variables, set by the AKS workload identity webhook. They are not
// LR_ variables because every Azure SDK reads them under these names.
const (
	EnvFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	EnvAzureClientID      = "AZURE_CLIENT_ID"
	EnvAzureTenantID      = "AZURE_TENANT_ID"
)

// HasDefaultTenant reports whether the LR_MDE_* variables configure a tenant (the "default" tenant).
func (c Config) HasDefaultTenant() bool {
	return c.MDETenantID != "" || c.MDEClientID != "" || c.MDEAuth != "" || c.MDEClientCertFile != ""
}

// AuthMode is the default tenant's authentication mode: LR_MDE_AUTH, or when it is empty, certificate if
// only a certificate is configured and secret otherwise.
func (c Config) AuthMode() string {
	switch {
	case c.MDEAuth != "":
		return strings.ToLower(strings.TrimSpace(c.MDEAuth))
	case c.MDEClientCertFile != "" && c.MDEClientSecret == "" && c.MDEClientSecretFile == "":
		return mde.AuthCertificate
	}
	return mde.AuthSecret
}

// ClientID is the default tenant's client id: LR_MDE_CLIENT_ID, or for workload identity AZURE_CLIENT_ID,
// which the workload identity webhook sets.
func (c Config) ClientID() string {
	if c.MDEClientID == "" && c.AuthMode() == mde.AuthWorkloadIdentity {
		return os.Getenv(EnvAzureClientID)
	}
	return c.MDEClientID
}

// TenantID is the default tenant's Entra tenant id: LR_MDE_TENANT_ID, or for workload identity
// AZURE_TENANT_ID.
func (c Config) TenantID() string {
	if c.MDETenantID == "" && c.AuthMode() == mde.AuthWorkloadIdentity {
		return os.Getenv(EnvAzureTenantID)
	}
	return c.MDETenantID
}

// validateAuth checks the Entra authentication settings of the default tenant: a known mode, and exactly
// the settings that mode uses, with its files present. Nothing here touches the network.
func (c Config) validateAuth() []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
	}
	mode := c.AuthMode()
	valid := false
	for _, m := range mde.AuthModes() {
		valid = valid || m == mode
	}
	if !valid {
		bad("LR_MDE_AUTH", "must be one of %s, got %q", strings.Join(mde.AuthModes(), ", "), c.MDEAuth)
		return errs
	}
	if !c.HasDefaultTenant() {
		return nil
	}
	secretSet := c.MDEClientSecret != "" || c.MDEClientSecretFile != ""
	notFor := func(name string, set bool) {
		if set {
			bad(name, "is not used with LR_MDE_AUTH=%s; unset it", mode)
		}
	}
	fileExists := func(name, path string) {
		if path == "" {
			return
		}
		if fi, err := os.Stat(path); err != nil {
			bad(name, "cannot read %s: %v", path, unwrapPath(err))
		} else if fi.IsDir() {
			bad(name, "%s is a directory, want a file", path)
		}
	}
	switch mode {
	case mde.AuthSecret:
		if !secretSet {
			bad("LR_MDE_CLIENT_SECRET_FILE", "LR_MDE_AUTH=secret needs LR_MDE_CLIENT_SECRET_FILE or LR_MDE_CLIENT_SECRET")
		}
		fileExists("LR_MDE_CLIENT_SECRET_FILE", c.MDEClientSecretFile)
		notFor("LR_MDE_CLIENT_CERT_FILE", c.MDEClientCertFile != "")
		notFor("LR_MDE_CLIENT_CERT_PASSWORD_FILE", c.MDEClientCertPasswordFile != "")
	case mde.AuthCertificate:
		if c.MDEClientCertFile == "" {
			bad("LR_MDE_CLIENT_CERT_FILE", "LR_MDE_AUTH=certificate needs the certificate file (PEM with certificate and key, or PFX)")
		}
		fileExists("LR_MDE_CLIENT_CERT_FILE", c.MDEClientCertFile)
		fileExists("LR_MDE_CLIENT_CERT_PASSWORD_FILE", c.MDEClientCertPasswordFile)
		notFor("LR_MDE_CLIENT_SECRET", c.MDEClientSecret != "")
		notFor("LR_MDE_CLIENT_SECRET_FILE", c.MDEClientSecretFile != "")
	case mde.AuthWorkloadIdentity:
		if f := os.Getenv(EnvFederatedTokenFile); f == "" {
			bad(EnvFederatedTokenFile, "LR_MDE_AUTH=workload-identity needs the federated token file (set by the workload identity webhook)")
		}
		notFor("LR_MDE_CLIENT_SECRET", c.MDEClientSecret != "")
		notFor("LR_MDE_CLIENT_SECRET_FILE", c.MDEClientSecretFile != "")
		notFor("LR_MDE_CLIENT_CERT_FILE", c.MDEClientCertFile != "")
		notFor("LR_MDE_CLIENT_CERT_PASSWORD_FILE", c.MDEClientCertPasswordFile != "")
	case mde.AuthManagedIdentity:
		notFor("LR_MDE_CLIENT_SECRET", c.MDEClientSecret != "")
		notFor("LR_MDE_CLIENT_SECRET_FILE", c.MDEClientSecretFile != "")
		notFor("LR_MDE_CLIENT_CERT_FILE", c.MDEClientCertFile != "")
		notFor("LR_MDE_CLIENT_CERT_PASSWORD_FILE", c.MDEClientCertPasswordFile != "")
	}
	// A managed identity may be system-assigned (no client id); every tenant needs its tenant id, which
	// routes events and names the token endpoint.
	if mode != mde.AuthManagedIdentity && c.ClientID() == "" {
		bad("LR_MDE_CLIENT_ID", "LR_MDE_AUTH=%s needs the application (client) id", mode)
	}
	if c.TenantID() == "" {
		bad("LR_MDE_TENANT_ID", "LR_MDE_AUTH=%s needs the Entra tenant id", mode)
	}
	if (mode == mde.AuthCertificate || mode == mde.AuthWorkloadIdentity) && c.MDETokenURL != "" {
		// azidentity takes a login host, and finds the token endpoint under /{tenant}/.
		u, err := url.Parse(c.MDETokenURL)
		if err != nil || u.Scheme != "https" || !strings.HasSuffix(u.Path, "/{tenant}/oauth2/v2.0/token") || strings.Count(u.Path, "/") != 4 {
			bad("LR_MDE_TOKEN_URL", "with LR_MDE_AUTH=%s it must be https://<login host>/{tenant}/oauth2/v2.0/token, got %q", mode, c.MDETokenURL)
		}
	}
	return errs
}

// unwrapPath drops the path an *os.PathError repeats, since the message names it already.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}
