package transcript

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/result"
)

// memSink is an in-memory artifact.Sink that records how it was ended.
type memSink struct {
	buf        bytes.Buffer
	committed  bool
	aborted    bool
	writeErr   error
	commitErr  error
	abortErr   error
	failAfter  int // fail writes once this many bytes were written, when writeErr is set
	endedTwice bool
}

func (s *memSink) Write(p []byte) (int, error) {
	if s.committed || s.aborted {
		return 0, errors.New("write after end")
	}
	if s.writeErr != nil && s.buf.Len()+len(p) > s.failAfter {
		return 0, s.writeErr
	}
	return s.buf.Write(p)
}

func (s *memSink) Commit() (*result.ObjectRef, error) {
	s.endedTwice = s.endedTwice || s.committed || s.aborted
	s.committed = true
	if s.commitErr != nil {
		return nil, s.commitErr
	}
	sum := sha256.Sum256(s.buf.Bytes())
	return &result.ObjectRef{Bucket: "outputs", Name: "obj", Size: int64(s.buf.Len()), SHA256: hex.EncodeToString(sum[:])}, nil
}

func (s *memSink) Abort() error {
	s.endedTwice = s.endedTwice || s.committed || s.aborted
	s.aborted = true
	return s.abortErr
}

// doc builds a result file whose script_output is the JSON encoding of out.
func doc(out string) string {
	var b strings.Builder
	b.WriteString(`{"script_name":"big.ps1","exit_code":0,"script_output":`)
	b.WriteString(jsonString(out))
	b.WriteString(`,"script_errors":""}`)
	return b.String()
}

func jsonString(s string) string {
	var b bytes.Buffer
	enc := newJSONEncoder(&b)
	if err := enc.Encode(s); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func TestTruncationAndSpill(t *testing.T) {
	const banner = BannerPrefix + `C:\t.txt` + "\r\n"
	long := strings.Repeat("0123456789", 30) // 300 bytes
	euro := strings.Repeat("€", 100)         // 300 bytes, 3-byte runes
	tests := []struct {
		name        string
		output      string // script_output as the script printed it
		opts        Options
		wantClean   string // cleaned output: what the sink must receive
		wantHead    string
		wantTail    string
		wantSpilled bool
	}{
		{name: "under the cap stays inline", output: banner + "abc", opts: Options{InlineMax: 10}, wantClean: "abc"},
		{name: "exactly the cap stays inline", output: banner + long[:100], opts: Options{InlineMax: 100}, wantClean: long[:100]},
		{
			name: "one byte over spills", output: banner + long[:101], opts: Options{InlineMax: 100, PreviewBytes: 10},
			wantClean: long[:101], wantHead: "0123456789", wantTail: "1234567890", wantSpilled: true,
		},
		{
			name: "preview cut on rune boundaries", output: euro + "\u0000\u0000", opts: Options{InlineMax: 50, PreviewBytes: 10},
			wantClean: euro, wantHead: "€€€", wantTail: "€€€", wantSpilled: true,
		},
		{
			name: "preview capped at half of InlineMax", output: long, opts: Options{InlineMax: 20, PreviewBytes: 4096},
			wantClean: long, wantHead: long[:10], wantTail: long[290:], wantSpilled: true,
		},
		{
			name: "banner removed before the cap applies", output: banner + long, opts: Options{InlineMax: 299, PreviewBytes: 5},
			wantClean: long, wantHead: "01234", wantTail: "56789", wantSpilled: true,
		},
		{
			name: "interior NULs counted in the size", output: "a\u0000b" + long, opts: Options{InlineMax: 100, PreviewBytes: 6},
			wantClean: "a" + NULReplacement + "b" + long, wantHead: "a" + NULReplacement + "b0", wantTail: "456789", wantSpilled: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, withSpill := range []bool{true, false} {
				sink := &memSink{}
				opens := 0
				opts := tt.opts
				if withSpill {
					opts.Spill = func() (artifact.Sink, error) { opens++; return sink, nil }
				}
				// One byte at a time, so every chunk boundary is crossed.
				s, prob, err := Parse(iotest.OneByteReader(strings.NewReader(doc(tt.output))), opts)
				if err != nil || prob != nil {
					t.Fatalf("Parse: problem %v, err %v; want neither", prob, err)
				}
				if s.OutputBytes != int64(len(tt.wantClean)) {
					t.Errorf("OutputBytes = %d, want %d", s.OutputBytes, len(tt.wantClean))
				}
				if !tt.wantSpilled {
					if s.Output != tt.wantClean || s.OutputTruncated || opens != 0 || s.OutputObject != nil {
						t.Errorf("got Output %q truncated %v opens %d object %v; want %q inline, no sink", s.Output, s.OutputTruncated, opens, s.OutputObject, tt.wantClean)
					}
					continue
				}
				omitted := len(tt.wantClean) - len(tt.wantHead) - len(tt.wantTail)
				wantOut := tt.wantHead + "\n…[" + itoa(omitted) + " bytes omitted]…\n" + tt.wantTail
				if s.Output != wantOut || !s.OutputTruncated || !utf8.ValidString(s.Output) {
					t.Errorf("Output = %q (truncated %v), want %q", s.Output, s.OutputTruncated, wantOut)
				}
				if !withSpill {
					if s.OutputObject != nil {
						t.Errorf("OutputObject = %v without a Spill, want nil", s.OutputObject)
					}
					continue
				}
				if opens != 1 || !sink.committed || sink.aborted || sink.endedTwice {
					t.Errorf("sink opens %d committed %v aborted %v, want opened once and committed only", opens, sink.committed, sink.aborted)
				}
				if got := sink.buf.String(); got != tt.wantClean {
					t.Errorf("sink content = %q, want %q", got, tt.wantClean)
				}
				sum := sha256.Sum256([]byte(tt.wantClean))
				if s.OutputObject == nil || s.OutputObject.SHA256 != hex.EncodeToString(sum[:]) {
					t.Errorf("OutputObject = %+v, want the committed ref", s.OutputObject)
				}
			}
		})
	}
}

