package transcript

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/lr-relay/lr-relay/internal/artifact"
)

// FuzzParse checks Parse against invariants and against a reference built on encoding/json: valid JSON
// objects must parse (unless a documented type problem), invalid JSON must be a Problem, and the cleaned
// output, path, errors and name must equal what the reference computes. Small limits exercise the
// truncation and spill path.
func FuzzParse(f *testing.F) {
	for _, path := range goldenFiles(f) {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		in, _ := splitGolden(f, data)
		f.Add(in)
	}
	f.Add([]byte(`{"script_output":"` + strings.Repeat(`ab\u00e9\ud83d\ude00`, 40) + `\u0000"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		checkParse(t, in, testOptions())
		checkParse(t, in, Options{InlineMax: 100, PreviewBytes: 17})
		checkParse(t, in, Options{}) // LR_INLINE_MAX_BYTES=0: nothing inline
	})
}

// TestReferenceOnGoldenInputs runs the fuzz oracle over the golden inputs read one byte at a time, so
// every buffer boundary case (split escapes, split runes, split banner) is exercised in normal runs.
func TestReferenceOnGoldenInputs(t *testing.T) {
	for _, path := range goldenFiles(t) {
		t.Run(path, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			in, _ := splitGolden(t, data)
			checkParse(t, in, Options{InlineMax: 40, PreviewBytes: 7})
			checkParse(t, in, Options{RawMax: 16 << 10})
			whole, wprob, err := Parse(bytes.NewReader(in), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			split, sprob, err := Parse(iotest.OneByteReader(bytes.NewReader(in)), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(golden{split, sprob})
			want, _ := json.Marshal(golden{whole, wprob})
			if !bytes.Equal(got, want) {
				t.Errorf("one byte at a time:\ngot  %s\nwant %s", got, want)
			}
		})
	}
}

func checkParse(t *testing.T, in []byte, opts Options) {
	t.Helper()
	sink := &memSink{}
	opens := 0
	opts.Spill = func() (artifact.Sink, error) { opens++; return sink, nil }
	s, prob, err := Parse(bytes.NewReader(in), opts)
	if err != nil {
		t.Fatalf("Parse error = %v, want nil for an in-memory reader", err)
	}
	if (s == nil) == (prob == nil) {
		t.Fatalf("Parse gave script %v and problem %v, want exactly one", s, prob)
	}
	ref := reference(in)
	if prob != nil {
		if ref.problemCodes == nil {
			t.Fatalf("Parse problem %+v, want a script (reference: %+v)", prob, ref)
		}
		if !ref.problemCodes[prob.Code] {
			t.Fatalf("problem code %q, want one of %v (message %q)", prob.Code, ref.problemCodes, prob.Message)
		}
		if opens > 0 && !sink.aborted {
			t.Fatalf("sink opened but not aborted after a problem")
		}
		return
	}
	if ref.problemCodes != nil {
		t.Fatalf("Parse gave a script %+v, want a problem with one of %v", s, ref.problemCodes)
	}
	opt := opts.normalized()
	for name, v := range map[string]string{"Output": s.Output, "Errors": s.Errors, "ScriptName": s.ScriptName, "TranscriptPath": s.TranscriptPath} {
		if !utf8.ValidString(v) {
			t.Errorf("%s = %q, not valid UTF-8", name, v)
		}
		if strings.IndexByte(v, 0) >= 0 {
			t.Errorf("%s = %q, holds a NUL", name, v)
		}
	}
	if s.OutputBytes != int64(len(ref.output)) {
		t.Fatalf("OutputBytes = %d, want %d", s.OutputBytes, len(ref.output))
	}
	if s.TranscriptPath != ref.path || s.TrailingNULs != ref.trailing {
		t.Errorf("TranscriptPath, TrailingNULs = %q, %d; want %q, %d", s.TranscriptPath, s.TrailingNULs, ref.path, ref.trailing)
	}
	if int64(len(ref.output)) <= int64(opt.InlineMax) {
		if s.OutputTruncated || s.Output != ref.output || opens != 0 {
			t.Errorf("Output = %q (truncated %v, opens %d), want %q whole", s.Output, s.OutputTruncated, opens, ref.output)
		}
	} else {
		head := validPrefix(ref.output[:opt.PreviewBytes])
		tail := validSuffix(ref.output[len(ref.output)-opt.PreviewBytes:])
		omitted := len(ref.output) - len(head) - len(tail)
		want := head + "\n…[" + itoa(omitted) + " bytes omitted]…\n" + tail
		if head == "" && tail == "" {
			want = ""
		}
		if !s.OutputTruncated || s.Output != want {
			t.Errorf("Output = %q (truncated %v), want %q", s.Output, s.OutputTruncated, want)
		}
		if opens != 1 || !sink.committed || sink.buf.String() != ref.output || s.OutputObject == nil {
			t.Errorf("sink: opens %d committed %v ref %v content %q, want 1 true non-nil %q", opens, sink.committed, s.OutputObject, sink.buf.String(), ref.output)
		}
	}
	if len(ref.errors) <= opt.InlineMax && s.Errors != ref.errors {
		t.Errorf("Errors = %q, want %q", s.Errors, ref.errors)
	}
	if len(ref.name) <= 1<<10 && s.ScriptName != ref.name {
		t.Errorf("ScriptName = %q, want %q", s.ScriptName, ref.name)
	}
	if (s.ExitCode == nil) != (ref.exitCode == nil) || (s.ExitCode != nil && *s.ExitCode != *ref.exitCode) {
		t.Errorf("ExitCode = %v, want %v", s.ExitCode, ref.exitCode)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func validPrefix(s string) string {
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func validSuffix(s string) string {
	for !utf8.ValidString(s) {
		s = s[1:]
	}
	return s
}

// referenceResult is what the encoding/json based reference expects.
type referenceResult struct {
	problemCodes               map[string]bool // nil when a script is expected
	output, path, errors, name string
	trailing                   int
	exitCode                   *int
}

// reference parses in with encoding/json (first occurrence of a key wins) and cleans the strings with
// plain string functions.
func reference(in []byte) referenceResult {
	in = bytes.TrimPrefix(in, utf8BOM)
	trimmed := bytes.TrimLeft(in, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return referenceResult{problemCodes: map[string]bool{CodeEmptyFile: true}}
	case !json.Valid(in):
		return referenceResult{problemCodes: map[string]bool{CodeInvalidJSON: true, CodeUnsupportedJSON: true}}
	case trimmed[0] != '{':
		return referenceResult{problemCodes: map[string]bool{CodeInvalidJSON: true}}
	}
	typeProblem := referenceResult{problemCodes: map[string]bool{CodeUnexpectedType: true}}
	dec := json.NewDecoder(bytes.NewReader(in))
	if _, err := dec.Token(); err != nil {
		panic(err)
	}
	fields := map[field]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			panic(err)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				panic(err)
			}
			return referenceResult{problemCodes: map[string]bool{CodeUnsupportedJSON: true}}
		}
		f := lookupField([]byte(tok.(string)))
		if _, dup := fields[f]; f != fieldUnknown && !dup {
			fields[f] = raw
		}
	}
	if len(fields) == 0 {
		return referenceResult{problemCodes: map[string]bool{CodeUnrecognizedFormat: true}}
	}
	var r referenceResult
	str := func(f field) (string, bool) {
		raw, ok := fields[f]
		if !ok || string(raw) == "null" {
			return "", true
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	}
	out, ok1 := str(fieldOutput)
	errs, ok2 := str(fieldErrors)
	name, ok3 := str(fieldName)
	if !ok1 || !ok2 || !ok3 {
		return typeProblem
	}
	if raw, ok := fields[fieldExit]; ok && string(raw) != "null" {
		text := string(raw)
		if raw[0] == '"' {
			if json.Unmarshal(raw, &text) != nil {
				return typeProblem
			}
		}
		if len(text) > 40 {
			return typeProblem
		}
		if strings.TrimSpace(text) != "" || raw[0] != '"' {
			v, ok := parseExitCode([]byte(text))
			if !ok {
				return typeProblem
			}
			r.exitCode = &v
		}
	}
	clean := func(s string) (string, int) {
		t := strings.TrimRight(s, "\x00")
		return strings.ReplaceAll(t, "\x00", NULReplacement), len(s) - len(t)
	}
	out, r.trailing = clean(out)
	r.output = out
	if line, rest, hasNL := strings.Cut(out, "\n"); strings.HasPrefix(line, BannerPrefix) && len(line) <= maxBannerLine {
		r.path = strings.TrimSuffix(line[len(BannerPrefix):], "\r")
		r.output = ""
		if hasNL {
			r.output = rest
		}
	}
	r.errors, _ = clean(errs)
	r.name, _ = clean(name)
	return r
}
