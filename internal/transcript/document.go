package transcript

// The document: the parser's per-file state and the walk over the transcript's top-level object, its known
// keys and the values they must hold.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// outputPipeline is the cleaning chain of script_output: NULs, then the banner, then the collector.
type outputPipeline struct {
	nul    nulFilter
	banner bannerFilter
	coll   outputCollector
}

// textPipeline is the cleaning chain of the other kept strings: NULs, then a capped collector.
type textPipeline struct {
	nul  nulFilter
	coll capCollector
}

// parser holds all per-file state; it is allocated once per Parse, so the tokenizer itself allocates
// nothing per token.
type parser struct {
	br  *bufio.Reader
	src sourceReader

	off       int64 // bytes consumed
	line      int64 // 1-based line of off
	lineStart int64 // offset of the first byte of the current line

	ctx     int
	key     [64]byte // the current top-level key, for messages
	keyLen  int
	invalid bool // the last string read had invalid UTF-8 or a lone surrogate

	scratch [4 << 10]byte
	n       int // bytes pending in scratch

	keyc    capCollector
	numc    capCollector
	keyBuf  [64]byte
	numBuf  [40]byte
	lineBuf [512]byte
	nameBuf [128]byte
	stack   []byte
	stackB  [64]byte

	out     outputPipeline
	errs    textPipeline
	nameTxt textPipeline

	// Fields gathered from the document.
	seenOutput, seenErrors, seenName, seenExit bool
	seenKnown                                  bool
	unknownKeys                                []string
	name                                       string
	exitCode                                   *int
	errText                                    string
	errBytes                                   int64 // size of the whole script_errors
	invalidUTF8                                bool
	typeErr                                    *syntaxError
}

func newParser(r io.Reader, opts Options) *parser {
	p := &parser{line: 1}
	p.src = sourceReader{r: r, max: opts.RawMax, raw: make([]byte, 0, min(opts.RawMax, 8<<10))}
	p.br = bufio.NewReaderSize(&p.src, readBufSize)
	p.keyc.buf, p.keyc.limit = p.keyBuf[:0], len(p.keyBuf)
	p.numc.buf, p.numc.limit = p.numBuf[:0], len(p.numBuf)
	p.stack = p.stackB[:0]
	p.out.coll = outputCollector{inlineMax: opts.InlineMax, preview: opts.PreviewBytes, open: opts.Spill}
	p.out.banner.init(&p.out.coll, p.lineBuf[:])
	p.out.nul.init(&p.out.banner)
	p.errs.coll.limit = opts.InlineMax
	p.errs.nul.init(&p.errs.coll)
	p.nameTxt.coll.buf, p.nameTxt.coll.limit = p.nameBuf[:0], 1<<10
	p.nameTxt.nul.init(&p.nameTxt.coll)
	return p
}

// field identifies the known keys.
type field int

const (
	fieldUnknown field = iota
	fieldName
	fieldExit
	fieldOutput
	fieldErrors
)

