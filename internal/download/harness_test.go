package download

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/testutil"
)

// testSig is the SAS signature of every link in this suite, raw (URL-encoded) and decoded. No error
// string, log line, Name or Code produced by any test may contain either form.
const (
	testSig        = "Zm9vYmFyU2VjcmV0U2ln%2BQUJD%2FZGVm%3D"
	testSigDecoded = "Zm9vYmFyU2VjcmV0U2ln+QUJD/ZGVm="
)

// fixedNow is the clock of the suite; links expire an hour after it unless a test says otherwise.
var fixedNow = time.Date(2021, 2, 4, 16, 0, 0, 0, time.UTC)

// sasQuery builds the query of an MDE result link expiring at se.
func sasQuery(se time.Time) string {
	return "se=" + url.QueryEscape(se.UTC().Format(time.RFC3339)) + "&sp=r&sv=2019-07-07&sr=b&sig=" + testSig
}

// blobLink returns a link to base (scheme://host[:port]) shaped like a real MDE result link.
func blobLink(base string) string {
	return base + "/investigation-actions-data/0a1b2c3d/CustomPlaybookCommandOutput/0123456789abcdef0123456789abcdef?" +
		sasQuery(fixedNow.Add(time.Hour))
}

// assertNoSecret fails the test when s holds the signature in any form.
func assertNoSecret(t *testing.T, what, s string) {
	t.Helper()
	for _, sec := range []string{testSig, testSigDecoded, "Zm9vYmFyU2VjcmV0U2ln"} {
		if strings.Contains(s, sec) {
			t.Errorf("%s leaks the signature: %q", what, s)
		}
	}
}

// assertErrNoSecret checks the error and every error it wraps, and the URL of any *Error in the chain.
func assertErrNoSecret(t *testing.T, err error) {
	t.Helper()
	for e := err; e != nil; e = errors.Unwrap(e) {
		assertNoSecret(t, "error", e.Error())
		if de, ok := e.(*Error); ok {
			assertNoSecret(t, "Error.URL", de.URL)
			assertNoSecret(t, "Error.Code", de.Code)
		}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		t.Errorf("error chain holds a *url.Error (which embeds the raw link): %v", err)
	}
}

// newTestDownloader builds a Downloader with the suite clock and a debug logger whose whole output is
// checked for the signature when the test ends. Servers passed in are trusted for TLS.
// filled returns cfg with the bounds a test leaves at zero set to the service's defaults (LR_DOWNLOAD_*):
// New has no defaults of its own, so tests state only the bounds they exercise.
func filled(cfg Config) Config {
	if cfg.AllowedHosts == nil {
		cfg.AllowedHosts = []string{".blob.core.windows.net", ".blob.core.usgovcloudapi.net"}
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 4 << 30
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.MinRate > 0 && cfg.RateWindow == 0 {
		cfg.RateWindow = MinRateWindow
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 8
	}
	return cfg
}

func newTestDownloader(t *testing.T, cfg Config, tlsServers ...*httptest.Server) *Downloader {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return fixedNow }
	}
	d, err := New(filled(cfg), zerolog.New(logs).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if len(tlsServers) > 0 {
		pool := x509.NewCertPool()
		for _, s := range tlsServers {
			pool.AddCert(s.Certificate())
		}
		d.tr.TLSClientConfig.RootCAs = pool
	}
	t.Cleanup(func() {
		d.CloseIdleConnections()
		assertNoSecret(t, "logs", logs.String())
	})
	return d
}

// server is an httptest server that counts requests and records the headers of the last one.
type server struct {
	*httptest.Server
	hits    atomic.Int32
	mu      sync.Mutex
	headers []http.Header
}

func newServer(t testing.TB, useTLS bool, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		h(w, r)
	})
	s.Server = httptest.NewUnstartedServer(wrapped)
	// Refused TLS handshakes are expected in some tests; keep them out of the test output.
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	if useTLS {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// addr is the server's host:port, the literal AllowedHosts entry that trusts it.
func (s *server) addr() string { return s.Listener.Addr().String() }

func (s *server) allHeaders() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header(nil), s.headers...)
}

// kindOf returns the Kind of err, or 0 when err is not an *Error.
func kindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// waitClosed waits until done is closed, for a server handler to return.
func waitClosed(t *testing.T, done <-chan struct{}) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() error {
		select {
		case <-done:
			return nil
		default:
			return errors.New("the server handler has not returned")
		}
	})
}

// ctxT returns a context bounded by the test.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
