package getfile

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/result"
)

// memSink is an in-memory artifact.Sink that records how it ended.
type memSink struct {
	buf       bytes.Buffer
	meta      map[string]string
	committed bool
	aborted   bool
	writeErr  error
}

func (m *memSink) Write(p []byte) (int, error) {
	if m.writeErr != nil {
		return 0, m.writeErr
	}
	return m.buf.Write(p)
}

func (m *memSink) Annotate(meta map[string]string) { m.meta = meta }

func (m *memSink) Commit() (*result.ObjectRef, error) {
	m.committed = true
	sum := sha256.Sum256(m.buf.Bytes())
	return &result.ObjectRef{Bucket: "mem", Name: "obj", Size: int64(m.buf.Len()), SHA256: hex.EncodeToString(sum[:])}, nil
}

func (m *memSink) Abort() error { m.aborted = true; return nil }

// testOptions are the caps of the default configuration (LR_GETFILE_MAX_BYTES, LR_GETFILE_MAX_RATIO) with
// the given inline cap: Process has no defaults of its own, so every test says what it runs with.
func testOptions(inlineMax int64, spill artifact.Opener) Options {
	return Options{InlineMax: inlineMax, MaxBytes: 4 << 30, MaxRatio: 200, Spill: spill}
}

// opener returns an Opener handing out sink, and a counter of how often it was called.
func opener(sink *memSink) (artifact.Opener, *int) {
	calls := new(int)
	return func() (artifact.Sink, error) { *calls++; return sink, nil }, calls
}

