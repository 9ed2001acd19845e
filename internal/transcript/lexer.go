package transcript

// The lexer: a positioned reader over the file and a streaming JSON tokenizer (whitespace, literals,
// numbers, strings with their escapes, and skipping whole values). It knows nothing of the transcript's keys.

import (
	"encoding/hex"
	"fmt"
	"io"
	"unicode/utf16"
	"unicode/utf8"
)

// readBufSize is the read buffer; string runs are scanned in place inside it.
const readBufSize = 16 << 10

// sourceReader counts the bytes read from the file and keeps the first max of them for
// Problem.RawBase64. It sits under the bufio.Reader, so raw is always a prefix of the file.
type sourceReader struct {
	r     io.Reader
	raw   []byte
	max   int
	extra bool // more than max bytes were read
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		room := s.max - len(s.raw)
		if n > room {
			s.extra = true
		}
		if room > 0 {
			s.raw = append(s.raw, p[:min(n, room)]...)
		}
	}
	return n, err
}

// ---- low-level reading ----

func (p *parser) readErr(err error) error {
	return &ReadError{Offset: p.off, Err: err}
}

// fill returns the buffered bytes, reading more when none are buffered. An empty slice with a nil error
// means the end of the file.
func (p *parser) fill() ([]byte, error) {
	if p.br.Buffered() == 0 {
		if _, err := p.br.Peek(1); err != nil {
			if err == io.EOF {
				return nil, nil
			}
			return nil, p.readErr(err)
		}
	}
	b, _ := p.br.Peek(p.br.Buffered())
	return b, nil
}

// peekN returns up to n bytes without consuming them; fewer only at the end of the file.
func (p *parser) peekN(n int) ([]byte, error) {
	b, err := p.br.Peek(n)
	if err != nil && err != io.EOF {
		return nil, p.readErr(err)
	}
	return b, nil
}

func (p *parser) discard(n int) {
	d, _ := p.br.Discard(n) // n is never more than what is buffered
	p.off += int64(d)
}

// peekByte returns the next byte without consuming it; ok is false at the end of the file.
func (p *parser) peekByte() (c byte, ok bool, err error) {
	b, err := p.fill()
	if err != nil || len(b) == 0 {
		return 0, false, err
	}
	return b[0], true, nil
}

// skipWS consumes JSON whitespace and returns the next byte without consuming it.
func (p *parser) skipWS() (c byte, ok bool, err error) {
	for {
		b, err := p.fill()
		if err != nil || len(b) == 0 {
			return 0, false, err
		}
		for i, c := range b {
			switch c {
			case ' ', '\t', '\r':
			case '\n':
				p.line++
				p.lineStart = p.off + int64(i) + 1
			default:
				p.discard(i)
				return c, true, nil
			}
		}
		p.discard(len(b))
	}
}

// next is skipWS where the end of the file is a syntax error.
func (p *parser) next() (byte, error) {
	c, ok, err := p.skipWS()
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, p.eofError()
	}
	return c, nil
}

// ---- values ----

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// skipValue consumes and validates one value of any kind. Containers are tracked on an explicit stack
// bounded by MaxDepth, so deep nesting cannot exhaust the goroutine stack.
func (p *parser) skipValue() error {
	stack := p.stack[:0]
	defer func() { p.stack = stack[:0] }()
	for {
		c, err := p.next()
		if err != nil {
			return err
		}
		opened := false
		switch {
		case c == '{' || c == '[':
			if len(stack) >= MaxDepth-1 { // the top-level object is one level, this one another
				return &syntaxError{
					code: CodeUnsupportedJSON,
					msg:  fmt.Sprintf("JSON nested deeper than %d levels at %s %s", MaxDepth, p.pos(), p.where()),
				}
			}
			p.discard(1)
			closer := byte('}')
			if c == '[' {
				closer = ']'
			}
			d, err := p.next()
			if err != nil {
				return err
			}
			if d == closer {
				p.discard(1)
				break
			}
			stack = append(stack, c)
			if c == '{' {
				if err := p.skipKey(); err != nil {
					return err
				}
			}
			opened = true
		case c == '"':
			p.discard(1)
			if err := p.readString(nil); err != nil {
				return err
			}
		case c == 't':
			err = p.readLiteral("true")
		case c == 'f':
			err = p.readLiteral("false")
		case c == 'n':
			err = p.readLiteral("null")
		case c == '-' || isDigit(c):
			err = p.readNumber(nil)
		default:
			return p.syntaxf("expected a value, found %s", describe(c))
		}
		if err != nil {
			return err
		}
		if opened {
			continue
		}
		// A value is complete: close the containers it completes, or move to the next element.
	closing:
		for {
			if len(stack) == 0 {
				return nil
			}
			c, err := p.next()
			if err != nil {
				return err
			}
			top := stack[len(stack)-1]
			closer := byte('}')
			if top == '[' {
				closer = ']'
			}
			switch c {
			case ',':
				p.discard(1)
				if top == '{' {
					if err := p.skipKey(); err != nil {
						return err
					}
				}
				break closing
			case closer:
				p.discard(1)
				stack = stack[:len(stack)-1]
			default:
				return p.syntaxf("expected ',' or '%c', found %s", closer, describe(c))
			}
		}
	}
}

