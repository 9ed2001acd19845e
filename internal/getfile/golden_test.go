package getfile

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lr-relay/lr-relay/internal/result"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestGolden runs Process over each testdata/*.gz download and compares the File and Problem it produces,
// as JSON, with testdata/<name>.golden.json. Run with -update to accept new output.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.gz"))
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no testdata/*.gz fixtures (err %v)", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".gz")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			f, prob, err := Process(context.Background(), bytes.NewReader(raw), filepath.Base(in), testOptions(64, nil))
			if err != nil {
				t.Fatalf("Process: %v", err)
			}
			got, err := json.MarshalIndent(struct {
				File    *result.File    `json:"file"`
				Problem *result.Problem `json:"problem,omitempty"`
			}{f, prob}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}