func gz(t *testing.T, members ...[]byte) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, m := range members {
		w := gzip.NewWriter(&b)
		if _, err := w.Write(m); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// pseudoRandom returns n deterministic, incompressible bytes.
func pseudoRandom(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestProcessContent(t *testing.T) {
	const inlineMax = 1000
	small := []byte("hello, world\n")
	exact := pseudoRandom(inlineMax)
	over := pseudoRandom(inlineMax + 1)
	big := pseudoRandom(200 << 10)

	tests := []struct {
		name       string
		gz         []byte
		fileName   string
		content    []byte
		withSink   bool
		wantInline bool
		wantName   string
		wantReason string
	}{
		{name: "small inline", gz: gz(t, small), fileName: "notes.txt.gz", content: small, wantInline: true, wantName: "notes.txt"},
		{name: "empty content", gz: gz(t, nil), fileName: "empty.gz", content: []byte{}, wantInline: true, wantName: "empty"},
		{name: "exactly inline max", gz: gz(t, exact), content: exact, withSink: true, wantInline: true},
		{name: "inline max plus one to sink", gz: gz(t, over), fileName: "a.bin.gz", content: over, withSink: true,
			wantName: "a.bin", wantReason: "stored in the object store"},
		{name: "large to sink", gz: gz(t, big), fileName: "no-suffix", content: big, withSink: true,
			wantName: "no-suffix", wantReason: "stored in the object store"},
		{name: "no sink", gz: gz(t, big), content: big,
			wantReason: "content larger than inline cap (1000 bytes); no object store configured"},
		{name: "multi-member", gz: gz(t, small, over, small), content: bytes.Join([][]byte{small, over, small}, nil),
			withSink: true, wantReason: "stored in the object store"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			opts := testOptions(inlineMax, nil)
			var calls *int
			if tt.withSink {
				opts.Spill, calls = opener(sink)
			}
			f, prob, err := Process(context.Background(), bytes.NewReader(tt.gz), tt.fileName, opts)
			if err != nil || prob != nil {
				t.Fatalf("Process: problem %+v, err %v; want neither", prob, err)
			}
			if f.Name != tt.wantName {
				t.Errorf("Name = %q, want %q", f.Name, tt.wantName)
			}
			if f.Bytes != int64(len(tt.content)) {
				t.Errorf("Bytes = %d, want %d", f.Bytes, len(tt.content))
			}
			if f.CompressedBytes != int64(len(tt.gz)) {
				t.Errorf("CompressedBytes = %d, want %d", f.CompressedBytes, len(tt.gz))
			}
			if want := hexSHA(tt.content); f.SHA256 != want {
				t.Errorf("SHA256 = %s, want %s", f.SHA256, want)
			}
			if f.Inline != tt.wantInline {
				t.Errorf("Inline = %v, want %v", f.Inline, tt.wantInline)
			}
			if !strings.Contains(f.NotInlineReason, tt.wantReason) || (tt.wantReason == "") != (f.NotInlineReason == "") {
				t.Errorf("NotInlineReason = %q, want it to contain %q", f.NotInlineReason, tt.wantReason)
			}
			if tt.wantInline {
				got, err := base64.StdEncoding.DecodeString(f.ContentBase64)
				if err != nil || !bytes.Equal(got, tt.content) {
					t.Errorf("ContentBase64 decodes to %d bytes (err %v), want the %d content bytes", len(got), err, len(tt.content))
				}
				if calls != nil && *calls != 0 {
					t.Errorf("sink opened %d times for inline content, want 0", *calls)
				}
				if f.Object != nil {
					t.Errorf("Object = %+v for inline content, want nil", f.Object)
				}
				return
			}
			if f.ContentBase64 != "" {
				t.Errorf("ContentBase64 has %d chars for content over the inline cap, want none", len(f.ContentBase64))
			}
			if !tt.withSink {
				if f.Object != nil {
					t.Errorf("Object = %+v without a sink, want nil", f.Object)
				}
				return
			}
			if *calls != 1 || !sink.committed || sink.aborted {
				t.Errorf("sink opened %d times, committed %v, aborted %v; want 1, true, false", *calls, sink.committed, sink.aborted)
			}
			if !bytes.Equal(sink.buf.Bytes(), tt.content) {
				t.Errorf("sink got %d bytes differing from the %d content bytes", sink.buf.Len(), len(tt.content))
			}
			if f.Object == nil || f.Object.SHA256 != f.SHA256 || f.Object.Size != f.Bytes {
				t.Errorf("Object = %+v, want size %d sha256 %s", f.Object, f.Bytes, f.SHA256)
			}
			if got, want := sink.meta[artifact.MetaCompressedBytes], f.CompressedBytes; got != strconv.FormatInt(want, 10) {
				t.Errorf("annotated compressed bytes = %q, want %d", got, want)
			}
			if got := sink.meta[artifact.MetaOriginalName]; got != tt.wantName {
				t.Errorf("annotated original name = %q, want %q", got, tt.wantName)
			}
		})
	}
}

func TestProcessBadInput(t *testing.T) {
	content := pseudoRandom(10000)
	good := gz(t, content)
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-6] ^= 0xff // CRC-32 sits in the 8-byte trailer, before ISIZE.

	tests := []struct {
		name     string
		in       []byte
		wantCode string
		wantMsg  string
		wantRaw  string
	}{
		{name: "not gzip", in: []byte(`{"script_output":"x"}`), wantCode: CodeNotGzip, wantMsg: "not a gzip file",
			wantRaw: `{"script_output":"x"}`},
		{name: "empty", in: nil, wantCode: CodeNotGzip, wantMsg: "empty"},
		{name: "truncated", in: good[:len(good)/2], wantCode: CodeCorruptGzip, wantMsg: "truncated"},
		{name: "bad checksum", in: badCRC, wantCode: CodeCorruptGzip, wantMsg: "checksum"},
		{name: "garbage after member", in: append(bytes.Clone(good), "trailing junk!!"...), wantCode: CodeCorruptGzip,
			wantMsg: "after a gzip member"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			spill, _ := opener(sink)
			f, prob, err := Process(context.Background(), bytes.NewReader(tt.in), "x.gz", testOptions(1000, spill))
			if err != nil {
				t.Fatalf("Process err = %v, want a problem instead", err)
			}
			if prob == nil || prob.Code != tt.wantCode || !strings.Contains(prob.Message, tt.wantMsg) {
				t.Fatalf("problem = %+v, want code %q with message containing %q", prob, tt.wantCode, tt.wantMsg)
			}
			if OutcomeFor(prob) != result.OutcomeParseError {
				t.Errorf("OutcomeFor = %q, want %q", OutcomeFor(prob), result.OutcomeParseError)
			}
			if raw, _ := base64.StdEncoding.DecodeString(prob.RawBase64); string(raw) != tt.wantRaw {
				t.Errorf("raw preview = %q, want %q", raw, tt.wantRaw)
			}
			if f == nil || f.CompressedBytes != int64(len(tt.in)) || f.Inline || f.SHA256 != "" {
				t.Errorf("file = %+v, want compressed bytes %d, not inline, no digest", f, len(tt.in))
			}
			if sink.committed {
				t.Error("sink committed for a corrupt file, want it aborted or never opened")
			}
			if sink.buf.Len() > 0 && !sink.aborted {
				t.Error("sink received data but was not aborted")
			}
		})
	}
}

