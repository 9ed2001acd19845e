package download

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// Body is an open download. Read it as a stream and always Close it: Close releases the connection, the
// idle timer and the request context. Reads end with io.EOF at the end of the body, or with an *Error
// (KindTooLarge, KindTimeout, KindCanceled, KindNetwork).
type Body struct {
	io.ReadCloser
	// Name is the file name from the Content-Disposition header, reduced to a safe base name, or "" when
	// there was none or it was refused.
	Name string
	// ContentLength is the announced body size, or -1 when the server did not announce one.
	ContentLength int64
}

// guardedReader enforces the byte cap, the idle timeout and the caller's context on a response body,
// without buffering and without a goroutine of its own: the idle timer is a runtime timer that cancels the
// request context, which makes net/http abort the blocked read and close the connection.
//
// Read must not be called concurrently with itself; Close may be called from another goroutine to abort
// a blocked Read.
type guardedReader struct {
	rc        io.ReadCloser
	max       int64 // the cap, for messages
	remaining int64 // bytes still allowed
	idle      time.Duration
	timer     *time.Timer // nil when idle is 0
	idleFired atomic.Bool
	closed    atomic.Bool
	parent    context.Context // the caller's context
	reqCtx    context.Context // parent plus the optional total timeout
	cancel    context.CancelFunc
	url       string // redacted
	secrets   []string
	err       error // sticky: once a read failed, every later read fails the same way
}

func newGuardedReader(rc io.ReadCloser, max int64, idle time.Duration, parent, reqCtx context.Context,
	cancel context.CancelFunc, url string, secrets []string) *guardedReader {
	r := &guardedReader{
		rc: rc, max: max, remaining: max, idle: idle,
		parent: parent, reqCtx: reqCtx, cancel: cancel, url: url, secrets: secrets,
	}
	if idle > 0 {
		r.timer = time.AfterFunc(idle, func() {
			r.idleFired.Store(true)
			cancel()
		})
		r.timer.Stop()
	}
	return r
}

// Read reads at most the bytes still allowed plus one, so that a body of exactly max bytes succeeds and
// one byte more is detected without reading further.
func (r *guardedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.remaining < int64(len(p)) {
		p = p[:r.remaining+1]
	}
	if r.timer != nil {
		r.timer.Reset(r.idle)
	}
	n, err := r.rc.Read(p)
	if r.timer != nil {
		r.timer.Stop()
	}
	if int64(n) > r.remaining {
		n = int(r.remaining)
		r.remaining = 0
		r.err = &Error{Kind: KindTooLarge, URL: r.url, Err: fmt.Errorf("body exceeds the cap of %d bytes", r.max)}
		// Abort the transfer now: draining the rest of a huge body to reuse the connection is not worth it.
		r.cancel()
		return n, r.err
	}
	r.remaining -= int64(n)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF):
		r.err = io.EOF
		return n, io.EOF
	}
	r.err = r.classify(err)
	return n, r.err
}

// classify turns a body read failure into an *Error, looking at which of our own mechanisms fired rather
// than at the error text.
func (r *guardedReader) classify(err error) error {
	switch {
	case r.idleFired.Load():
		return &Error{Kind: KindTimeout, URL: r.url, Err: fmt.Errorf("no body data received for %s", r.idle)}
	case errors.Is(r.parent.Err(), context.Canceled):
		return &Error{Kind: KindCanceled, URL: r.url, Err: r.parent.Err()}
	case r.parent.Err() != nil, errors.Is(r.reqCtx.Err(), context.DeadlineExceeded):
		return &Error{Kind: KindTimeout, URL: r.url, Err: context.DeadlineExceeded}
	case r.closed.Load():
		return &Error{Kind: KindCanceled, URL: r.url, Err: errors.New("body closed during read")}
	}
	return &Error{Kind: KindNetwork, URL: r.url, Err: scrub(err, r.secrets)}
}

// Close releases everything; it is safe to call more than once and concurrently with Read.
func (r *guardedReader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if r.timer != nil {
		r.timer.Stop()
	}
	err := r.rc.Close()
	r.cancel()
	if err != nil {
		return &Error{Kind: KindNetwork, URL: r.url, Err: scrub(err, r.secrets)}
	}
	return nil
}
