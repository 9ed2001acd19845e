package config

import (
	"strings"
	"testing"
)

func TestValidateResults(t *testing.T) {
	tests := []struct {
		name    string
		vars    map[string]string
		wantBad []string // variables the error must name; none means valid
	}{
		{name: "defaults"},
		{name: "no content inline", vars: map[string]string{"LR_INLINE_MAX_BYTES": "0", "LR_PREVIEW_BYTES": "0"}},
		{name: "no content inline needs no preview", vars: map[string]string{"LR_INLINE_MAX_BYTES": "0"},
			wantBad: []string{"LR_PREVIEW_BYTES"}},
		{name: "inline cap below the minimum", vars: map[string]string{"LR_INLINE_MAX_BYTES": "1023", "LR_PREVIEW_BYTES": "0"},
			wantBad: []string{"LR_INLINE_MAX_BYTES"}},
		{name: "negative inline cap", vars: map[string]string{"LR_INLINE_MAX_BYTES": "-1", "LR_PREVIEW_BYTES": "0"},
			wantBad: []string{"LR_INLINE_MAX_BYTES"}},
		{name: "preview over half the inline cap", vars: map[string]string{"LR_INLINE_MAX_BYTES": "4096", "LR_PREVIEW_BYTES": "2049"},
			wantBad: []string{"LR_PREVIEW_BYTES"}},
		{name: "preview of exactly half", vars: map[string]string{"LR_INLINE_MAX_BYTES": "4096", "LR_PREVIEW_BYTES": "2048"}},
		{name: "caps zero or out of range", vars: map[string]string{"LR_RAW_MAX_BYTES": "-1", "LR_GETFILE_MAX_BYTES": "0",
			"LR_GETFILE_MAX_RATIO": "1", "LR_OBJECT_MAX_BYTES": "0", "LR_OBJECT_TTL": "-1h", "LR_RESULT_DUPLICATE_WINDOW": "0s"},
			wantBad: []string{"LR_RAW_MAX_BYTES", "LR_GETFILE_MAX_BYTES", "LR_GETFILE_MAX_RATIO", "LR_OBJECT_MAX_BYTES",
				"LR_OBJECT_TTL", "LR_RESULT_DUPLICATE_WINDOW"}},
		{name: "duplicate window over the results stream's age", vars: map[string]string{"LR_RESULT_DUPLICATE_WINDOW": "721h"},
			wantBad: []string{"LR_RESULT_DUPLICATE_WINDOW"}},
		{name: "object bucket capped, objects kept", vars: map[string]string{"LR_OBJECT_MAX_BYTES": "1073741824", "LR_OBJECT_TTL": "0s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setAll(t, tt.vars)
			c, err := Load()
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if len(tt.wantBad) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error naming %v", tt.wantBad)
			}
			for _, name := range tt.wantBad {
				if !strings.Contains(err.Error(), name+":") {
					t.Errorf("error does not name %s:\n%v", name, err)
				}
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(tt.wantBad) {
				t.Errorf("%d problems reported, want %d:\n%v", n, len(tt.wantBad), err)
			}
		})
	}
}