// gzipStream gzips n bytes from gen on the fly through a pipe, so that neither the content nor the gzip is
// ever in memory. The returned stop closes the pipe and waits for the generator.
func gzipStream(t testing.TB, n int64, gen io.Reader) (io.Reader, func()) {
	t.Helper()
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() {
		w, _ := gzip.NewWriterLevel(pw, gzip.BestSpeed)
		_, err := io.Copy(w, io.LimitReader(gen, n))
		if err == nil {
			err = w.Close()
		}
		pw.CloseWithError(err)
	})
	return pr, func() { pr.Close(); wg.Wait() }
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// randReader yields incompressible pseudo-random bytes.
type randReader struct{ r *rand.Rand }

func (x randReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(x.r.Uint32())
	}
	return len(b), nil
}

func TestProcessCaps(t *testing.T) {
	tests := []struct {
		name      string
		n         int64
		gen       io.Reader
		opts      Options
		wantCode  string
		wantBelow int64 // decompression must stop before this many bytes
	}{
		{name: "bomb by ratio", n: 100 << 20, gen: zeros{}, opts: testOptions(64<<10, nil),
			wantCode: CodeDecompressionBomb, wantBelow: 2 << 20},
		{name: "bomb by absolute cap", n: 8 << 20, gen: randReader{rand.New(rand.NewPCG(3, 4))},
			opts: Options{InlineMax: 64 << 10, MaxBytes: 3 << 20, MaxRatio: 200}, wantCode: CodeTooLarge, wantBelow: 3<<20 + bufSize + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, stop := gzipStream(t, tt.n, tt.gen)
			defer stop()
			sink := &memSink{}
			tt.opts.Spill, _ = opener(sink)
			f, prob, err := Process(context.Background(), r, "bomb.gz", tt.opts)
			if err != nil {
				t.Fatalf("Process err = %v, want a problem", err)
			}
			if prob == nil || prob.Code != tt.wantCode {
				t.Fatalf("problem = %+v, want code %q", prob, tt.wantCode)
			}
			if OutcomeFor(prob) != result.OutcomeTooLarge {
				t.Errorf("OutcomeFor = %q, want %q", OutcomeFor(prob), result.OutcomeTooLarge)
			}
			if f.Bytes >= tt.wantBelow || f.Bytes == 0 || f.CompressedBytes == 0 {
				t.Errorf("stopped at %d bytes (%d compressed), want 0 < bytes < %d", f.Bytes, f.CompressedBytes, tt.wantBelow)
			}
			if !strings.Contains(prob.Message, strconv.FormatInt(f.Bytes, 10)) {
				t.Errorf("message %q does not give the size so far (%d)", prob.Message, f.Bytes)
			}
			if !sink.aborted || sink.committed {
				t.Errorf("sink aborted %v committed %v, want aborted only", sink.aborted, sink.committed)
			}
			if f.Object != nil || f.Inline || f.SHA256 != "" {
				t.Errorf("file = %+v, want no object, not inline, no digest", f)
			}
		})
	}
}

// failingReader returns its data, then err.
type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(b []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(b, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestProcessErrors(t *testing.T) {
	errBoom := errors.New("connection reset")
	data := gz(t, pseudoRandom(100<<10))
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name      string
		ctx       context.Context
		r         io.Reader
		sink      *memSink
		want      error
		wantAbort bool
	}{
		{name: "read error after spill", ctx: context.Background(), r: &failingReader{data: data[:len(data)/2], err: errBoom},
			sink: &memSink{}, want: errBoom, wantAbort: true},
		{name: "read error in header", ctx: context.Background(), r: &failingReader{data: data[:3], err: errBoom},
			sink: &memSink{}, want: errBoom},
		{name: "sink write error", ctx: context.Background(), r: bytes.NewReader(data),
			sink: &memSink{writeErr: errBoom}, want: errBoom, wantAbort: true},
		{name: "context cancelled", ctx: canceled, r: bytes.NewReader(data), sink: &memSink{}, want: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spill, _ := opener(tt.sink)
			f, prob, err := Process(tt.ctx, tt.r, "x.gz", testOptions(1000, spill))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if f != nil || prob != nil {
				t.Errorf("file %+v problem %+v, want nil with an error", f, prob)
			}
			if tt.sink.aborted != tt.wantAbort || tt.sink.committed {
				t.Errorf("sink aborted %v committed %v, want aborted %v and not committed", tt.sink.aborted, tt.sink.committed, tt.wantAbort)
			}
		})
	}
}
