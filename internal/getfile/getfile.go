// Package getfile turns the result of a GetFile command (a gzip of the collected file, up to several GB)
// into a result.File: it gunzips as a stream, never holding the file in memory, hashes the content, keeps
// small files inline and hands large ones to an artifact sink, and stops decompression bombs early.
package getfile

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/result"
)

// RatioFloor is the decompressed size from which Options.MaxRatio applies, so that small, highly
// compressible files (a text file of spaces) are never flagged. It is a fixed rule, not a setting: under
// 1 MiB a "bomb" is harmless.
const RatioFloor = 1 << 20

// Problem codes returned by Process.
const (
	// CodeNotGzip: the download is not a gzip stream (or is empty).
	CodeNotGzip = "not_gzip"
	// CodeCorruptGzip: the gzip stream is truncated, fails its checksum, or holds invalid deflate data.
	CodeCorruptGzip = "corrupt_gzip"
	// CodeDecompressionBomb: the content expands far beyond what its compressed size makes plausible.
	CodeDecompressionBomb = "decompression_bomb"
	// CodeTooLarge: the content exceeds the absolute cap on decompressed bytes.
	CodeTooLarge = "too_large"
)

// rawPreviewMax is how many leading bytes of an unparseable download go into Problem.RawBase64.
const rawPreviewMax = 512

// bufSize is the size of the one read buffer Process uses, whatever the size of the file.
const bufSize = 32 << 10

// Options sets the caps of Process. Every field is used as given (zero means zero): the defaults live in
// the configuration (internal/config: LR_INLINE_MAX_BYTES, LR_GETFILE_MAX_BYTES, LR_GETFILE_MAX_RATIO).
type Options struct {
	// InlineMax is the largest content that goes inline in the event as base64. 0 keeps no content inline:
	// every non-empty file goes to Spill (or, without one, is only described by its size and digest).
	InlineMax int64
	// MaxBytes caps the decompressed size, whatever the ratio (GetFile collects up to 3 GB).
	MaxBytes int64
	// MaxRatio caps decompressed/compressed bytes, checked once more than RatioFloor bytes were
	// decompressed.
	MaxRatio float64
	// Spill receives the whole decompressed content when it is larger than InlineMax; nil means no object
	// store: such content is then only described (size, digest).
	Spill artifact.Opener
}

// OutcomeFor maps a Problem returned by Process to the result outcome it implies.
func OutcomeFor(p *result.Problem) string {
	switch {
	case p == nil:
		return result.OutcomeRelayed
	case p.Code == CodeDecompressionBomb || p.Code == CodeTooLarge:
		return result.OutcomeTooLarge
	default:
		return result.OutcomeParseError
	}
}

// Process gunzips r as a stream and describes the content as a result.File. name is the file name from
// Content-Disposition; a trailing ".gz" is removed.
//
// A content problem (not gzip, corrupt gzip, decompression bomb, too large) is returned as a Problem with a
// File describing what was read so far, and a nil error: retrying would not help. err is reserved for
// failures worth a retry: reading r, the sink, or ctx ending. Whenever Process does not commit the sink it
// aborts it, so no partial object stays behind.
//
// Memory use is fixed: one read buffer plus at most InlineMax bytes of inline content.
func Process(ctx context.Context, r io.Reader, name string, opts Options) (*result.File, *result.Problem, error) {
	p := &processor{
		ctx:  ctx,
		opts: opts,
		cr:   &countingReader{r: r},
		file: &result.File{Name: strings.TrimSuffix(name, ".gz")},
	}
	defer p.abort()
	prob, err := p.run()
	p.file.CompressedBytes = p.cr.n
	if err != nil {
		return nil, nil, err
	}
	return p.file, prob, nil
}

// processor holds the state of one Process call.
type processor struct {
	ctx    context.Context
	opts   Options
	cr     *countingReader
	file   *result.File
	inline bytes.Buffer
	sink   artifact.Sink
	// spilled is set once the content passed InlineMax, whether or not a sink took it.
	spilled bool
	total   int64
}

