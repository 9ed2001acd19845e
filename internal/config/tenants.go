package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/internal/quota"
	"github.com/lr-relay/lr-relay/internal/tenant"
)

// validateCloud checks LR_MDE_CLOUD against the clouds internal/mde knows.
func (c Config) validateCloud() []error {
	if _, err := mde.ResolveCloud(c.MDECloud); err == nil {
		return nil
	}
	msg := fmt.Sprintf("LR_MDE_CLOUD=%q: must be one of %s", c.MDECloud, strings.Join(mde.CloudNames(), ", "))
	if best := Closest(strings.ToLower(strings.TrimSpace(c.MDECloud)), mde.CloudNames()); best != "" {
		msg += "; did you mean " + best + "?"
	}
	return []error{errors.New(msg)}
}

// RequireTenant reports a configuration without any tenant: neither the LR_MDE_* variables nor
// LR_TENANTS_FILE. Only `lr-relay run` needs one (the demo brings its own, the dead-letter tools none), so it
// is not part of Validate.
func (c Config) RequireTenant() error {
	if c.HasDefaultTenant() || c.TenantsFile != "" {
		return nil
	}
	return errors.New("no tenant configured: set LR_MDE_TENANT_ID, LR_MDE_CLIENT_ID and LR_MDE_CLIENT_SECRET_FILE (or LR_MDE_CLIENT_SECRET), or LR_TENANTS_FILE")
}

// validateTenantsFile loads LR_TENANTS_FILE with internal/tenant and checks every tenant in it as the relay
// will at start (names, ids, credentials, clouds, and their own rate limits), plus its clashes with the
// default tenant. Every message names the file, the tenant and the field.
func (c Config) validateTenantsFile() []error {
	if c.TenantsFile == "" {
		return nil
	}
	where := "LR_TENANTS_FILE " + c.TenantsFile
	specs, err := tenant.Load(c.TenantsFile)
	var errs []error
	for _, e := range errorsOf(err) {
		var pe *os.PathError
		switch msg := e.Error(); {
		case errors.As(e, &pe) && pe.Path == c.TenantsFile:
			return []error{fmt.Errorf("LR_TENANTS_FILE: cannot read %s: %v", c.TenantsFile, pe.Err)}
		case strings.HasPrefix(msg, "LR_TENANTS_FILE "+c.TenantsFile+":"):
			errs = append(errs, e)
		default:
			// tenant.Load names the variable and the tenant; add the file.
			errs = append(errs, fmt.Errorf("%s: %s", where, strings.TrimPrefix(msg, "LR_TENANTS_FILE ")))
		}
	}
	if specs == nil && err != nil {
		return errs // the document did not parse
	}
	if len(specs) == 0 {
		return append(errs, fmt.Errorf("%s: lists no tenants", where))
	}
	for _, e := range errorsOf(tenant.Validate(specs)) {
		errs = append(errs, fmt.Errorf("%s: %w", where, e))
	}
	for _, s := range specs {
		for _, v := range []struct{ field, value string }{
			{"rateLimits", s.RateLimits}, {"actionRateLimits", s.ActionRateLimits},
		} {
			if v.value == "" {
				continue
			}
			if _, err := quota.ParseWindows(v.value); err != nil {
				errs = append(errs, fmt.Errorf("%s: tenant %q: %s %q: %s", where, s.Name, v.field, v.value, oneLine(err)))
			}
		}
		if !c.HasDefaultTenant() {
			continue
		}
		if s.Name == tenant.DefaultName {
			errs = append(errs, fmt.Errorf("%s: tenant %q: name is taken by the tenant of the LR_MDE_* variables", where, s.Name))
		}
		if c.MDETenantID != "" && strings.EqualFold(s.TenantID, c.MDETenantID) {
			errs = append(errs, fmt.Errorf("%s: tenant %q: tenantId is LR_MDE_TENANT_ID's: configure a tenant in one place only", where, s.Name))
		}
	}
	return errs
}
