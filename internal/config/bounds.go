package config

// validateBounds checks the input bounds.
func (c Config) validateBounds(bad func(name, format string, args ...any)) {
	if c.MaxEventBytes < 1024 {
		bad("MAX_EVENT_BYTES", "must be at least 1024, got %d", c.MaxEventBytes)
	}
	if c.MaxCommands < 1 || c.MaxCommands > 10000 {
		bad("MAX_COMMANDS", "must be between 1 and 10000 (the schema's own cap), got %d", c.MaxCommands)
	}
	if c.MaxResultBytesPerEvent < 1 {
		bad("MAX_RESULT_BYTES_PER_EVENT", "must be positive, got %d", c.MaxResultBytesPerEvent)
	}
	if c.TenantAuthRetry <= 0 {
		bad("TENANT_AUTH_RETRY", "must be positive, got %s", c.TenantAuthRetry)
	}
}