func (p *processor) run() (*result.Problem, error) {
	zr, err := gzip.NewReader(p.cr)
	if err != nil {
		if rerr := p.cr.readErr(); rerr != nil {
			return nil, rerr
		}
		return p.notGzip(err), nil
	}
	defer zr.Close()
	h := sha256.New()
	buf := make([]byte, bufSize)
	for {
		if err := p.ctx.Err(); err != nil {
			return nil, err
		}
		n, rerr := zr.Read(buf)
		if n > 0 {
			p.total += int64(n)
			if prob := p.checkCaps(); prob != nil {
				return prob, nil
			}
			h.Write(buf[:n])
			if err := p.keep(buf[:n]); err != nil {
				return nil, err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if err := p.cr.readErr(); err != nil {
				return nil, err
			}
			return p.corrupt(rerr), nil
		}
	}
	p.file.Bytes = p.total
	p.file.SHA256 = hex.EncodeToString(h.Sum(nil))
	p.file.CompressedBytes = p.cr.n
	return nil, p.finish()
}

// checkCaps stops decompression as soon as the content passes a cap, before the bytes that pass it are
// written anywhere.
func (p *processor) checkCaps() *result.Problem {
	p.file.Bytes = p.total
	if p.total > p.opts.MaxBytes {
		p.file.NotInlineReason = "content exceeds the decompressed size cap"
		return &result.Problem{Code: CodeTooLarge, Message: fmt.Sprintf(
			"decompressed content exceeds the cap of %d bytes (%d bytes decompressed from %d compressed so far)",
			p.opts.MaxBytes, p.total, p.cr.n)}
	}
	if p.total > RatioFloor && float64(p.total) > p.opts.MaxRatio*float64(p.cr.n) {
		p.file.NotInlineReason = "decompression bomb"
		return &result.Problem{Code: CodeDecompressionBomb, Message: fmt.Sprintf(
			"decompression ratio above %g: %d bytes decompressed from %d compressed so far",
			p.opts.MaxRatio, p.total, p.cr.n)}
	}
	return nil
}

// keep puts b in the inline buffer while the content fits InlineMax, and in the sink (opened on first need,
// starting with what was buffered) once it does not.
func (p *processor) keep(b []byte) error {
	if !p.spilled {
		if p.total <= p.opts.InlineMax {
			p.inline.Write(b)
			return nil
		}
		p.spilled = true
		if p.opts.Spill != nil {
			sink, err := p.opts.Spill()
			if err != nil {
				return fmt.Errorf("open sink for %q: %w", p.file.Name, err)
			}
			p.sink = sink
			if _, err := sink.Write(p.inline.Bytes()); err != nil {
				return fmt.Errorf("write sink for %q: %w", p.file.Name, err)
			}
		}
		p.inline = bytes.Buffer{}
	}
	if p.sink == nil {
		return nil
	}
	if _, err := p.sink.Write(b); err != nil {
		return fmt.Errorf("write sink for %q: %w", p.file.Name, err)
	}
	return nil
}

// finish fills in where the content went: inline, the sink, or nowhere. Empty content is inline (there is
// nothing to store), whatever InlineMax.
func (p *processor) finish() error {
	f := p.file
	why := fmt.Sprintf("content larger than inline cap (%d bytes)", p.opts.InlineMax)
	if p.opts.InlineMax <= 0 {
		why = "no content inline (inline cap 0 bytes)"
	}
	switch {
	case !p.spilled:
		f.Inline = true
		f.ContentBase64 = base64.StdEncoding.EncodeToString(p.inline.Bytes())
	case p.sink == nil:
		f.NotInlineReason = why + "; no object store configured"
	default:
		if a, ok := p.sink.(artifact.Annotator); ok {
			a.Annotate(map[string]string{
				artifact.MetaOriginalName:    f.Name,
				artifact.MetaCompressedBytes: strconv.FormatInt(f.CompressedBytes, 10),
			})
		}
		sink := p.sink
		p.sink = nil // Committed or not, Commit is the one call this sink gets.
		ref, err := sink.Commit()
		if err != nil {
			return fmt.Errorf("commit sink for %q: %w", f.Name, err)
		}
		if ref.Size != f.Bytes || !strings.EqualFold(ref.SHA256, f.SHA256) {
			return fmt.Errorf("sink for %q stored %d bytes sha256 %s, want %d bytes sha256 %s",
				f.Name, ref.Size, ref.SHA256, f.Bytes, f.SHA256)
		}
		f.Object = ref
		f.NotInlineReason = why + "; stored in the object store"
	}
	return nil
}

// abort discards an open sink that was not committed.
func (p *processor) abort() {
	if p.sink != nil {
		_ = p.sink.Abort()
		p.sink = nil
	}
}

func (p *processor) notGzip(err error) *result.Problem {
	raw := p.cr.head
	msg := "download is empty, not a gzip file"
	if len(raw) > 0 {
		msg = fmt.Sprintf("download is not a gzip file: %v", err)
	}
	return &result.Problem{
		Code:         CodeNotGzip,
		Message:      msg,
		RawBase64:    base64.StdEncoding.EncodeToString(raw),
		RawTruncated: p.cr.n > int64(len(raw)),
	}
}

func (p *processor) corrupt(err error) *result.Problem {
	what := "corrupt"
	var ce flate.CorruptInputError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF):
		what = "truncated"
	case errors.Is(err, gzip.ErrChecksum):
		what = "checksum mismatch"
	case errors.Is(err, gzip.ErrHeader):
		what = "invalid data after a gzip member"
	case errors.As(err, &ce):
		what = "invalid deflate data"
	}
	return &result.Problem{Code: CodeCorruptGzip, Message: fmt.Sprintf(
		"gzip stream %s after %d bytes decompressed from %d compressed: %v", what, p.total, p.cr.n, err)}
}

// countingReader counts the compressed bytes gzip consumes, keeps the first few for a not-gzip preview, and
// remembers an error from the underlying reader so that it is not mistaken for corrupt gzip.
type countingReader struct {
	r    io.Reader
	n    int64
	head []byte
	err  error
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	if n > 0 && len(c.head) < rawPreviewMax {
		c.head = append(c.head, b[:min(n, rawPreviewMax-len(c.head))]...)
	}
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}

// readErr returns the underlying reader's error, if any (EOF is not one).
func (c *countingReader) readErr() error {
	if c.err == nil {
		return nil
	}
	return fmt.Errorf("read gzip download: %w", c.err)
}
