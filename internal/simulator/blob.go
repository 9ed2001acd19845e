package simulator

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lr-relay/lr-relay/internal/action"
)

// The fixed SAS fields of a result link, as the real links carry them.
const (
	sasPermissions = "r"
	sasVersion     = "2019-07-07"
	sasResource    = "b"
)

// resetAfterMax bounds how much of a blob body is sent before a reset fault cuts the connection.
const resetAfterMax = 64 << 10

// sign returns the base64 HMAC-SHA256 of the link's path parts and SAS fields.
func (s *Simulator) sign(parts ...string) string {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(strings.Join(parts, "\n")))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// handleBlob serves GET /blob/{id}/{index}/{name}?se=..&sp=r&sv=..&sr=b&sig=.. like Azure blob storage
// serves a SAS URL: the signature and expiry are checked first, then the content streams.
func (s *Simulator) handleBlob(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	id, idx, name := r.PathValue("id"), r.PathValue("index"), r.PathValue("name")
	q := r.URL.Query()
	if r.Header.Get("Authorization") != "" {
		s.mu.Lock()
		s.stats.BlobAuthHeaders++
		s.mu.Unlock()
		s.log.Warn().Str("action_id", id).Str("index", idx).Msg("blob request carried an Authorization header")
	}

	se := q.Get("se")
	expires, seErr := time.Parse(time.RFC3339, se)
	if q.Get("sig") == "" || seErr != nil || q.Get("sp") != sasPermissions || q.Get("sv") != sasVersion || q.Get("sr") != sasResource {
		s.refuseBlob(w, now, false, "Signature fields not well formed.")
		return
	}
	want := s.sign(id, idx, name, se, sasPermissions, sasVersion, sasResource)
	if !hmac.Equal([]byte(want), []byte(q.Get("sig"))) {
		s.refuseBlob(w, now, false, "Signature did not match.")
		return
	}
	if !now.Before(expires) {
		s.refuseBlob(w, now, true, fmt.Sprintf("Signature not valid in the specified time frame: Start [] - Expiry [%s] - Current [%s]",
			expires.UTC().Format(http.TimeFormat), now.UTC().Format(http.TimeFormat)))
		return
	}

	s.mu.Lock()
	f := s.faults.withDefaults()
	fault := s.rollCallFaultLocked(f)
	drip := fault == "" && s.roll(f.SlowDrip)
	if drip {
		s.stats.FaultsInjected[FaultSlowDrip]++
	}
	s.mu.Unlock()
	if fault != "" || drip {
		s.log.Debug().Str("action_id", id).Str("index", idx).Str("fault", fault).Bool("slowdrip", drip).Msg("blob fault injected")
	}
	switch fault {
	case FaultServerError:
		writeStorageError(w, http.StatusInternalServerError, "InternalError", "Server encountered an internal error. Please try again after some time.", "", now)
		return
	case FaultTimeout:
		if s.hang(r.Context(), f.TimeoutAfter) {
			writeStorageError(w, http.StatusInternalServerError, "OperationTimedOut", "Operation could not be completed within the specified time.", "", now)
		} else {
			resetConn(w)
		}
		return
	}

	index, err := strconv.Atoi(idx)
	a, found := s.lookupAny(id)
	var cmd action.Command
	var content Content
	if found && err == nil {
		cmd, found = findCommand(a.MachineAction, index)
		if found {
			content, found = a.Results[index]
		}
	}
	if !found || err != nil {
		writeStorageError(w, http.StatusNotFound, "BlobNotFound", "The specified blob does not exist.", "", now)
		return
	}

	var out io.Writer = w
	if drip {
		out = &dripWriter{w: w, rc: http.NewResponseController(w), chunk: f.SlowDripChunk, delay: f.SlowDripDelay, ctx: r.Context(), done: s.done}
	}

	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("x-ms-blob-type", "BlockBlob")
	h.Set("x-ms-version", sasVersion)
	h.Set("x-ms-request-id", newRequestID())
	h.Set("Last-Modified", now.UTC().Format(http.TimeFormat))
	s.mu.Lock()
	s.stats.BlobDownloads++
	s.mu.Unlock()

	err = s.writeContent(r.Context(), w, out, cmd, content, fault == FaultReset)
	if fault == FaultReset || err != nil {
		// A body cut short must not look complete: drop the connection so the client sees the truncation.
		s.log.Debug().Err(err).Str("action_id", id).Str("index", idx).Msg("blob download aborted")
		resetConn(w)
	}
}