// failingReader serves data, then fails with err instead of io.EOF.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestSpillFailures(t *testing.T) {
	big := doc(strings.Repeat("x", 20000)) // more than the decoder buffers, so the sink opens before the cut
	errRead := errors.New("connection reset")
	errStore := errors.New("store down")
	tests := []struct {
		name        string
		reader      func() io.Reader
		sink        *memSink
		openErr     error
		wantProblem string // problem code, or "" for an error
		wantErr     error
		wantSpillOp string
		wantAborted bool
	}{
		{
			name:   "read error after the sink opened aborts it",
			reader: func() io.Reader { return &failingReader{data: []byte(big[:12000]), err: errRead} },
			sink:   &memSink{}, wantErr: errRead, wantAborted: true,
		},
		{
			name:   "unexpected EOF from the body is a read error",
			reader: func() io.Reader { return &failingReader{data: []byte(big[:12000]), err: io.ErrUnexpectedEOF} },
			sink:   &memSink{}, wantErr: io.ErrUnexpectedEOF, wantAborted: true,
		},
		{
			name:   "truncated file after the sink opened aborts it and is a problem",
			reader: func() io.Reader { return strings.NewReader(big[:12000]) },
			sink:   &memSink{}, wantProblem: CodeInvalidJSON, wantAborted: true,
		},
		{
			name:   "trailing garbage after a spilled output aborts",
			reader: func() io.Reader { return strings.NewReader(big + "x") },
			sink:   &memSink{}, wantProblem: CodeInvalidJSON, wantAborted: true,
		},
		{
			name:   "abort failure after a problem is an error, not hidden behind the problem",
			reader: func() io.Reader { return strings.NewReader(big + "x") },
			sink:   &memSink{abortErr: errStore}, wantErr: errStore, wantSpillOp: "abort", wantAborted: true,
		},
		{
			name:   "open failure",
			reader: func() io.Reader { return strings.NewReader(big) },
			sink:   &memSink{}, openErr: errStore, wantErr: errStore, wantSpillOp: "open",
		},
		{
			name:   "write failure aborts",
			reader: func() io.Reader { return strings.NewReader(big) },
			sink:   &memSink{writeErr: errStore, failAfter: 200}, wantErr: errStore, wantSpillOp: "write", wantAborted: true,
		},
		{
			name:   "commit failure is reported and not followed by abort",
			reader: func() io.Reader { return strings.NewReader(big) },
			sink:   &memSink{commitErr: errStore}, wantErr: errStore, wantSpillOp: "commit",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := Options{InlineMax: 100, Spill: func() (artifact.Sink, error) {
				if tt.openErr != nil {
					return nil, tt.openErr
				}
				return tt.sink, nil
			}}
			s, prob, err := Parse(tt.reader(), opts)
			if s != nil {
				t.Errorf("script = %+v, want nil", s)
			}
			if tt.wantProblem != "" {
				if err != nil || prob == nil || prob.Code != tt.wantProblem {
					t.Fatalf("got problem %+v err %v, want problem %q", prob, err, tt.wantProblem)
				}
			} else {
				if prob != nil || !errors.Is(err, tt.wantErr) {
					t.Fatalf("got problem %+v err %v, want error %v", prob, err, tt.wantErr)
				}
				var se *SpillError
				var re *ReadError
				switch {
				case tt.wantSpillOp != "":
					if !errors.As(err, &se) || se.Op != tt.wantSpillOp {
						t.Errorf("err = %v, want a *SpillError with Op %q", err, tt.wantSpillOp)
					}
				case !errors.As(err, &re):
					t.Errorf("err = %v (%T), want a *ReadError", err, err)
				}
			}
			if tt.sink.aborted != tt.wantAborted || tt.sink.endedTwice {
				t.Errorf("sink aborted = %v (ended twice %v), want %v", tt.sink.aborted, tt.sink.endedTwice, tt.wantAborted)
			}
		})
	}
}

