package config

import "fmt"

// validateQuota checks the shared call budget's settings (LR_QUOTA_*).
func (c Config) validateQuota() []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("LR_%s: %s", name, fmt.Sprintf(format, args...)))
	}
	if c.QuotaProcesses < 1 {
		bad("QUOTA_REPLICAS", "must be at least 1, got %d", c.QuotaProcesses)
	}
	if c.QuotaMargin < 0 {
		bad("QUOTA_SKEW_MARGIN", "must not be negative, got %s", c.QuotaMargin)
	}
	if c.QuotaOpTimeout <= 0 {
		bad("QUOTA_OP_TIMEOUT", "must be positive, got %s", c.QuotaOpTimeout)
	}
	if c.QuotaProbeInterval <= 0 {
		bad("QUOTA_PROBE_INTERVAL", "must be positive, got %s", c.QuotaProbeInterval)
	}
	return errs
}