// writeContent writes the headers and body of one result: GetFile content gzip-compressed with its name in
// Content-Disposition, RunScript content as stored (or generated). With cut set it stops half way through
// a body of known length, or after resetAfterMax bytes of a streamed one, and returns errCut.
func (s *Simulator) writeContent(ctx context.Context, w http.ResponseWriter, out io.Writer, cmd action.Command, c Content, cut bool) error {
	cutAt := func(length int64) {
		if cut {
			out = &cutWriter{w: out, left: min(resetAfterMax, length/2)}
		}
	}
	if cmd.Command.Type == action.TypeGetFile {
		name := c.FileName
		if name == "" {
			name = baseName(cmd.Command.Param("Path"))
		}
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name + ".gz"}))
		if c.Data != nil {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write(c.Data)
			_ = zw.Close()
			w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
			cutAt(int64(buf.Len()))
			_, err := out.Write(buf.Bytes())
			return err
		}
		cutAt(2 * resetAfterMax)
		zw, _ := gzip.NewWriterLevel(out, gzip.BestSpeed)
		if _, err := io.Copy(zw, ctxReader{ctx, GeneratedReader(c.Size, c.Seed)}); err != nil {
			return err
		}
		return zw.Close()
	}
	if c.Data != nil {
		w.Header().Set("Content-Length", strconv.Itoa(len(c.Data)))
		cutAt(int64(len(c.Data)))
		_, err := out.Write(c.Data)
		return err
	}
	scriptName := cmd.Command.Param("ScriptName")
	if scriptName == "" {
		scriptName = "script.ps1"
	}
	cutAt(2 * resetAfterMax)
	return writeGeneratedTranscript(ctx, out, scriptName, c)
}

// refuseBlob answers 403 AuthenticationFailed, as Azure does for an expired or tampered SAS.
func (s *Simulator) refuseBlob(w http.ResponseWriter, now time.Time, expired bool, detail string) {
	s.mu.Lock()
	if expired {
		s.stats.Expired403++
	} else {
		s.stats.BadSignature403++
	}
	s.mu.Unlock()
	s.log.Debug().Bool("expired", expired).Msg("blob request refused")
	writeStorageError(w, http.StatusForbidden, "AuthenticationFailed",
		"Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
		detail, now)
}

// writeStorageError writes Azure Storage's XML error body.
func writeStorageError(w http.ResponseWriter, status int, code, message, detail string, now time.Time) {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?><Error><Code>`)
	_ = xml.EscapeText(&b, []byte(code))
	b.WriteString(`</Code><Message>`)
	_ = xml.EscapeText(&b, []byte(message+"\nRequestId:"+newRequestID()+"\nTime:"+now.UTC().Format("2006-01-02T15:04:05.0000000Z")))
	b.WriteString(`</Message>`)
	if detail != "" {
		b.WriteString(`<AuthenticationErrorDetail>`)
		_ = xml.EscapeText(&b, []byte(detail))
		b.WriteString(`</AuthenticationErrorDetail>`)
	}
	b.WriteString(`</Error>`)
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("x-ms-error-code", code)
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// lookupAny finds an action whatever its tenant: a valid signature is all a blob request needs.
func (s *Simulator) lookupAny(id string) (Action, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.actions[strings.ToLower(id)]
	return a, ok
}

// baseName returns the last element of a Windows or POSIX path.
func baseName(p string) string {
	if i := strings.LastIndexAny(p, `\/`); i >= 0 {
		p = p[i+1:]
	}
	if p == "" {
		return "file"
	}
	return p
}

// TranscriptBanner is the first line the sensor's Start-Transcript wrapper writes into script_output.
func TranscriptBanner(guid string) string {
	return `Transcript started, output file is C:\ProgramData\Microsoft\Windows Defender Advanced Threat Protection\Temp\PSScriptOutputs\PSScript_Transcript_{` +
		strings.ToUpper(guid) + `}.txt`
}

// writeGeneratedTranscript streams a RunScript JSON document whose script_output is a banner line followed
// by GeneratedReader(c.Size, c.Seed).
func writeGeneratedTranscript(ctx context.Context, out io.Writer, scriptName string, c Content) error {
	name, _ := jsonString(scriptName)
	var seed [16]byte
	for i := range 8 {
		seed[i] = byte(uint64(c.Seed) >> (8 * i))
		seed[8+i] = byte(uint64(c.Size) >> (8 * i))
	}
	banner, _ := jsonString(TranscriptBanner(formatGUID(seed)) + "\n")
	head := `{"script_name":` + name + `,"exit_code":0,"script_output":` + banner[:len(banner)-1]
	if _, err := io.WriteString(out, head); err != nil {
		return err
	}
	if _, err := io.Copy(&newlineEscaper{w: out}, ctxReader{ctx, GeneratedReader(c.Size, c.Seed)}); err != nil {
		return err
	}
	_, err := io.WriteString(out, `","script_errors":""}`)
	return err
}

// GeneratedReader returns size bytes of deterministic log-like text for seed, in lines of GeneratedLineLen
// bytes such as
//
//	2024-05-14T09:00:00.417Z INFO  collector[4242]: record 000000000 sha=5a1f0c9e22b4d771 ok
//
// The text compresses about 4:1, like real logs, which keeps gzip fast on both ends. Tests use it to know
// what generated content must look like after a round trip; it contains no character that JSON escapes
// other than the newline.
func GeneratedReader(size, seed int64) io.Reader {
	g := &generator{left: max(size, 0), state: uint64(seed)}
	g.pos = len(g.line)
	return g
}

// GeneratedLineLen is the length of one line of generated content, newline included.
const GeneratedLineLen = 89

const lineTemplate = "2024-05-14T09:00:00.000Z INFO  collector[4242]: record 000000000 sha=0000000000000000 ok\n"

type generator struct {
	left   int64
	state  uint64
	record uint64
	line   [GeneratedLineLen]byte
	pos    int // next unread byte of line
}

func (g *generator) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n := 0
	for n < len(p) {
		if g.pos == len(g.line) {
			g.fill()
		}
		k := copy(p[n:], g.line[g.pos:])
		g.pos += k
		n += k
	}
	g.left -= int64(n)
	return n, nil
}

