// Package transcript parses the result file of a live response RunScript command: a JSON object with the
// script name, exit code, output and errors.
//
// The file is read as a stream with a small hand-written tokenizer, because a script can print hundreds of
// megabytes and encoding/json would hold the whole document (or at least the whole script_output string) in
// memory. Memory use is O(InlineMax + PreviewBytes + RawMax) whatever the size of the file; output larger
// than InlineMax is kept as a head and tail preview and, when a Spill opener is configured, streamed whole
// into the object store.
//
// The output goes through a cleaning pipeline on its way: string escapes are decoded, invalid UTF-8 becomes
// U+FFFD, NUL characters are handled (see Parse), and the PowerShell transcript banner line is removed.
package transcript

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/result"
)

// Problem codes set in result.Problem.Code. Callers branch on these, never on the message.
const (
	// CodeEmptyFile: the file is empty or holds only whitespace.
	CodeEmptyFile = "empty_file"
	// CodeInvalidJSON: the file is not valid JSON (syntax error, truncated file, raw control character in
	// a string, trailing data after the object, or a top-level value that is not an object).
	CodeInvalidJSON = "invalid_json"
	// CodeUnsupportedJSON: valid JSON this parser refuses, i.e. nesting deeper than MaxDepth.
	CodeUnsupportedJSON = "unsupported_json"
	// CodeUnexpectedType: a known key holds a value of the wrong type (e.g. script_output is a number, or
	// exit_code is not an integer nor a string holding one).
	CodeUnexpectedType = "unexpected_type"
	// CodeUnrecognizedFormat: a JSON object with none of the known keys, e.g. a format this relay has not
	// seen yet; the raw bytes are kept so nothing is lost.
	CodeUnrecognizedFormat = "unrecognized_format"
)

// MaxDepth is the deepest nesting of arrays and objects accepted in skipped values (the same limit as
// encoding/json), so that a hostile file cannot make the skipper grow its stack without bound.
const MaxDepth = 10000

// BannerPrefix starts the first line of a Windows RunScript output: the sensor wraps every library script
// in Start-Transcript, whose message is not part of what the script printed.
const BannerPrefix = "Transcript started, output file is "

// maxBannerLine bounds the bytes held while deciding whether the first line is the banner; a first line
// longer than this is kept as ordinary output.
const maxBannerLine = 32 << 10

// NULReplacement replaces NUL characters found inside the output (not at its end): SIEMs and some JSON
// stores reject NULs, and U+2400 SYMBOL FOR NULL keeps them visible and countable, unlike deleting them,
// and distinct from U+FFFD, which means invalid UTF-8.
const NULReplacement = "\u2400"

// Options tunes Parse. Every limit is used as given: zero means zero, and the configuration
// (internal/config, LR_INLINE_MAX_BYTES, LR_PREVIEW_BYTES, LR_RAW_MAX_BYTES) is where their defaults live.
// A negative limit counts as zero.
type Options struct {
	// InlineMax is the largest cleaned output, in bytes, kept whole in Script.Output. Errors are capped at
	// the same size. 0 keeps no output and no errors text at all: a non-empty output goes to Spill only,
	// and the result carries its size (and, with a Spill, the object reference and digest).
	InlineMax int
	// PreviewBytes is how many bytes of the head and of the tail of a larger output are kept in
	// Script.Output. It is capped at InlineMax/2 (a rule, not a default) so a preview is never larger than
	// an inline output; with 0 the output of a spilled result is "".
	PreviewBytes int
	// RawMax is how many raw bytes of an unparseable file are kept in Problem.RawBase64.
	RawMax int
	// Spill, when set, receives the whole cleaned output once it turns out to be larger than InlineMax;
	// it is opened lazily, so small outputs never touch the store. Nil means no store: a large output is
	// then only previewed.
	Spill artifact.Opener
}

// normalized applies the rules that tie the limits together; it fills in nothing.
func (o Options) normalized() Options {
	o.InlineMax, o.RawMax = max(o.InlineMax, 0), max(o.RawMax, 0)
	o.PreviewBytes = min(max(o.PreviewBytes, 0), o.InlineMax/2)
	return o
}

// ReadError reports that reading the result file failed (including io.ErrUnexpectedEOF from a cut
// download); the download can be retried.
type ReadError struct {
	// Offset is the number of bytes of the file consumed before the failure.
	Offset int64
	Err    error
}

func (e *ReadError) Error() string {
	return fmt.Sprintf("transcript: read result file at byte offset %d: %v", e.Offset, e.Err)
}

func (e *ReadError) Unwrap() error { return e.Err }

// SpillError reports that the output sink failed; Op is "open", "write", "commit" or "abort". The sink
// has been ended (aborted, or committed when Commit itself failed), so parsing again is safe.
type SpillError struct {
	Op  string
	Err error
}

func (e *SpillError) Error() string {
	return fmt.Sprintf("transcript: %s output sink: %v", e.Op, e.Err)
}

func (e *SpillError) Unwrap() error { return e.Err }

