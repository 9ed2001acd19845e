package transcript

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lr-relay/lr-relay/internal/result"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with the current output")

// goldenSep separates the input from the expected output in a golden file. The input is everything
// before "\n" + goldenSep + "\n" (so an input ending in a newline has a blank line before the separator);
// a file starting with goldenSep has an empty input.
const goldenSep = "==== want ===="

// golden is what a golden file records: both results of Parse.
type golden struct {
	Script  *result.Script  `json:"script"`
	Problem *result.Problem `json:"problem"`
}

// splitGolden returns the input and the expected JSON of a golden file.
func splitGolden(t testing.TB, data []byte) (input, want []byte) {
	t.Helper()
	if rest, ok := bytes.CutPrefix(data, []byte(goldenSep+"\n")); ok {
		return nil, rest
	}
	in, want, ok := bytes.Cut(data, []byte("\n"+goldenSep+"\n"))
	if !ok {
		t.Fatalf("no %q separator line", goldenSep)
	}
	return in, want
}

func goldenFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files in testdata/")
	}
	return files
}

func TestGolden(t *testing.T) {
	for _, path := range goldenFiles(t) {
		name := strings.TrimSuffix(filepath.Base(path), ".txt")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			input, want := splitGolden(t, data)
			s, prob, err := Parse(bytes.NewReader(input), testOptions())
			if err != nil {
				t.Fatalf("Parse error = %v, want nil (malformed files are Problems)", err)
			}
			if (s == nil) == (prob == nil) {
				t.Fatalf("Parse gave script %v and problem %v, want exactly one", s, prob)
			}
			got, err := json.MarshalIndent(golden{Script: s, Problem: prob}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			if *update {
				out := append(append(append([]byte{}, input...), []byte("\n"+goldenSep+"\n")...), got...)
				if len(input) == 0 {
					out = append([]byte(goldenSep+"\n"), got...)
				}
				if err := os.WriteFile(path, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Parse(%s) mismatch (run go test -update to accept)\ngot:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
}
