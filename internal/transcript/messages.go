package transcript

// Messages: the syntax error type and how a position in the file is described in it.

import "fmt"

// syntaxError is a problem with the file's content; Parse turns it into a result.Problem.
type syntaxError struct {
	code string
	msg  string
}

func (e *syntaxError) Error() string { return e.code + ": " + e.msg }

// context values say where the tokenizer is, for messages.
const (
	ctxTop = iota
	ctxKey
	ctxValue
	ctxAfter
)

func (p *parser) where() string {
	k := string(p.key[:p.keyLen])
	switch p.ctx {
	case ctxKey:
		return "in a key of the top-level object"
	case ctxValue:
		return fmt.Sprintf("in the value of %q", k)
	case ctxAfter:
		return "after the top-level object"
	}
	return "in the top-level object"
}

// position is a place in the file, formatted only when a message needs it.
type position struct{ off, line, col int64 }

func (q position) String() string {
	return fmt.Sprintf("byte offset %d (line %d, column %d)", q.off, q.line, q.col)
}

func (p *parser) pos() position {
	return position{p.off, p.line, p.off - p.lineStart + 1}
}

// syntaxf reports invalid JSON at the current position.
func (p *parser) syntaxf(format string, args ...any) error {
	return &syntaxError{
		code: CodeInvalidJSON,
		msg:  fmt.Sprintf("invalid JSON at %s %s: %s", p.pos(), p.where(), fmt.Sprintf(format, args...)),
	}
}

func (p *parser) eofError() error {
	return &syntaxError{
		code: CodeInvalidJSON,
		msg:  fmt.Sprintf("invalid JSON: the file ends unexpectedly at byte offset %d %s; it is truncated or not JSON", p.off, p.where()),
	}
}

// describe names a byte for a message.
func describe(c byte) string {
	switch {
	case c == '\n':
		return "a raw line break (0x0a)"
	case c == '\r':
		return "a raw carriage return (0x0d)"
	case c == '\t':
		return "a raw tab (0x09)"
	case c >= 0x20 && c < 0x7f:
		return fmt.Sprintf("%q", rune(c))
	}
	return fmt.Sprintf("byte 0x%02x", c)
}
