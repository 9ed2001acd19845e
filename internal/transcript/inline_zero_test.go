package transcript

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/lr-relay/lr-relay/internal/artifact"
)

// TestInlineZero is LR_INLINE_MAX_BYTES=0: no output or errors text is kept in the result, the whole output
// goes to the sink, and the result carries the sizes and the object reference with its digest.
func TestInlineZero(t *testing.T) {
	tests := []struct {
		name       string
		output     string
		errors     string
		wantObject bool
	}{
		{name: "text output", output: "hello from the device\r\n", errors: "oops", wantObject: true},
		{name: "json output is not decoded inline", output: `{"a":1}`, wantObject: true},
		{name: "one byte", output: "x", wantObject: true},
		{name: "banner only leaves nothing to store", output: BannerPrefix + `C:\t.txt` + "\n"},
		{name: "empty output needs no object", output: "", errors: "only errors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			opens := 0
			// PreviewBytes is capped at InlineMax/2: with 0 nothing of the output is previewed either.
			opts := Options{InlineMax: 0, PreviewBytes: 4 << 10, RawMax: 16 << 10,
				Spill: func() (artifact.Sink, error) { opens++; return sink, nil }}
			in := `{"script_name":"s.ps1","exit_code":0,"script_output":` + jsonString(tt.output) +
				`,"script_errors":` + jsonString(tt.errors) + `}`
			s, prob, err := Parse(strings.NewReader(in), opts)
			if err != nil || prob != nil {
				t.Fatalf("Parse: problem %v, err %v", prob, err)
			}
			if s.Output != "" || s.OutputJSON != nil || s.Errors != "" {
				t.Errorf("output %q, outputJson %v, errors %q; want no content inline", s.Output, s.OutputJSON, s.Errors)
			}
			if s.ScriptName != "s.ps1" || s.ExitCode == nil || *s.ExitCode != 0 {
				t.Errorf("script name %q, exit code %v; want s.ps1, 0", s.ScriptName, s.ExitCode)
			}
			if tt.errors != "" && (!s.ErrorsTruncated || s.ErrorsBytes != int64(len(tt.errors))) {
				t.Errorf("errorsTruncated %v errorsBytes %d; want true %d", s.ErrorsTruncated, s.ErrorsBytes, len(tt.errors))
			}
			stored := strings.TrimPrefix(tt.output, BannerPrefix+`C:\t.txt`+"\n")
			if s.OutputBytes != int64(len(stored)) {
				t.Errorf("outputBytes %d, want %d", s.OutputBytes, len(stored))
			}
			if !tt.wantObject {
				if opens != 0 || s.OutputObject != nil || s.OutputTruncated {
					t.Errorf("opens %d, object %v, truncated %v; want no object for an empty output", opens, s.OutputObject, s.OutputTruncated)
				}
				return
			}
			sum := sha256.Sum256([]byte(stored))
			if opens != 1 || !sink.committed || sink.buf.String() != stored {
				t.Fatalf("sink: opens %d, committed %v, content %q; want 1, true, %q", opens, sink.committed, sink.buf.String(), stored)
			}
			if !s.OutputTruncated || s.OutputObject == nil || s.OutputObject.SHA256 != hex.EncodeToString(sum[:]) ||
				s.OutputObject.Size != int64(len(stored)) {
				t.Errorf("truncated %v, object %+v; want a reference to %d bytes with their sha256", s.OutputTruncated, s.OutputObject, len(stored))
			}
		})
	}
}
