package transcript

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"runtime"
	"testing"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/result"
)

// bigDoc generates a result file with a banner and n lines of output on the fly, without allocating per
// line, so that allocations measured around Parse are Parse's own. It also hashes the cleaned output it
// encodes, for comparison with the sink.
type bigDoc struct {
	stage int
	line  int
	lines int
	buf   bytes.Buffer
	num   [8]byte
	clean hash.Hash
	tmpl  []byte // bigLineClean, converted once: hashes have no WriteString
	size  int64
}

// A line as the script printed it (after an 8-digit number) and as it is encoded in the JSON string.
const (
	bigLineClean   = "  C:\\Windows\\System32\\svchost.exe  pid=1234  état=ok\t€\n"
	bigLineEncoded = `  C:\\Windows\\System32\\svchost.exe  pid=1234  état=ok\t€\n`
)

func newBigDoc(lines int) *bigDoc {
	return &bigDoc{lines: lines, clean: sha256.New(), tmpl: []byte(bigLineClean)}
}

func (g *bigDoc) Read(p []byte) (int, error) {
	for g.buf.Len() < len(p) {
		switch {
		case g.stage == 0:
			g.buf.WriteString(`{"script_name":"big.ps1","exit_code":0,"script_output":"` + BannerPrefix + `C:\\t.txt\r\n`)
			g.stage++
		case g.line < g.lines:
			for i, n := len(g.num)-1, g.line; i >= 0; i, n = i-1, n/10 {
				g.num[i] = byte('0' + n%10)
			}
			g.clean.Write(g.num[:])
			g.clean.Write(g.tmpl)
			g.size += int64(len(g.num) + len(bigLineClean))
			g.buf.Write(g.num[:])
			g.buf.WriteString(bigLineEncoded)
			g.line++
		case g.stage == 1:
			g.buf.WriteString(`\u0000\u0000","script_errors":null}`)
			g.stage++
		default:
			if g.buf.Len() == 0 {
				return 0, io.EOF
			}
			return g.buf.Read(p)
		}
	}
	return g.buf.Read(p)
}

// hashSink keeps only a digest of what it receives.
type hashSink struct {
	h         hash.Hash
	n         int64
	committed bool
}

func (s *hashSink) Write(p []byte) (int, error) { s.n += int64(len(p)); return s.h.Write(p) }
func (s *hashSink) Commit() (*result.ObjectRef, error) {
	s.committed = true
	return &result.ObjectRef{Bucket: "b", Name: "n", Size: s.n, SHA256: fmt.Sprintf("%x", s.h.Sum(nil))}, nil
}
func (s *hashSink) Abort() error { return nil }

// TestBoundedMemory parses a 50 MB output and checks that the bytes allocated during Parse stay a small
// constant, far below the output size, while the sink receives exactly the cleaned output.
func TestBoundedMemory(t *testing.T) {
	const lines = 50<<20/(8+len(bigLineClean)) + 1 // about 50 MB
	gen := newBigDoc(lines)
	sink := &hashSink{h: sha256.New()}
	opts := testOptions()
	opts.Spill = func() (artifact.Sink, error) { return sink, nil }

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, prob, err := Parse(gen, opts)
	runtime.ReadMemStats(&after)
	if err != nil || prob != nil {
		t.Fatalf("Parse: problem %v, err %v", prob, err)
	}
	if gen.size < 50<<20 {
		t.Fatalf("generated %d bytes of output, want at least 50 MB", gen.size)
	}
	// Parse needs about 150 KB with the default limits; an implementation holding the output would
	// allocate at least its 50 MB.
	allocated := after.TotalAlloc - before.TotalAlloc
	const limit = 4 << 20
	if allocated > limit {
		t.Errorf("allocated %d bytes for a %d byte output, want at most %d", allocated, gen.size, limit)
	}
	wantSum := fmt.Sprintf("%x", gen.clean.Sum(nil))
	if !s.OutputTruncated || s.OutputBytes != gen.size || sink.n != gen.size || !sink.committed ||
		s.OutputObject == nil || s.OutputObject.SHA256 != wantSum {
		t.Errorf("got truncated %v bytes %d sink %d committed %v object %+v; want true %d %d true sha %s",
			s.OutputTruncated, s.OutputBytes, sink.n, sink.committed, s.OutputObject, gen.size, gen.size, wantSum)
	}
	if s.TranscriptPath != `C:\t.txt` || s.TrailingNULs != 2 || len(s.Output) > 9<<10 {
		t.Errorf("got path %q NULs %d preview %d bytes; want C:\\t.txt, 2, at most 9 KiB", s.TranscriptPath, s.TrailingNULs, len(s.Output))
	}
}
