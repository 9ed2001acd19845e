// Package tenant loads the Defender tenants lr-relay serves: the default one from the LR_MDE_* variables and
// any others from LR_TENANTS_FILE, and routes an event to its tenant by tenantId.
package tenant

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/lr-relay/lr-relay/internal/mde"
)

// DefaultName is the name of the tenant configured by the LR_MDE_* variables.
const DefaultName = "default"

// Spec is one tenant: its Entra tenant id, credentials, cloud and call budget.
type Spec struct {
	// Name is lr-relay's name for the tenant: the subject token of its results and the label of its
	// metrics. Lowercase letters, digits, '-' and '_'.
	Name string `json:"name"`
	// TenantID is the Entra tenant id; events route by their tenantId field to the tenant with this id.
	TenantID         string `json:"tenantId"`
	ClientID         string `json:"clientId"`
	ClientSecret     string `json:"clientSecret,omitempty"`
	ClientSecretFile string `json:"clientSecretFile,omitempty"`
	// Auth is the authentication mode: secret, certificate, workload-identity or managed-identity. Empty
	// means secret, or certificate when only clientCertificateFile is set.
	Auth string `json:"auth,omitempty"`
	// ClientCertificateFile (PEM with certificate and key, or PFX) and ClientCertificatePasswordFile are
	// read at every token request, so a rotated certificate is used without a restart.
	ClientCertificateFile         string `json:"clientCertificateFile,omitempty"`
	ClientCertificatePasswordFile string `json:"clientCertificatePasswordFile,omitempty"`
	Cloud                         string `json:"cloud,omitempty"`
	APIURL                        string `json:"apiUrl,omitempty"`
	TokenURL                      string `json:"tokenUrl,omitempty"`
	Scope                         string `json:"scope,omitempty"`
	// RateLimits and ActionRateLimits override LR_RATE_LIMITS / LR_ACTION_RATE_LIMITS for this tenant.
	RateLimits       string `json:"rateLimits,omitempty"`
	ActionRateLimits string `json:"actionRateLimits,omitempty"`
}