// fill makes the next line: the record number counts up, the rest comes from splitmix64.
func (g *generator) fill() {
	g.state += 0x9e3779b97f4a7c15
	z := g.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	copy(g.line[:], lineTemplate)
	sec := g.record / 4
	putDigits(g.line[14:16], (sec/60)%60)
	putDigits(g.line[17:19], sec%60)
	putDigits(g.line[20:23], (z>>40)%1000)
	if z&0xf == 0 {
		copy(g.line[25:30], "WARN ")
	}
	putDigits(g.line[55:64], g.record)
	var raw [8]byte
	binary.LittleEndian.PutUint64(raw[:], z)
	hex.Encode(g.line[69:85], raw[:])
	g.record++
	g.pos = 0
}

// putDigits writes v in decimal, zero-padded to len(dst), keeping the lowest digits.
func putDigits(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

// newlineEscaper JSON-escapes a stream that holds only hex digits and newlines.
type newlineEscaper struct {
	w   io.Writer
	buf []byte
}

func (e *newlineEscaper) Write(p []byte) (int, error) {
	e.buf = e.buf[:0]
	for rest := p; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			e.buf = append(e.buf, rest...)
			break
		}
		e.buf = append(append(e.buf, rest[:i]...), '\\', 'n')
		rest = rest[i+1:]
	}
	if _, err := e.w.Write(e.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ctxReader stops a long copy once the request is gone or the server shuts down.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// errCut marks the point where a reset fault cuts a body.
var errCut = errors.New("simulator: body cut by reset fault")

// cutWriter passes through left bytes, then fails.
type cutWriter struct {
	w    io.Writer
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= c.left {
		n, err := c.w.Write(p)
		c.left -= int64(n)
		return n, err
	}
	n, err := c.w.Write(p[:c.left])
	c.left -= int64(n)
	if err == nil {
		err = errCut
	}
	return n, err
}

// dripWriter sends chunk bytes, flushes, and waits delay, so the client sees a trickle.
type dripWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	chunk int
	delay time.Duration
	ctx   context.Context
	done  <-chan struct{}
}

func (d *dripWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(d.chunk, len(p))
		n, err := d.w.Write(p[:k])
		written += n
		if err != nil {
			return written, err
		}
		_ = d.rc.Flush()
		p = p[k:]
		t := time.NewTimer(d.delay)
		select {
		case <-d.ctx.Done():
			t.Stop()
			return written, d.ctx.Err()
		case <-d.done:
			t.Stop()
			return written, errors.New("simulator: closed during slow drip")
		case <-t.C:
		}
	}
	return written, nil
}
