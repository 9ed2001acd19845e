package testutil

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// NewPipeServer starts an httptest.Server for h on an in-memory network (net.Pipe) instead of a loopback
// socket, and closes it when the test ends. Its Client reaches it; nothing else can. Use it inside a
// testing/synctest bubble: time there advances only when every goroutine is durably blocked, and a
// goroutine waiting on a socket never is, while one waiting on a pipe is.
func NewPipeServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = l
	srv.Start()
	srv.Client().Transport.(*http.Transport).DialContext = l.dial
	t.Cleanup(srv.Close)
	return srv
}

// pipeListener hands the server end of a net.Pipe to Accept for every dial.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pipeAddr is the address of the in-memory listener; it becomes the host of the server's URL. It is a
// loopback address, which code under test accepts for plain http, on port 0, so that a client that is not
// the server's own fails at once instead of reaching another server.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "127.0.0.1:0" }
