package config

import (
	"fmt"

	"github.com/lr-relay/lr-relay/internal/download"
)

// maxDownloadMinRate caps LR_DOWNLOAD_MIN_RATE at 1 GiB/s: a higher floor would fail every download.
const maxDownloadMinRate = 1 << 30

// validateDownloadBounds checks the download bounds and proxy (hostile links): every download ends within
// LR_DOWNLOAD_TOTAL_TIMEOUT, and LR_DOWNLOAD_PROXY is a proxy URL that can be used by CONNECT. Messages
// never repeat the proxy's password.
func (c Config) validateDownloadBounds() []error {
	var errs []error
	if c.DownloadMinRate < 0 || c.DownloadMinRate > maxDownloadMinRate {
		errs = append(errs, fmt.Errorf("LR_DOWNLOAD_MIN_RATE: must be between 0 (off) and %d bytes per second, got %d",
			maxDownloadMinRate, c.DownloadMinRate))
	}
	switch {
	case c.DownloadTotalTimeout <= 0:
		errs = append(errs, fmt.Errorf("LR_DOWNLOAD_TOTAL_TIMEOUT: must be positive, got %s", c.DownloadTotalTimeout))
	case c.DownloadTotalTimeout < c.DownloadTimeout:
		errs = append(errs, fmt.Errorf("LR_DOWNLOAD_TOTAL_TIMEOUT: must be at least LR_DOWNLOAD_TIMEOUT (%s), got %s",
			c.DownloadTimeout, c.DownloadTotalTimeout))
	}
	if c.DownloadProxy != "" {
		if _, err := download.ParseProxyURL(c.DownloadProxy); err != nil {
			errs = append(errs, fmt.Errorf("LR_DOWNLOAD_PROXY: %w", err))
		}
	}
	return errs
}
