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
	Cloud            string `json:"cloud,omitempty"`
	APIURL           string `json:"apiUrl,omitempty"`
	TokenURL         string `json:"tokenUrl,omitempty"`
	Scope            string `json:"scope,omitempty"`
	// RateLimits and ActionRateLimits override LR_RATE_LIMITS / LR_ACTION_RATE_LIMITS for this tenant.
	RateLimits       string `json:"rateLimits,omitempty"`
	ActionRateLimits string `json:"actionRateLimits,omitempty"`
}

// File is the LR_TENANTS_FILE document.
type File struct {
	Tenants []Spec `json:"tenants"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Load reads a tenants file (YAML or JSON; JSON is YAML). Secrets in clientSecretFile are read here.
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
		if s.ClientID == "" {
			errs = append(errs, fmt.Errorf("%s: clientId is required", where))
		}
		if s.ClientSecret == "" {
			errs = append(errs, fmt.Errorf("%s: clientSecret or clientSecretFile is required", where))
		}
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