func TestProblemRaw(t *testing.T) {
	tests := []struct {
		name      string
		input     string
		rawMax    int
		wantRaw   string
		wantTrunc bool
	}{
		{name: "short file kept whole", input: "nope", rawMax: 10, wantRaw: "nope"},
		{name: "exactly RawMax is not truncated", input: "0123456789", rawMax: 10, wantRaw: "0123456789"},
		{name: "longer file is cut", input: "x" + strings.Repeat("y", 100), rawMax: 10, wantRaw: "xyyyyyyyyy", wantTrunc: true},
		{name: "problem found early still reads up to RawMax", input: "<" + strings.Repeat("z", 40000), rawMax: 35000, wantRaw: "<" + strings.Repeat("z", 34999), wantTrunc: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, prob, err := Parse(strings.NewReader(tt.input), Options{RawMax: tt.rawMax})
			if err != nil || prob == nil {
				t.Fatalf("got problem %v err %v, want a problem", prob, err)
			}
			got, _ := decodeBase64(prob.RawBase64)
			if got != tt.wantRaw || prob.RawTruncated != tt.wantTrunc {
				t.Errorf("raw = %q truncated %v, want %q %v", got, prob.RawTruncated, tt.wantRaw, tt.wantTrunc)
			}
		})
	}
}

func TestReadErrorBeforeAnything(t *testing.T) {
	errRead := errors.New("boom")
	s, prob, err := Parse(iotest.ErrReader(errRead), testOptions())
	var re *ReadError
	if s != nil || prob != nil || !errors.As(err, &re) || !errors.Is(err, errRead) || re.Offset != 0 {
		t.Errorf("got %v, %v, %v; want a *ReadError at offset 0 wrapping %v", s, prob, err, errRead)
	}
}