// skipKey consumes a nested object's key and the colon after it.
func (p *parser) skipKey() error {
	c, err := p.next()
	if err != nil {
		return err
	}
	if c != '"' {
		return p.syntaxf("expected a string key, found %s", describe(c))
	}
	p.discard(1)
	if err := p.readString(nil); err != nil {
		return err
	}
	if c, err = p.next(); err != nil {
		return err
	}
	if c != ':' {
		return p.syntaxf("expected ':' after a key, found %s", describe(c))
	}
	p.discard(1)
	return nil
}

func (p *parser) readLiteral(word string) error {
	b, err := p.peekN(len(word))
	if err != nil {
		return err
	}
	for i := range b {
		if b[i] != word[i] {
			p.discard(i)
			return p.syntaxf("invalid literal: expected %q, found %s", word, describe(b[i]))
		}
	}
	if len(b) < len(word) {
		p.discard(len(b))
		return p.eofError()
	}
	p.discard(len(word))
	return nil
}

// readNumber consumes and validates a JSON number, keeping its text in keep when not nil.
func (p *parser) readNumber(keep *capCollector) error {
	take := func() {
		if keep != nil {
			b, _ := p.br.Peek(1)
			_ = keep.write(b)
		}
		p.discard(1)
	}
	c, ok, err := p.peekByte()
	if err != nil {
		return err
	}
	if ok && c == '-' {
		take()
		if c, ok, err = p.peekByte(); err != nil {
			return err
		}
	}
	if !ok {
		return p.eofError()
	}
	switch {
	case c == '0':
		take()
	case isDigit(c):
		if err := p.digits(keep); err != nil {
			return err
		}
	default:
		return p.syntaxf("invalid number: expected a digit, found %s", describe(c))
	}
	if c, ok, err = p.peekByte(); err != nil || !ok {
		return err
	}
	if c == '.' {
		take()
		if err := p.needDigits(keep); err != nil {
			return err
		}
		if c, ok, err = p.peekByte(); err != nil || !ok {
			return err
		}
	}
	if c == 'e' || c == 'E' {
		take()
		if c, ok, err = p.peekByte(); err != nil {
			return err
		}
		if ok && (c == '+' || c == '-') {
			take()
		}
		return p.needDigits(keep)
	}
	return nil
}

// needDigits consumes one or more digits.
func (p *parser) needDigits(keep *capCollector) error {
	c, ok, err := p.peekByte()
	if err != nil {
		return err
	}
	if !ok {
		return p.eofError()
	}
	if !isDigit(c) {
		return p.syntaxf("invalid number: expected a digit, found %s", describe(c))
	}
	return p.digits(keep)
}

// digits consumes a run of digits, scanning the buffer in place.
func (p *parser) digits(keep *capCollector) error {
	for {
		b, err := p.fill()
		if err != nil || len(b) == 0 {
			return err
		}
		i := 0
		for i < len(b) && isDigit(b[i]) {
			i++
		}
		if keep != nil {
			_ = keep.write(b[:i])
		}
		p.discard(i)
		if i < len(b) {
			return nil
		}
	}
}

// ---- strings ----

// readString decodes a string whose opening quote has been consumed, up to and including the closing
// quote, writing valid UTF-8 to dst (nil to validate only). Runs of plain characters are scanned in place
// in the read buffer; only escapes and invalid bytes take the slow path.
func (p *parser) readString(dst textSink) error {
	p.n = 0
	for {
		b, err := p.fill()
		if err != nil {
			return err
		}
		if len(b) == 0 {
			return p.eofError()
		}
		i := 0
		for i < len(b) {
			c := b[i]
			if c < utf8.RuneSelf {
				if c == '"' || c == '\\' || c < 0x20 {
					break
				}
				i++
				continue
			}
			r, size := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && size == 1 {
				break
			}
			i += size
		}
		if i > 0 {
			if err := p.emit(dst, b[:i]); err != nil {
				return err
			}
			p.discard(i)
		}
		if i == len(b) {
			continue
		}
		switch c := b[i]; {
		case c == '"':
			p.discard(1)
			return p.flush(dst)
		case c == '\\':
			err = p.readEscape(dst)
		case c < 0x20:
			err = p.syntaxf("%s inside a string; control characters must be escaped (e.g. as \\n)", describe(c))
		default:
			err = p.readRune(dst)
		}
		if err != nil {
			return err
		}
	}
}

