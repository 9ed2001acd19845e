package transcript

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestNestingLimit(t *testing.T) {
	tests := []struct {
		name      string
		depth     int // nesting of the unknown value; the top-level object adds one
		wantProbl string
	}{
		{name: "at the limit", depth: MaxDepth - 1},
		{name: "one past the limit", depth: MaxDepth, wantProbl: CodeUnsupportedJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := `{"x":` + strings.Repeat("[", tt.depth) + strings.Repeat("]", tt.depth) + `,"script_output":"ok"}`
			if got, want := json.Valid([]byte(in)), tt.wantProbl == ""; got != want {
				t.Fatalf("json.Valid = %v, want %v: the limit should match encoding/json", got, want)
			}
			s, prob, err := Parse(strings.NewReader(in), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantProbl == "" {
				if prob != nil || s.Output != "ok" {
					t.Errorf("got %+v, %+v; want output \"ok\"", s, prob)
				}
				return
			}
			if prob == nil || prob.Code != tt.wantProbl {
				t.Errorf("got problem %+v, want code %q", prob, tt.wantProbl)
			}
		})
	}
}

func TestBannerLimits(t *testing.T) {
	longPath := strings.Repeat("p", maxBannerLine)
	tests := []struct {
		name       string
		output     string
		wantPath   string
		wantOutput string
	}{
		{name: "prefix only", output: BannerPrefix, wantPath: "", wantOutput: ""},
		{name: "partial prefix is output", output: "Transcript started", wantOutput: "Transcript started"},
		{name: "partial prefix then newline is output", output: "Transcript started\nx", wantOutput: "Transcript started\nx"},
		{name: "line longer than the limit is output", output: BannerPrefix + longPath + "\nrest", wantOutput: BannerPrefix + longPath + "\nrest"},
		{name: "line at the limit is the banner", output: BannerPrefix + longPath[len(BannerPrefix):] + "\nrest", wantPath: longPath[len(BannerPrefix):], wantOutput: "rest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, prob, err := Parse(strings.NewReader(doc(tt.output)), Options{InlineMax: 1 << 20})
			if err != nil || prob != nil {
				t.Fatalf("Parse: %v %v", prob, err)
			}
			if s.TranscriptPath != tt.wantPath || s.Output != tt.wantOutput {
				t.Errorf("path %.40q output %.40q; want %.40q %.40q", s.TranscriptPath, s.Output, tt.wantPath, tt.wantOutput)
			}
		})
	}
}