func lookupField(k []byte) field {
	switch string(k) {
	case "script_name", "name":
		return fieldName
	case "exit_code":
		return fieldExit
	case "script_output":
		return fieldOutput
	case "script_errors", "script_error":
		return fieldErrors
	}
	return fieldUnknown
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

func (p *parser) parseDocument() error {
	b, err := p.peekN(len(utf8BOM))
	if err != nil {
		return err
	}
	if string(b) == string(utf8BOM) {
		p.discard(len(utf8BOM))
		p.lineStart = p.off
	}
	c, ok, err := p.skipWS()
	if err != nil {
		return err
	}
	if !ok {
		msg := "the file is empty"
		if p.off > 0 {
			msg = fmt.Sprintf("the file holds only %d bytes of whitespace", p.off)
		}
		return &syntaxError{code: CodeEmptyFile, msg: msg}
	}
	if c != '{' {
		return p.syntaxf("the file is not a JSON object: it starts with %s", describe(c))
	}
	p.discard(1)
	if c, err = p.next(); err != nil {
		return err
	}
	if c == '}' {
		p.discard(1)
	} else {
		if err := p.members(c); err != nil {
			return err
		}
	}
	p.ctx = ctxAfter
	if c, ok, err = p.skipWS(); err != nil {
		return err
	}
	if ok {
		return p.syntaxf("unexpected %s after the end of the object (trailing data)", describe(c))
	}
	return nil
}

// members reads the key/value pairs of the top-level object up to and including its closing brace; c is
// the first byte of the first key.
func (p *parser) members(c byte) error {
	for {
		p.ctx = ctxKey
		if c != '"' {
			return p.syntaxf("expected a string key, found %s", describe(c))
		}
		p.discard(1)
		p.keyc.reset()
		if err := p.readString(&p.keyc); err != nil {
			return err
		}
		p.keyLen = copy(p.key[:], p.keyc.buf)
		f := fieldUnknown
		if p.keyc.complete() {
			f = lookupField(p.keyc.buf)
		}
		if f == fieldUnknown && len(p.unknownKeys) < 8 {
			p.unknownKeys = append(p.unknownKeys, string(p.keyc.buf))
		}
		if c, err := p.next(); err != nil {
			return err
		} else if c != ':' {
			return p.syntaxf("expected ':' after the key, found %s", describe(c))
		}
		p.discard(1)
		p.ctx = ctxValue
		if err := p.member(f); err != nil {
			return err
		}
		d, err := p.next()
		if err != nil {
			return err
		}
		switch d {
		case ',':
			p.discard(1)
			if c, err = p.next(); err != nil {
				return err
			}
		case '}':
			p.discard(1)
			return nil
		default:
			return p.syntaxf("expected ',' or '}' after the value, found %s", describe(d))
		}
	}
}

// member reads the value of one key. The first occurrence of a known key wins; later ones are skipped.
func (p *parser) member(f field) error {
	var seen *bool
	switch f {
	case fieldName:
		seen = &p.seenName
	case fieldExit:
		seen = &p.seenExit
	case fieldOutput:
		seen = &p.seenOutput
	case fieldErrors:
		seen = &p.seenErrors
	}
	if seen == nil || *seen {
		return p.skipValue()
	}
	*seen = true
	p.seenKnown = true
	switch f {
	case fieldExit:
		return p.readExitCode()
	case fieldOutput:
		isString, err := p.readText(&p.out.nul)
		if err != nil || !isString {
			return err
		}
		p.out.nul.close()
		return p.out.banner.close()
	case fieldErrors:
		isString, err := p.readText(&p.errs.nul)
		if err != nil || !isString {
			return err
		}
		p.errs.nul.close()
		p.errText, p.errBytes = p.errs.coll.text(), p.errs.coll.total
	case fieldName:
		isString, err := p.readText(&p.nameTxt.nul)
		if err != nil || !isString {
			return err
		}
		p.nameTxt.nul.close()
		p.name = p.nameTxt.coll.text()
	}
	return nil
}

// readText reads a string value into dst; null is accepted and leaves dst untouched.
func (p *parser) readText(dst textSink) (isString bool, err error) {
	c, err := p.next()
	if err != nil {
		return false, err
	}
	switch c {
	case '"':
		p.discard(1)
		p.invalid = false
		if err := p.readString(dst); err != nil {
			return false, err
		}
		p.invalidUTF8 = p.invalidUTF8 || p.invalid
		return true, nil
	case 'n':
		return false, p.readLiteral("null")
	}
	return false, p.typeError(c, "a string or null")
}

// typeError reports a known key holding a value of the wrong kind.
func (p *parser) typeError(c byte, want string) error {
	kind := "a number"
	switch c {
	case '{':
		kind = "an object"
	case '[':
		kind = "an array"
	case 't', 'f':
		kind = "a boolean"
	case '"':
		kind = "a string"
	}
	p.setTypeErr(fmt.Sprintf("the value of %q at %s is %s, want %s", string(p.key[:p.keyLen]), p.pos(), kind, want))
	return p.skipValue()
}

// setTypeErr records the first type problem; it is reported only once the whole file has been read,
// because a syntax error found later is the more basic problem.
func (p *parser) setTypeErr(msg string) {
	if p.typeErr == nil {
		p.typeErr = &syntaxError{code: CodeUnexpectedType, msg: msg}
	}
}

// readExitCode accepts an integer number, a string holding one, or null.
func (p *parser) readExitCode() error {
	c, err := p.next()
	if err != nil {
		return err
	}
	at := p.pos()
	p.numc.reset()
	switch {
	case c == 'n':
		return p.readLiteral("null")
	case c == '"':
		p.discard(1)
		if err := p.readString(&p.numc); err != nil {
			return err
		}
		if p.numc.complete() && len(bytes.TrimSpace(p.numc.buf)) == 0 {
			return nil
		}
	case c == '-' || isDigit(c):
		if err := p.readNumber(&p.numc); err != nil {
			return err
		}
	default:
		return p.typeError(c, "an integer, a string holding one, or null")
	}
	if v, ok := parseExitCode(p.numc.buf); ok && p.numc.complete() {
		p.exitCode = &v
		return nil
	}
	p.setTypeErr(fmt.Sprintf("the value of %q at %s is %q, want an integer", string(p.key[:p.keyLen]), at, p.numc.buf))
	return nil
}

// parseExitCode accepts integers, also written as 1e2 or 3.0, within ±2^53.
func parseExitCode(b []byte) (int, bool) {
	s := strings.TrimSpace(string(b))
	if v, err := strconv.Atoi(s); err == nil {
		return v, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int(f), true
}