// File is the LR_TENANTS_FILE document.
type File struct {
	Tenants []Spec `json:"tenants"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Load reads a tenants file (YAML or JSON; JSON is YAML). Secrets in clientSecretFile are read here, so
// that a missing file shows at start; the client reads the file again at every token request.
func Load(path string) ([]Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("LR_TENANTS_FILE: %w", err)
	}
	var f File
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		return nil, fmt.Errorf("LR_TENANTS_FILE %s: %w", path, err)
	}
	var errs []error
	for i := range f.Tenants {
		s := &f.Tenants[i]
		if s.ClientSecretFile != "" {
			sb, err := os.ReadFile(s.ClientSecretFile)
			if err != nil {
				errs = append(errs, fmt.Errorf("LR_TENANTS_FILE tenant %q: clientSecretFile: %w", s.Name, err))
				continue
			}
			s.ClientSecret = strings.TrimSpace(string(sb))
		}
	}
	return f.Tenants, errors.Join(errs...)
}

// Validate checks a set of tenants: names, ids and credentials present, no name or tenant id twice.
func Validate(specs []Spec) error {
	var errs []error
	names, ids := map[string]bool{}, map[string]bool{}
	for i, s := range specs {
		where := fmt.Sprintf("tenant %d (%q)", i, s.Name)
		if !nameRE.MatchString(s.Name) {
			errs = append(errs, fmt.Errorf("%s: name must be lowercase letters, digits, '-' or '_'", where))
		}
		if s.TenantID == "" {
			errs = append(errs, fmt.Errorf("%s: tenantId is required", where))
		}
		errs = append(errs, s.validateAuth(where)...)
		if _, err := mde.ResolveCloud(s.Cloud); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		if names[s.Name] {
			errs = append(errs, fmt.Errorf("%s: name used twice", where))
		}
		if id := strings.ToLower(s.TenantID); id != "" && ids[id] {
			errs = append(errs, fmt.Errorf("%s: tenantId used twice", where))
		}
		names[s.Name], ids[strings.ToLower(s.TenantID)] = true, true
	}
	return errors.Join(errs...)
}

// AuthMode is the tenant's authentication mode: auth, or when it is empty, certificate if only a
// certificate is configured and secret otherwise.
func (s Spec) AuthMode() string {
	switch {
	case s.Auth != "":
		return strings.ToLower(strings.TrimSpace(s.Auth))
	case s.ClientCertificateFile != "" && s.ClientSecret == "" && s.ClientSecretFile == "":
		return mde.AuthCertificate
	}
	return mde.AuthSecret
}

// validateAuth checks that the tenant sets exactly what its authentication mode uses.
func (s Spec) validateAuth(where string) []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...)))
	}
	mode := s.AuthMode()
	secret := s.ClientSecret != "" || s.ClientSecretFile != ""
	cert := s.ClientCertificateFile != "" || s.ClientCertificatePasswordFile != ""
	if mode != mde.AuthManagedIdentity && s.ClientID == "" {
		bad("clientId is required")
	}
	switch mode {
	case mde.AuthSecret:
		if !secret {
			bad("clientSecret or clientSecretFile is required")
		}
		if cert {
			bad("clientCertificateFile and clientCertificatePasswordFile are only used with auth: certificate")
		}
	case mde.AuthCertificate:
		if s.ClientCertificateFile == "" {
			bad("clientCertificateFile is required with auth: certificate")
		}
		if secret {
			bad("clientSecret and clientSecretFile are not used with auth: certificate")
		}
	case mde.AuthWorkloadIdentity, mde.AuthManagedIdentity:
		if secret || cert {
			bad("clientSecret, clientSecretFile and clientCertificate* are not used with auth: %s", mode)
		}
		if mode == mde.AuthWorkloadIdentity && os.Getenv(EnvFederatedTokenFile) == "" {
			bad("auth: workload-identity needs %s (set by the workload identity webhook)", EnvFederatedTokenFile)
		}
	default:
		bad("auth must be one of %s, got %q", strings.Join(mde.AuthModes(), ", "), s.Auth)
	}
	for _, f := range []struct{ field, path string }{
		{"clientCertificateFile", s.ClientCertificateFile}, {"clientCertificatePasswordFile", s.ClientCertificatePasswordFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			bad("%s: %v", f.field, err)
		}
	}
	return errs
}

// EnvFederatedTokenFile is the standard variable naming the workload identity token file.
const EnvFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"

// MDEConfig resolves the tenant's cloud and overrides into a client configuration.
func (s Spec) MDEConfig(userAgent string) (mde.Config, error) {
	cloud, err := mde.ResolveCloud(s.Cloud)
	if err != nil {
		return mde.Config{}, err
	}
	c := mde.Config{
		APIURL: cloud.APIURL, TokenURL: cloud.TokenURL(s.TenantID), Scope: cloud.Scope,
		TenantID: s.TenantID, ClientID: s.ClientID, ClientSecret: s.ClientSecret,
		Tenant: s.Name, UserAgent: userAgent,
		Auth: s.AuthMode(), ClientSecretFile: s.ClientSecretFile,
		ClientCertFile: s.ClientCertificateFile, ClientCertPasswordFile: s.ClientCertificatePasswordFile,
	}
	if c.Auth == mde.AuthWorkloadIdentity {
		c.FederatedTokenFile = os.Getenv(EnvFederatedTokenFile)
	}
	if s.APIURL != "" {
		c.APIURL = s.APIURL
	}
	if s.TokenURL != "" {
		c.TokenURL = strings.ReplaceAll(s.TokenURL, "{tenant}", s.TenantID)
	}
	if s.Scope != "" {
		c.Scope = s.Scope
	}
	return c, nil
}

// Router finds a tenant by the tenantId of an event. An event without tenantId goes to the default tenant,
// and so does one whose tenantId is the default tenant's.
type Router[T any] struct {
	byID map[string]T
	def  T
	has  bool
}

// NewRouter builds a router. def is used for events without tenantId when hasDefault is set.
func NewRouter[T any](byTenantID map[string]T, def T, hasDefault bool) *Router[T] {
	m := make(map[string]T, len(byTenantID))
	for k, v := range byTenantID {
		m[strings.ToLower(k)] = v
	}
	return &Router[T]{byID: m, def: def, has: hasDefault}
}

// Route returns the tenant of an event.
func (r *Router[T]) Route(tenantID string) (T, bool) {
	if tenantID == "" {
		return r.def, r.has
	}
	v, ok := r.byID[strings.ToLower(tenantID)]
	return v, ok
}