// readRune handles a multi-byte sequence that is either invalid or cut by the end of the buffer.
func (p *parser) readRune(dst textSink) error {
	b, err := p.peekN(utf8.UTFMax)
	if err != nil {
		return err
	}
	r, size := utf8.DecodeRune(b)
	if r == utf8.RuneError && size == 1 {
		p.invalid = true
		p.discard(1)
		return p.emitRune(dst, utf8.RuneError)
	}
	if err := p.emit(dst, b[:size]); err != nil {
		return err
	}
	p.discard(size)
	return nil
}

// readEscape decodes one escape sequence starting at the backslash.
func (p *parser) readEscape(dst textSink) error {
	b, err := p.peekN(2)
	if err != nil {
		return err
	}
	if len(b) < 2 {
		p.discard(len(b))
		return p.eofError()
	}
	var c byte
	switch b[1] {
	case '"', '\\', '/':
		c = b[1]
	case 'b':
		c = '\b'
	case 'f':
		c = '\f'
	case 'n':
		c = '\n'
	case 'r':
		c = '\r'
	case 't':
		c = '\t'
	case 'u':
		p.discard(2)
		return p.readUnicodeEscape(dst)
	default:
		p.discard(1)
		return p.syntaxf("invalid escape sequence in a string: backslash followed by %s", describe(b[1]))
	}
	p.discard(2)
	return p.emitByte(dst, c)
}

// readUnicodeEscape decodes the 4 hex digits after \u, pairing UTF-16 surrogates. A lone surrogate
// becomes U+FFFD (like encoding/json) and marks the string invalid.
func (p *parser) readUnicodeEscape(dst textSink) error {
	b, err := p.peekN(4)
	if err != nil {
		return err
	}
	r, ok := hex4(b)
	if !ok {
		for i := range b {
			if _, ok := hex4([]byte{b[i], '0', '0', '0'}); !ok {
				p.discard(i)
				return p.syntaxf("invalid \\u escape: expected a hex digit, found %s", describe(b[i]))
			}
		}
		p.discard(len(b))
		return p.eofError()
	}
	p.discard(4)
	if !utf16.IsSurrogate(r) {
		return p.emitRune(dst, r)
	}
	if r < 0xDC00 {
		b, err := p.peekN(6)
		if err != nil {
			return err
		}
		if len(b) == 6 && b[0] == '\\' && b[1] == 'u' {
			if r2, ok := hex4(b[2:]); ok && r2 >= 0xDC00 && r2 <= 0xDFFF {
				p.discard(6)
				return p.emitRune(dst, utf16.DecodeRune(r, r2))
			}
		}
	}
	p.invalid = true
	return p.emitRune(dst, utf8.RuneError)
}

// hex4 reads the 4 hex digits of a \u escape (encoding/hex, no allocation).
func hex4(b []byte) (rune, bool) {
	var v [2]byte
	if len(b) < 4 {
		return 0, false
	}
	if _, err := hex.Decode(v[:], b[:4]); err != nil {
		return 0, false
	}
	return rune(v[0])<<8 | rune(v[1]), true
}

// emit appends decoded bytes to the scratch buffer, flushing it to dst when full. Large runs bypass it.
func (p *parser) emit(dst textSink, b []byte) error {
	if dst == nil {
		return nil
	}
	if p.n == 0 && len(b) >= len(p.scratch)/2 {
		return dst.write(b)
	}
	for len(b) > 0 {
		if p.n == len(p.scratch) {
			if err := p.flush(dst); err != nil {
				return err
			}
		}
		k := copy(p.scratch[p.n:], b)
		p.n += k
		b = b[k:]
	}
	return nil
}

func (p *parser) emitByte(dst textSink, c byte) error {
	if dst == nil {
		return nil
	}
	if p.n == len(p.scratch) {
		if err := p.flush(dst); err != nil {
			return err
		}
	}
	p.scratch[p.n] = c
	p.n++
	return nil
}

func (p *parser) emitRune(dst textSink, r rune) error {
	if dst == nil {
		return nil
	}
	if p.n+utf8.UTFMax > len(p.scratch) {
		if err := p.flush(dst); err != nil {
			return err
		}
	}
	p.n += utf8.EncodeRune(p.scratch[p.n:], r)
	return nil
}

func (p *parser) flush(dst textSink) error {
	if dst == nil || p.n == 0 {
		p.n = 0
		return nil
	}
	err := dst.write(p.scratch[:p.n])
	p.n = 0
	return err
}

// drainRaw reads on, after a problem, until RawMax+1 bytes have been seen or the file ends, so that the
// problem carries as much of the raw file as allowed and RawTruncated is exact.
func (p *parser) drainRaw() error {
	for !p.src.extra {
		if n := p.br.Buffered(); n > 0 {
			p.discard(n)
			continue
		}
		if _, err := p.br.Peek(1); err != nil {
			if err == io.EOF {
				return nil
			}
			return p.readErr(err)
		}
	}
	return nil
}
