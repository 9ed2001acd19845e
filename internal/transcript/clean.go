package transcript

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/lr-relay/lr-relay/internal/artifact"
)

// textSink receives decoded string content, always valid UTF-8, in chunks of any size. The chunk is only
// valid during the call.
type textSink interface {
	write(p []byte) error
}

// nulRun is how many NULReplacement symbols nulFilter writes per call.
const nulRun = 64

// nulFilter holds back runs of NUL characters: a run at the very end of the string is dropped and
// counted, a run followed by other text is replaced by NULReplacement symbols. Holding a count instead of
// bytes keeps memory constant however long the run.
type nulFilter struct {
	next     textSink
	pending  int
	trailing int
	symbols  [nulRun * len(NULReplacement)]byte
}

func (f *nulFilter) init(next textSink) {
	f.next = next
	for i := 0; i < len(f.symbols); i += len(NULReplacement) {
		copy(f.symbols[i:], NULReplacement)
	}
}

func (f *nulFilter) write(p []byte) error {
	for len(p) > 0 {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			if err := f.flushPending(); err != nil {
				return err
			}
			return f.next.write(p)
		}
		if i > 0 {
			if err := f.flushPending(); err != nil {
				return err
			}
			if err := f.next.write(p[:i]); err != nil {
				return err
			}
		}
		j := i
		for j < len(p) && p[j] == 0 {
			j++
		}
		f.pending += j - i
		p = p[j:]
	}
	return nil
}

func (f *nulFilter) flushPending() error {
	for f.pending > 0 {
		n := min(f.pending, nulRun)
		if err := f.next.write(f.symbols[:n*len(NULReplacement)]); err != nil {
			return err
		}
		f.pending -= n
	}
	return nil
}

// close ends the string: the pending run is trailing.
func (f *nulFilter) close() {
	f.trailing += f.pending
	f.pending = 0
}

// bannerFilter removes the PowerShell transcript banner from the first line. It holds the first line only
// while it can still be the banner, and at most maxBannerLine bytes of it.
type bannerFilter struct {
	next     textSink
	deciding bool
	line     []byte
	path     string
}

func (f *bannerFilter) init(next textSink, backing []byte) {
	f.next = next
	f.deciding = true
	f.line = backing[:0]
}

func (f *bannerFilter) write(p []byte) error {
	if !f.deciding {
		return f.next.write(p)
	}
	nl := bytes.IndexByte(p, '\n')
	part := p
	if nl >= 0 {
		part = p[:nl]
	}
	// Decide as early as possible that the line is not the banner, without copying it.
	if n := len(f.line); n < len(BannerPrefix) {
		k := min(len(BannerPrefix)-n, len(part))
		if string(part[:k]) != BannerPrefix[n:n+k] {
			return f.giveUp(p)
		}
	}
	if len(f.line)+len(part) > maxBannerLine {
		return f.giveUp(p)
	}
	f.line = append(f.line, part...)
	if nl < 0 {
		return nil
	}
	if f.takeBanner() {
		return f.next.write(p[nl+1:])
	}
	return f.giveUp(p[nl:])
}

// giveUp decides the first line is not the banner: it passes on what was held, then rest.
func (f *bannerFilter) giveUp(rest []byte) error {
	f.deciding = false
	line := f.line
	f.line = nil
	if len(line) > 0 {
		if err := f.next.write(line); err != nil {
			return err
		}
	}
	if len(rest) == 0 {
		return nil
	}
	return f.next.write(rest)
}

// takeBanner records the path when the held line is the banner.
func (f *bannerFilter) takeBanner() bool {
	if !bytes.HasPrefix(f.line, []byte(BannerPrefix)) {
		return false
	}
	f.deciding = false
	f.path = string(bytes.TrimSuffix(f.line[len(BannerPrefix):], []byte("\r")))
	f.line = nil
	return true
}

// close ends the output: a first line without a newline can still be the banner.
func (f *bannerFilter) close() error {
	if !f.deciding || f.takeBanner() {
		return nil
	}
	return f.giveUp(nil)
}

// capCollector keeps the first limit bytes written and counts the rest.
type capCollector struct {
	buf   []byte
	limit int
	total int64
}

func (c *capCollector) write(p []byte) error {
	c.total += int64(len(p))
	if room := c.limit - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(len(p), room)]...)
	}
	return nil
}

func (c *capCollector) reset() {
	c.buf = c.buf[:0]
	c.total = 0
}

// complete reports whether nothing was cut.
func (c *capCollector) complete() bool { return c.total == int64(len(c.buf)) }

// text returns the collected text, marked when it was cut, or "" when nothing of it was kept (limit 0).
func (c *capCollector) text() string {
	if c.complete() {
		return string(c.buf)
	}
	head := cutHead(c.buf)
	if len(head) == 0 {
		return ""
	}
	return string(head) + fmt.Sprintf("\n…[%d bytes omitted]", c.total-int64(len(head)))
}

// outputCollector keeps the cleaned output whole up to inlineMax bytes. Beyond, it keeps the first
// inlineMax bytes (the head comes from them), the last preview bytes in a ring, and streams everything to
// the spill sink, opened at that moment.
type outputCollector struct {
	inlineMax int
	preview   int
	open      artifact.Opener

	buf   []byte
	total int64
	over  bool
	sink  artifact.Sink
	ring  []byte
	rpos  int
	rfull bool
}

func (c *outputCollector) write(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	c.total += int64(len(p))
	if !c.over {
		room := c.inlineMax - len(c.buf)
		if len(p) <= room {
			if c.buf == nil {
				c.buf = make([]byte, 0, min(c.inlineMax, max(4<<10, 2*len(p))))
			}
			c.buf = append(c.buf, p...)
			return nil
		}
		c.buf = append(c.buf, p[:room]...)
		p = p[room:]
		c.over = true
		c.ring = make([]byte, c.preview)
		c.ringWrite(c.buf)
		if c.open != nil {
			sink, err := c.open()
			if err != nil {
				return &SpillError{Op: "open", Err: err}
			}
			if sink == nil {
				return &SpillError{Op: "open", Err: errors.New("opener returned a nil sink")}
			}
			c.sink = sink
			if err := c.sinkWrite(c.buf); err != nil {
				return err
			}
		}
	}
	c.ringWrite(p)
	if c.sink != nil {
		return c.sinkWrite(p)
	}
	return nil
}

func (c *outputCollector) sinkWrite(p []byte) error {
	n, err := c.sink.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return &SpillError{Op: "write", Err: err}
	}
	return nil
}

func (c *outputCollector) ringWrite(p []byte) {
	size := len(c.ring)
	if size == 0 {
		return
	}
	if len(p) >= size {
		copy(c.ring, p[len(p)-size:])
		c.rpos, c.rfull = 0, true
		return
	}
	n := copy(c.ring[c.rpos:], p)
	if n < len(p) {
		copy(c.ring, p[n:])
		c.rfull = true
	}
	c.rpos = (c.rpos + len(p)) % size
	if c.rpos == 0 {
		c.rfull = true
	}
}

// tail returns the last bytes written, up to preview, oldest first.
func (c *outputCollector) tail() []byte {
	if !c.rfull {
		return c.ring[:c.rpos]
	}
	out := make([]byte, 0, len(c.ring))
	out = append(out, c.ring[c.rpos:]...)
	return append(out, c.ring[:c.rpos]...)
}
