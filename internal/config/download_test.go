package config

import (
	"strings"
	"testing"
	"time"
)

func TestDownloadBoundsDefaults(t *testing.T) {
	setAll(t, nil)
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.DownloadMinRate != 32768 || c.DownloadTotalTimeout != 2*time.Hour || c.DownloadProxy != "" {
		t.Errorf("download bounds defaults = %d, %s, %q; want 32768, 2h0m0s, \"\"", c.DownloadMinRate, c.DownloadTotalTimeout, c.DownloadProxy)
	}
	// The README's arithmetic: a file of LR_DOWNLOAD_MAX_BYTES fits in the total timeout at 600 kB/s.
	if need := float64(c.DownloadMaxBytes) / c.DownloadTotalTimeout.Seconds(); need > 600_000 {
		t.Errorf("a %d-byte file needs %.0f bytes/s to meet the total timeout, want at most 600000", c.DownloadMaxBytes, need)
	}
}

func TestValidateDownloadBounds(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // substrings; none = valid
	}{
		{name: "min rate off", env: map[string]string{"LR_DOWNLOAD_MIN_RATE": "0"}},
		{name: "proxy", env: map[string]string{"LR_DOWNLOAD_PROXY": "http://user:pw@10.0.0.3:3128"}},
		{name: "negative min rate", env: map[string]string{"LR_DOWNLOAD_MIN_RATE": "-1"},
			want: []string{"LR_DOWNLOAD_MIN_RATE: must be between 0 (off) and 1073741824 bytes per second, got -1"}},
		{name: "absurd min rate", env: map[string]string{"LR_DOWNLOAD_MIN_RATE": "2147483648"},
			want: []string{"LR_DOWNLOAD_MIN_RATE"}},
		{name: "no total timeout", env: map[string]string{"LR_DOWNLOAD_TOTAL_TIMEOUT": "0s"},
			want: []string{"LR_DOWNLOAD_TOTAL_TIMEOUT: must be positive, got 0s"}},
		{name: "total below the header timeout", env: map[string]string{"LR_DOWNLOAD_TOTAL_TIMEOUT": "10s"},
			want: []string{"LR_DOWNLOAD_TOTAL_TIMEOUT: must be at least LR_DOWNLOAD_TIMEOUT (30s), got 10s"}},
		{name: "socks proxy", env: map[string]string{"LR_DOWNLOAD_PROXY": "socks5://proxy:1080"},
			want: []string{`LR_DOWNLOAD_PROXY: scheme "socks5" is not supported`}},
		{name: "all at once, without the password", env: map[string]string{"LR_DOWNLOAD_MIN_RATE": "-5",
			"LR_DOWNLOAD_TOTAL_TIMEOUT": "-1s", "LR_DOWNLOAD_PROXY": "http://user:hunter2@proxy:3128/path"},
			want: []string{"LR_DOWNLOAD_MIN_RATE", "LR_DOWNLOAD_TOTAL_TIMEOUT", "LR_DOWNLOAD_PROXY"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setAll(t, tt.env)
			c, err := Load()
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want errors")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Validate() = %q repeats the proxy password", err)
			}
		})
	}
}
