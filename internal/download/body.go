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
	rate      *rateMeter    // nil when there is no minimum rate
	total     time.Duration // the total timeout, for messages; 0 when off
	err       error         // sticky: once a read failed, every later read fails the same way
}

func newGuardedReader(rc io.ReadCloser, max int64, idle time.Duration, rate *rateMeter, total time.Duration,
	parent, reqCtx context.Context, cancel context.CancelFunc, url string, secrets []string) *guardedReader {
	r := &guardedReader{
		rc: rc, max: max, remaining: max, idle: idle, rate: rate, total: total,
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
	start := time.Now()
	n, err := r.rc.Read(p)
	waited := time.Since(start)
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
		if r.rate != nil {
			if slow := r.rate.add(n, waited); slow != nil {
				r.err = &Error{Kind: KindTooSlow, URL: r.url, Err: slow}
				r.cancel() // stop the transfer now, as for the byte cap
				return n, r.err
			}
		}
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
	case r.parent.Err() != nil:
		return &Error{Kind: KindTimeout, URL: r.url, Err: context.DeadlineExceeded}
	case errors.Is(r.reqCtx.Err(), context.DeadlineExceeded):
		return &Error{Kind: KindTimeout, URL: r.url, Err: fmt.Errorf("total timeout of %s: %w", r.total, context.DeadlineExceeded)}
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

// rateSlots is how many slots the rate window is cut into; the rate is judged over the last rateSlots-1
// full slots plus the current one, i.e. over 90 to 100% of the window.
const rateSlots = 10

// rateMeter enforces a minimum body rate, averaged over a sliding window of the time spent inside Read,
// i.e. waiting for the link. Time the caller spends between reads (writing the data elsewhere) is not
// counted, so a slow consumer is never blamed on the link. The first judgement is made once a whole
// window has been spent waiting, so a small file that arrives within one window is never judged, and a
// drip is abandoned at the first read that returns after one window of waiting: at most RateWindow plus
// one IdleTimeout after the body opened.
//
// It is used only by the goroutine that calls Read.
type rateMeter struct {
	min    int64 // bytes per second
	window time.Duration
	slot   time.Duration // window / rateSlots
	waited time.Duration // total time spent waiting in Read
	cur    int64         // index of the slot `waited` falls in
	bytes  [rateSlots]int64
}

func newRateMeter(min int64, window time.Duration) *rateMeter {
	if min <= 0 || window <= 0 {
		return nil
	}
	return &rateMeter{min: min, window: window, slot: max(window/rateSlots, time.Nanosecond)}
}

// add records n bytes received after waiting d and returns an error when, once a whole window has been
// waited, the bytes received over the last window are fewer than min per second.
func (m *rateMeter) add(n int, d time.Duration) error {
	m.waited += d
	idx := int64(m.waited / m.slot)
	if idx-m.cur >= rateSlots {
		m.bytes = [rateSlots]int64{}
	} else {
		for i := m.cur + 1; i <= idx; i++ {
			m.bytes[i%rateSlots] = 0
		}
	}
	m.cur = idx
	m.bytes[idx%rateSlots] += int64(n)
	if m.waited < m.window {
		return nil
	}
	var sum int64
	for _, b := range m.bytes {
		sum += b
	}
	covered := time.Duration(rateSlots-1)*m.slot + (m.waited - time.Duration(idx)*m.slot)
	if float64(sum) >= float64(m.min)*covered.Seconds() {
		return nil
	}
	return fmt.Errorf("body arrived at %.1f bytes/s over the last %s spent waiting, below the minimum of %d bytes/s",
		float64(sum)/covered.Seconds(), covered.Round(time.Millisecond), m.min)
}
