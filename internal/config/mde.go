package config

// validateMDE checks the settings of the Defender client that mde.New takes as given: it has no defaults of
// its own.
func (c Config) validateMDE(bad func(name, format string, args ...any)) {
	if c.MDERequestTimeout <= 0 {
		bad("MDE_REQUEST_TIMEOUT", "must be positive, got %s", c.MDERequestTimeout)
	}
	if c.MDEMaxThrottleRetries < 0 {
		bad("MDE_MAX_THROTTLE_RETRIES", "must not be negative (0 means no retries), got %d", c.MDEMaxThrottleRetries)
	}
}
