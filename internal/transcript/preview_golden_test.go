package transcript

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lr-relay/lr-relay/internal/artifact"
)

// previewOptions are small caps, so that the golden files of cut previews stay readable.
var previewOptions = Options{InlineMax: 64, PreviewBytes: 16}

// TestGoldenPreview checks how outputs larger than the inline cap are cut into a head and a tail preview
// (on UTF-8 boundaries, after the banner and the trailing NULs are removed), with the spilled content checked
// against the cleaned output. Files: testdata/preview/*.txt, same format as TestGolden; -update rewrites them.
func TestGoldenPreview(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "preview", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no preview golden files: %v", err)
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".txt")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			input, want := splitGolden(t, data)
			sink := &memSink{}
			opened := false
			opts := previewOptions
			opts.Spill = func() (artifact.Sink, error) { opened = true; return sink, nil }
			s, prob, err := Parse(bytes.NewReader(input), opts)
			if err != nil || prob != nil {
				t.Fatalf("Parse: problem %+v, error %v", prob, err)
			}
			if s.OutputTruncated {
				if !sink.committed || int64(sink.buf.Len()) != s.OutputBytes {
					t.Errorf("spill committed=%v with %d bytes, want the whole cleaned output (%d bytes)", sink.committed, sink.buf.Len(), s.OutputBytes)
				}
				if !strings.HasPrefix(sink.buf.String(), strings.SplitN(s.Output, "\n…[", 2)[0]) {
					t.Errorf("preview head is not the start of the spilled output")
				}
			} else if opened {
				t.Errorf("output of %d bytes fits inline but the spill was opened", s.OutputBytes)
			}
			s.OutputObject = nil // the in-memory sink's reference is not part of the golden output
			got, err := json.MarshalIndent(golden{Script: s}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			if *update {
				out := append(append(append([]byte{}, input...), []byte("\n"+goldenSep+"\n")...), got...)
				if err := os.WriteFile(path, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !bytes.Equal(got, want) {
				t.Errorf("mismatch (run go test -update to accept)\ngot:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