// Parse reads one RunScript result file from r.
//
// A malformed file is not an error: it gives (nil, problem, nil) with problem.Code one of the Code*
// constants, a message naming what is wrong and where (byte offset, line and column), and the first
// RawMax raw bytes of the file (RawTruncated when the file is longer). err is a *ReadError when reading r
// fails and a *SpillError when the sink fails, so the caller can retry the download; in both cases the
// sink, if opened, has been aborted.
//
// Semantics a caller relies on:
//   - Keys: script_name or name, exit_code, script_output, script_errors or script_error. When a key
//     appears twice, the first occurrence wins. Unknown keys (with any nested value) are skipped.
//   - exit_code may be a number or a string holding one; missing or null gives a nil ExitCode.
//   - ScriptName is capped at 1 KiB, marked like Errors when cut.
//   - null or "" script_errors give Errors ""; Errors longer than InlineMax is cut on a rune boundary and
//     ends with "\n…[N bytes omitted]" (with InlineMax 0 it is "": ErrorsTruncated and ErrorsBytes say
//     how much there was).
//   - The first output line, when it starts with BannerPrefix, is removed and the rest of it (without a
//     trailing \r) goes to TranscriptPath.
//   - NULs at the very end of a string are stripped (counted in TrailingNULs for the output); a NUL
//     followed by anything else is replaced by NULReplacement, so no field ever holds a NUL.
//   - Invalid UTF-8 and lone UTF-16 surrogate escapes become U+FFFD and set InvalidUTF8 (for the name,
//     output or errors).
//   - OutputBytes is the size of the cleaned output. Up to InlineMax it is all in Output, and OutputJSON
//     holds it decoded (numbers as json.Number) when it is one JSON object or array. Beyond, Output is
//     head + "\n…[N bytes omitted]…\n" + tail ("" when PreviewBytes is 0), OutputTruncated is set, and
//     with a Spill the whole cleaned output is committed to the sink and referenced in OutputObject. With
//     InlineMax 0 every non-empty output takes this path; an empty output needs no object.
//   - A leading UTF-8 byte order mark is skipped.
//
// Parse keeps no state between calls and is safe for concurrent use.
func Parse(r io.Reader, opts Options) (*result.Script, *result.Problem, error) {
	opts = opts.normalized()
	p := newParser(r, opts)
	err := p.parseDocument()
	if err == nil {
		var s *result.Script
		s, err = p.script()
		if err == nil {
			return s, nil, nil
		}
	}
	if sink := p.out.coll.sink; sink != nil {
		p.out.coll.sink = nil
		if abortErr := sink.Abort(); abortErr != nil {
			// A torn object may be left behind: report it as an error even when the file itself was
			// malformed, so that it is not hidden behind a Problem.
			return nil, nil, errors.Join(err, &SpillError{Op: "abort", Err: abortErr})
		}
	}
	var se *syntaxError
	if !errors.As(err, &se) {
		return nil, nil, err
	}
	if err := p.drainRaw(); err != nil {
		return nil, nil, err
	}
	return nil, &result.Problem{
		Code:         se.code,
		Message:      se.msg,
		RawBase64:    base64.StdEncoding.EncodeToString(p.src.raw),
		RawTruncated: p.src.extra,
	}, nil
}

// script assembles the result once the whole document has been read.
func (p *parser) script() (*result.Script, error) {
	if p.typeErr != nil {
		return nil, p.typeErr
	}
	if !p.seenKnown {
		msg := "the JSON object has none of the keys script_output, script_name, exit_code, script_errors"
		if len(p.unknownKeys) > 0 {
			msg += fmt.Sprintf(" (keys seen: %q)", p.unknownKeys)
		}
		return nil, &syntaxError{code: CodeUnrecognizedFormat, msg: msg}
	}
	s := &result.Script{
		ScriptName:     p.name,
		ExitCode:       p.exitCode,
		TranscriptPath: p.out.banner.path,
		Errors:         p.errText,
		TrailingNULs:   p.out.nul.trailing,
		InvalidUTF8:    p.invalidUTF8,
	}
	if p.errBytes > int64(len(s.Errors)) || (p.errBytes > 0 && !p.errs.coll.complete()) {
		// Errors beyond InlineMax are cut by the parser (their head is kept): say so, with the whole size.
		s.ErrorsTruncated, s.ErrorsBytes = true, p.errBytes
	}
	c := &p.out.coll
	s.OutputBytes = c.total
	if !c.over {
		s.Output = string(c.buf)
		s.OutputJSON = decodeJSONOutput(c.buf)
		return s, nil
	}
	s.OutputTruncated = true
	head := cutHead(c.buf[:c.preview])
	tail := cutTail(c.tail())
	if len(head)+len(tail) > 0 {
		omitted := c.total - int64(len(head)) - int64(len(tail))
		s.Output = string(head) + fmt.Sprintf("\n…[%d bytes omitted]…\n", omitted) + string(tail)
	}
	// With nothing kept (PreviewBytes 0, as with LR_INLINE_MAX_BYTES=0) Output stays "": OutputBytes and
	// OutputTruncated already say everything a marker would.
	if c.sink != nil {
		sink := c.sink
		c.sink = nil // Commit ends the sink whatever it returns; it must not be aborted after.
		ref, err := sink.Commit()
		if err != nil {
			return nil, &SpillError{Op: "commit", Err: err}
		}
		s.OutputObject = ref
	}
	return s, nil
}

// decodeJSONOutput returns the output decoded when it is exactly one JSON object or array (surrounding
// whitespace allowed), else nil. UseNumber keeps big integers such as 64-bit ids exact.
func decodeJSONOutput(b []byte) any {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || (t[0] != '{' && t[0] != '[') {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil
	}
	return v
}

// cutHead drops an incomplete UTF-8 sequence at the end of b (b is otherwise valid UTF-8).
func cutHead(b []byte) []byte {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i]
			}
			return b
		}
	}
	return b
}

// cutTail drops continuation bytes at the start of b, so that it starts on a rune boundary.
func cutTail(b []byte) []byte {
	for i := 0; i < len(b) && i < utf8.UTFMax; i++ {
		if utf8.RuneStart(b[i]) {
			return b[i:]
		}
	}
	if len(b) > 0 && !utf8.RuneStart(b[0]) {
		return nil
	}
	return b
}
