package download

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const payload = "\x1f\x8b\x08\x00 gzip bytes of the collected file"

func servePayload(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="OfficeClickToRun.dmp.zip.gz"`)
	_, _ = io.WriteString(w, payload)
}

func TestOpenServesBody(t *testing.T) {
	tests := []struct {
		name      string
		useTLS    bool
		allowHTTP bool
	}{
		{name: "https literal host", useTLS: true},
		{name: "http allowed with AllowHTTP", allowHTTP: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, tt.useTLS, servePayload)
			var tlsSrv []*httptest.Server
			if tt.useTLS {
				tlsSrv = append(tlsSrv, srv.Server)
			}
			d := newTestDownloader(t, Config{AllowHTTP: tt.allowHTTP, AllowedHosts: []string{srv.addr()}}, tlsSrv...)
			b, err := d.Open(ctxT(t), blobLink(srv.URL))
			if err != nil {
				assertErrNoSecret(t, err)
				t.Fatalf("Open: %v", err)
			}
			defer b.Close()
			got, err := io.ReadAll(b)
			if err != nil {
				t.Fatalf("ReadAll: %v", err)
			}
			if string(got) != payload {
				t.Errorf("body = %q, want %q", got, payload)
			}
			if b.Name != "OfficeClickToRun.dmp.zip.gz" {
				t.Errorf("Name = %q, want %q", b.Name, "OfficeClickToRun.dmp.zip.gz")
			}
			if b.ContentLength != int64(len(payload)) {
				t.Errorf("ContentLength = %d, want %d", b.ContentLength, len(payload))
			}
			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := b.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

func TestOpenRefusesLink(t *testing.T) {
	srv := newServer(t, false, servePayload)
	_, port, _ := net.SplitHostPort(srv.addr())
	otherPort := strconv.Itoa(mustAtoi(t, port) + 1)
	tests := []struct {
		name      string
		allowHTTP bool
		allowed   []string
		link      string
	}{
		{name: "plain http refused", allowed: []string{srv.addr()}, link: blobLink(srv.URL)},
		{name: "host not allowed", allowHTTP: true, allowed: []string{"127.0.0.2:" + port}, link: blobLink(srv.URL)},
		{name: "other port of allowed host", allowHTTP: true, allowed: []string{"127.0.0.1:" + otherPort}, link: blobLink(srv.URL)},
		{name: "scheme ftp", allowHTTP: true, allowed: []string{srv.addr()}, link: "ftp://" + srv.addr() + "/x?sig=" + testSig},
		{name: "user info would become basic auth", allowHTTP: true, allowed: []string{srv.addr()},
			link: "http://user:" + testSig + "@" + srv.addr() + "/x?sig=" + testSig},
		{name: "unparseable link", allowHTTP: true, allowed: []string{srv.addr()},
			link: "http://" + srv.addr() + "/%zz?sig=" + testSig},
		{name: "control character in link", allowHTTP: true, allowed: []string{srv.addr()},
			link: "http://" + srv.addr() + "/x\n?sig=" + testSig},
		{name: "lookalike suffix", link: blobLink("https://evilblob.core.windows.net")},
		{name: "bare zone", link: blobLink("https://blob.core.windows.net")},
		{name: "zone as a label of another domain", link: blobLink("https://x.blob.core.windows.net.evil.example")},
		{name: "ip literal under default rules", link: blobLink("https://169.254.169.254")},
		{name: "suffix host on port 22", link: blobLink("https://acct.blob.core.windows.net:22")},
		{name: "suffix host on port 8443", link: blobLink("https://acct.blob.core.windows.net:8443")},
		{name: "suffix host on http port 80", allowHTTP: true, link: blobLink("http://acct.blob.core.windows.net")},
		{name: "suffix rule with port, other port", allowed: []string{".blob.test:8443"}, link: blobLink("https://acct.blob.test:9443")},
		{name: "suffix rule with port, default port", allowed: []string{".blob.test:8443"}, link: blobLink("https://acct.blob.test")},
		{name: "azure host address literal", link: blobLink("https://168.63.129.16")},
		{name: "ipv4-compatible literal", link: blobLink("https://[::127.0.0.1]")},
		{name: "non-ascii host", link: blobLink("https://x.blob.core.windows.net\u3002evil.example")},
		{name: "relative link", link: "/x?sig=" + testSig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDownloader(t, Config{AllowHTTP: tt.allowHTTP, AllowedHosts: tt.allowed})
			before := srv.hits.Load()
			b, err := d.Open(ctxT(t), tt.link)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded, want KindDisallowed")
			}
			assertErrNoSecret(t, err)
			if got := kindOf(err); got != KindDisallowed {
				t.Errorf("kind = %v, want %v (err %v)", got, KindDisallowed, err)
			}
			if got := srv.hits.Load() - before; got != 0 {
				t.Errorf("server got %d requests, want 0", got)
			}
		})
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRedirects(t *testing.T) {
	outsider := newServer(t, false, servePayload) // never allowed
	target := newServer(t, false, servePayload)   // allowed, plain http
	redirectTo := func(loc string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			http.SetCookie(w, &http.Cookie{Name: "session", Value: "cookie-value"})
			http.Redirect(w, r, loc, http.StatusFound)
		}
	}
	tests := []struct {
		name      string
		useTLS    bool
		allowHTTP bool
		location  string
		wantKind  Kind // 0 = success
	}{
		{name: "to allowed host", allowHTTP: true, location: blobLink(target.URL)},
		{name: "to disallowed host", allowHTTP: true, location: blobLink(outsider.URL), wantKind: KindDisallowed},
		{name: "https to http", useTLS: true, location: blobLink(target.URL), wantKind: KindDisallowed},
		{name: "to metadata service", allowHTTP: true, location: "http://169.254.169.254/metadata?sig=" + testSig, wantKind: KindDisallowed},
		{name: "unparseable location", allowHTTP: true, location: "http://" + target.addr() + "/%zz?sig=" + testSig, wantKind: KindNetwork},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := newServer(t, tt.useTLS, func(w http.ResponseWriter, r *http.Request) {
				// http.Redirect would clean the path; write the header as a hostile server would.
				http.SetCookie(w, &http.Cookie{Name: "session", Value: "cookie-value"})
				w.Header().Set("Location", tt.location)
				w.WriteHeader(http.StatusFound)
			})
			var tlsSrv []*httptest.Server
			if tt.useTLS {
				tlsSrv = append(tlsSrv, first.Server)
			}
			d := newTestDownloader(t, Config{AllowHTTP: tt.allowHTTP, AllowedHosts: []string{first.addr(), target.addr()}}, tlsSrv...)
			outBefore, targetBefore := outsider.hits.Load(), target.hits.Load()
			b, err := d.Open(ctxT(t), blobLink(first.URL))
			if err != nil {
				assertErrNoSecret(t, err)
			}
			if tt.wantKind == 0 {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				got, _ := io.ReadAll(b)
				b.Close()
				if string(got) != payload {
					t.Errorf("body = %q, want %q", got, payload)
				}
				hs := target.allHeaders()
				last := hs[len(hs)-1]
				for _, h := range []string{"Authorization", "Cookie", "Referer", "Proxy-Authorization"} {
					if v := last.Get(h); v != "" {
						t.Errorf("redirect target got %s: %q, want none", h, v)
					}
				}
				return
			}
			if err == nil {
				b.Close()
				t.Fatalf("Open succeeded, want %v", tt.wantKind)
			}
			if got := kindOf(err); got != tt.wantKind {
				t.Errorf("kind = %v, want %v (err %v)", got, tt.wantKind, err)
			}
			if got := outsider.hits.Load() - outBefore; got != 0 {
				t.Errorf("disallowed host got %d requests, want 0", got)
			}
			if got := target.hits.Load() - targetBefore; got != 0 {
				t.Errorf("target got %d requests, want 0", got)
			}
		})
	}

	t.Run("redirect loop", func(t *testing.T) {
		var loop *server
		loop = newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
			redirectTo(blobLink(loop.URL))(w, r)
		})
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{loop.addr()}})
		_, err := d.Open(ctxT(t), blobLink(loop.URL))
		assertErrNoSecret(t, err)
		if got := kindOf(err); got != KindDisallowed {
			t.Errorf("kind = %v, want %v (err %v)", got, KindDisallowed, err)
		}
		if got, want := loop.hits.Load(), int32(maxRedirects+1); got != want {
			t.Errorf("requests = %d, want %d", got, want)
		}
	})
}

// TestSuffixHostMustBePublic uses the lookup hook to make a host under a trusted suffix resolve to the
// loopback address of a test server: the guarded dialer must refuse it before connecting.
func TestSuffixHostMustBePublic(t *testing.T) {
	srv := newServer(t, false, servePayload)
	_, port, _ := net.SplitHostPort(srv.addr())
	tests := []struct {
		name    string
		answers []string
		v6      bool
	}{
		{name: "loopback", answers: []string{"127.0.0.1"}},
		{name: "metadata then loopback", answers: []string{"169.254.169.254", "127.0.0.1"}},
		{name: "ipv4-mapped loopback", answers: []string{"::ffff:127.0.0.1"}},
		{name: "private", answers: []string{"10.0.0.7"}},
		{name: "azure host address", answers: []string{"168.63.129.16"}},
		{name: "cgnat", answers: []string{"100.64.0.1"}},
		{name: "benchmarking", answers: []string{"198.18.0.1"}},
		{name: "documentation", answers: []string{"203.0.113.9"}},
		{name: "ipv4-compatible loopback", answers: []string{"::127.0.0.1"}, v6: true},
		{name: "6to4 of loopback", answers: []string{"2002:7f00:1::1"}, v6: true},
		{name: "teredo", answers: []string{"2001:0:4136:e378:8000:63bf:3fff:fdd2"}, v6: true},
		{name: "nat64 of metadata", answers: []string{"64:ff9b::a9fe:a9fe"}, v6: true},
		{name: "local-use nat64", answers: []string{"64:ff9b:1::808:808"}, v6: true},
		{name: "ipv6 loopback then unique-local", answers: []string{"::1", "fd00::1"}, v6: true},
	}
	// The guard refuses in the dialer's Control func, after the socket is created: IPv6 answers need a
	// kernel that can create IPv6 sockets.
	v6, v6err := net.Listen("tcp6", "[::1]:0")
	if v6err == nil {
		v6.Close()
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.v6 && v6err != nil {
				t.Skipf("no IPv6 sockets here: %v", v6err)
			}
			d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{".blob.test:" + port}})
			var looked []string
			d.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
				looked = append(looked, host)
				var out []netip.Addr
				for _, a := range tt.answers {
					out = append(out, netip.MustParseAddr(a))
				}
				return out, nil
			}
			before := srv.hits.Load()
			_, err := d.Open(ctxT(t), blobLink("http://acct.blob.test:"+port))
			assertErrNoSecret(t, err)
			if got := kindOf(err); got != KindDisallowed {
				t.Errorf("kind = %v, want %v (err %v)", got, KindDisallowed, err)
			}
			var ae *addrError
			if !errors.As(err, &ae) {
				t.Errorf("error %v does not come from the dial guard", err)
			}
			if len(looked) != 1 || looked[0] != "acct.blob.test" {
				t.Errorf("lookups = %q, want [acct.blob.test]", looked)
			}
			if got := srv.hits.Load() - before; got != 0 {
				t.Errorf("server got %d requests, want 0", got)
			}
		})
	}

	t.Run("literal entry for the same address is allowed", func(t *testing.T) {
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{".blob.test:" + port, srv.addr()}})
		b, err := d.Open(ctxT(t), blobLink(srv.URL))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		b.Close()
	})

	t.Run("redirect to suffix host resolving to loopback", func(t *testing.T) {
		first := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", blobLink("http://acct.blob.test:"+port))
			w.WriteHeader(http.StatusTemporaryRedirect)
		})
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{".blob.test:" + port, first.addr()}})
		d.lookup = func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		before := srv.hits.Load()
		_, err := d.Open(ctxT(t), blobLink(first.URL))
		assertErrNoSecret(t, err)
		if got := kindOf(err); got != KindDisallowed {
			t.Errorf("kind = %v, want %v (err %v)", got, KindDisallowed, err)
		}
		if got := srv.hits.Load() - before; got != 0 {
			t.Errorf("server got %d requests, want 0", got)
		}
	})
}

func TestSizeCap(t *testing.T) {
	const maxBytes = 1000
	tests := []struct {
		name          string
		size          int
		announce      bool
		wantOpenKind  Kind
		wantReadKind  Kind
		wantReadBytes int
	}{
		{name: "exactly the cap, announced", size: maxBytes, announce: true, wantReadBytes: maxBytes},
		{name: "exactly the cap, chunked", size: maxBytes, wantReadBytes: maxBytes},
		{name: "over the cap, announced", size: maxBytes + 1, announce: true, wantOpenKind: KindTooLarge},
		{name: "over the cap, chunked", size: 50 * maxBytes, wantReadKind: KindTooLarge, wantReadBytes: maxBytes},
		{name: "one byte over, chunked", size: maxBytes + 1, wantReadKind: KindTooLarge, wantReadBytes: maxBytes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
				if tt.announce {
					w.Header().Set("Content-Length", strconv.Itoa(tt.size))
				}
				body := bytes.Repeat([]byte("x"), tt.size)
				for len(body) > 0 { // several flushes force chunked encoding
					n := min(len(body), 300)
					_, _ = w.Write(body[:n])
					w.(http.Flusher).Flush()
					body = body[n:]
				}
			})
			d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()}, MaxBytes: maxBytes})
			b, err := d.Open(ctxT(t), blobLink(srv.URL))
			if err != nil {
				assertErrNoSecret(t, err)
			}
			if got := kindOf(err); got != tt.wantOpenKind {
				t.Fatalf("Open kind = %v, want %v (err %v)", got, tt.wantOpenKind, err)
			}
			if err != nil {
				return
			}
			defer b.Close()
			got, err := io.ReadAll(b)
			assertErrNoSecret(t, err)
			if kind := kindOf(err); kind != tt.wantReadKind {
				t.Errorf("read kind = %v, want %v (err %v)", kind, tt.wantReadKind, err)
			}
			if len(got) != tt.wantReadBytes {
				t.Errorf("read %d bytes, want %d", len(got), tt.wantReadBytes)
			}
			if tt.wantReadKind != 0 {
				// The error is sticky.
				if _, err2 := b.Read(make([]byte, 10)); kindOf(err2) != tt.wantReadKind {
					t.Errorf("second read error = %v, want kind %v", err2, tt.wantReadKind)
				}
			}
		})
	}
}

// stallServer sends head and then nothing until the client goes away; done is closed when the handler
// has returned, which proves the connection was torn down (nothing left blocked on either side).
func stallServer(t *testing.T, head string, headerDelay bool) (*server, chan struct{}) {
	done := make(chan struct{})
	srv := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		defer close(done)
		if headerDelay {
			<-r.Context().Done()
			return
		}
		_, _ = io.WriteString(w, head)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	return srv, done
}

func TestTimeouts(t *testing.T) {
	t.Run("idle body", func(t *testing.T) {
		srv, done := stallServer(t, "first bytes", false)
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()}, IdleTimeout: 100 * time.Millisecond})
		b, err := d.Open(ctxT(t), blobLink(srv.URL))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer b.Close()
		start := time.Now()
		got, err := io.ReadAll(b)
		assertErrNoSecret(t, err)
		if kind := kindOf(err); kind != KindTimeout {
			t.Errorf("kind = %v, want %v (err %v)", kind, KindTimeout, err)
		}
		var e *Error
		if errors.As(err, &e) && !e.Retryable() {
			t.Errorf("idle timeout not retryable")
		}
		if string(got) != "first bytes" {
			t.Errorf("got %q before the stall, want %q", got, "first bytes")
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("idle timeout took %v", el)
		}
		waitClosed(t, done)
	})

	t.Run("slow drip hits total timeout", func(t *testing.T) {
		srv := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-r.Context().Done():
					return
				case <-tick.C:
					_, _ = io.WriteString(w, ".")
					w.(http.Flusher).Flush()
				}
			}
		})
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()},
			IdleTimeout: time.Second, TotalTimeout: 200 * time.Millisecond})
		b, err := d.Open(ctxT(t), blobLink(srv.URL))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer b.Close()
		got, err := io.ReadAll(b)
		assertErrNoSecret(t, err)
		if kind := kindOf(err); kind != KindTimeout {
			t.Errorf("kind = %v, want %v (err %v)", kind, KindTimeout, err)
		}
		if len(got) == 0 {
			t.Errorf("got no bytes before the total timeout")
		}
	})

	t.Run("response headers", func(t *testing.T) {
		srv, done := stallServer(t, "", true)
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()}, Timeout: 100 * time.Millisecond})
		_, err := d.Open(ctxT(t), blobLink(srv.URL))
		assertErrNoSecret(t, err)
		if kind := kindOf(err); kind != KindTimeout {
			t.Errorf("kind = %v, want %v (err %v)", kind, KindTimeout, err)
		}
		waitClosed(t, done)
	})
}

func TestCancel(t *testing.T) {
	t.Run("during read", func(t *testing.T) {
		srv, done := stallServer(t, "x", false)
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()}})
		ctx, cancel := context.WithCancel(ctxT(t))
		b, err := d.Open(ctx, blobLink(srv.URL))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer b.Close()
		if _, err := b.Read(make([]byte, 1)); err != nil {
			t.Fatalf("first read: %v", err)
		}
		go func() {
			// Cancel only once the reader is blocked; the read below must return either way.
			time.Sleep(20 * time.Millisecond)
			cancel()
		}()
		_, err = io.ReadAll(b)
		assertErrNoSecret(t, err)
		if kind := kindOf(err); kind != KindCanceled {
			t.Errorf("kind = %v, want %v (err %v)", kind, KindCanceled, err)
		}
		if !errors.Is(err, context.Canceled) {
			t.Errorf("errors.Is(%v, context.Canceled) = false, want true", err)
		}
		waitClosed(t, done)
	})

	t.Run("before open", func(t *testing.T) {
		srv := newServer(t, false, servePayload)
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()}})
		ctx, cancel := context.WithCancel(ctxT(t))
		cancel()
		_, err := d.Open(ctx, blobLink(srv.URL))
		assertErrNoSecret(t, err)
		if kind := kindOf(err); kind != KindCanceled {
			t.Errorf("kind = %v, want %v (err %v)", kind, KindCanceled, err)
		}
		if got := srv.hits.Load(); got != 0 {
			t.Errorf("server got %d requests, want 0", got)
		}
	})
}

func TestErrorStatus(t *testing.T) {
	fixture := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name          string
		status        int
		body          []byte
		header        map[string]string
		wantKind      Kind
		wantCode      string
		wantRetryable bool
	}{
		{name: "expired sas", status: 403, body: fixture("azure-403-authenticationfailed.xml"),
			wantKind: KindExpired, wantCode: "AuthenticationFailed"},
		{name: "other 403 code", status: 403, body: fixture("azure-403-permissionmismatch.xml"),
			wantKind: KindStatus, wantCode: "AuthorizationPermissionMismatch"},
		{name: "403 without xml", status: 403, body: []byte("forbidden"), wantKind: KindStatus},
		{name: "blob not found", status: 404, body: fixture("azure-404-blobnotfound.xml"),
			wantKind: KindStatus, wantCode: "BlobNotFound"},
		{name: "server busy", status: 503, body: fixture("azure-503-serverbusy.xml"),
			wantKind: KindStatus, wantCode: "ServerBusy", wantRetryable: true},
		{name: "500 empty", status: 500, wantKind: KindStatus, wantRetryable: true},
		{name: "429", status: 429, wantKind: KindStatus, wantRetryable: true},
		{name: "code only in header, body too long", status: 403,
			body:     append(bytes.Repeat([]byte(" "), 5000), fixture("azure-403-authenticationfailed.xml")...),
			header:   map[string]string{"x-ms-error-code": "AuthenticationFailed"},
			wantKind: KindExpired, wantCode: "AuthenticationFailed"},
		{name: "hostile code echoing the signature", status: 403,
			body:     []byte("<Error><Code>" + testSigDecoded + "</Code></Error>"),
			wantKind: KindStatus},
		{name: "hostile code with markup", status: 403,
			body:     []byte("<Error><Code>Authentication Failed\n</Code></Error>"),
			wantKind: KindStatus},
		{name: "204 is not a download", status: 204, wantKind: KindStatus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(tt.status)
				_, _ = w.Write(tt.body)
			})
			d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()}})
			b, err := d.Open(ctxT(t), blobLink(srv.URL))
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded, want an error")
			}
			assertErrNoSecret(t, err)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if e.Kind != tt.wantKind || e.Code != tt.wantCode || e.Status != tt.status || e.Retryable() != tt.wantRetryable {
				t.Errorf("got kind=%v code=%q status=%d retryable=%v, want kind=%v code=%q status=%d retryable=%v",
					e.Kind, e.Code, e.Status, e.Retryable(), tt.wantKind, tt.wantCode, tt.status, tt.wantRetryable)
			}
		})
	}
}

func TestSignedExpiry(t *testing.T) {
	srv := newServer(t, false, servePayload)
	tests := []struct {
		name     string
		se       string // raw, already URL-encoded
		wantKind Kind
		wantHits int32
	}{
		{name: "past", se: "2021-02-04T15%3A59%3A59Z", wantKind: KindExpired},
		{name: "exactly now", se: "2021-02-04T16%3A00%3A00Z", wantKind: KindExpired},
		{name: "past with offset", se: "2021-02-04T16%3A30%3A00%2B01%3A00", wantKind: KindExpired},
		{name: "past without seconds", se: "2021-02-04T15%3A59Z", wantKind: KindExpired},
		{name: "past date only", se: "2021-02-03", wantKind: KindExpired},
		{name: "future", se: "2021-02-04T16%3A13%3A50Z", wantHits: 1},
		{name: "unparseable lets the server decide", se: "soon", wantHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()}})
			before := srv.hits.Load()
			link := srv.URL + "/c/blob?se=" + tt.se + "&sp=r&sv=2019-07-07&sr=b&sig=" + testSig
			b, err := d.Open(ctxT(t), link)
			if err == nil {
				b.Close()
			}
			assertErrNoSecret(t, err)
			if got := kindOf(err); got != tt.wantKind {
				t.Errorf("kind = %v, want %v (err %v)", got, tt.wantKind, err)
			}
			if got := srv.hits.Load() - before; got != tt.wantHits {
				t.Errorf("server got %d requests, want %d", got, tt.wantHits)
			}
		})
	}
}

// TestNoCredentialsSent checks that nothing that could authenticate reaches the blob host, whatever the
// process around the downloader has configured: the default client and transport carry a credential
// here, and the link host sets a cookie.
func TestNoCredentialsSent(t *testing.T) {
	var srv *server
	srv = newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/first" {
			http.SetCookie(w, &http.Cookie{Name: "session", Value: "cookie-value"})
			w.Header().Set("Location", blobLink(srv.URL))
			w.WriteHeader(http.StatusFound)
			return
		}
		servePayload(w, r)
	})
	// What a careless process might have done globally; the downloader must not pick any of it up.
	orig := http.DefaultTransport
	http.DefaultTransport = roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer caller-token")
		return orig.RoundTrip(r)
	})
	t.Cleanup(func() { http.DefaultTransport = orig })

	d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()}})
	ctx := context.WithValue(ctxT(t), struct{ k string }{"Authorization"}, "Bearer caller-token")
	for _, link := range []string{blobLink(srv.URL), srv.URL + "/first?sig=" + testSig} {
		b, err := d.Open(ctx, link)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		_, _ = io.Copy(io.Discard, b)
		b.Close()
	}
	hs := srv.allHeaders()
	if len(hs) != 3 {
		t.Fatalf("server saw %d requests, want 3", len(hs))
	}
	for i, h := range hs {
		for _, name := range []string{"Authorization", "Cookie", "Proxy-Authorization", "Referer"} {
			if v := h.Get(name); v != "" {
				t.Errorf("request %d carried %s: %q, want none", i, name, v)
			}
		}
		if got := h.Get("Accept-Encoding"); got != "" {
			t.Errorf("request %d asked for Accept-Encoding %q, want none (no transparent decompression)", i, got)
		}
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestNetworkErrorRedacted checks that the *url.Error net/http returns (which embeds the link) is
// replaced by a redacted error.
func TestNetworkErrorRedacted(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now

	d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{addr}})
	_, err = d.Open(ctxT(t), blobLink("http://"+addr))
	if err == nil {
		t.Fatal("Open succeeded against a closed port")
	}
	assertErrNoSecret(t, err)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindNetwork || !e.Retryable() {
		t.Errorf("got %v, want a retryable KindNetwork *Error", err)
	}
	if !strings.Contains(err.Error(), "sig=REDACTED") {
		t.Errorf("error %q does not show the redacted link", err)
	}
}

func TestTLSFailure(t *testing.T) {
	srv := newServer(t, true, servePayload)
	d := newTestDownloader(t, Config{AllowedHosts: []string{srv.addr()}}) // server cert not trusted
	_, err := d.Open(ctxT(t), blobLink(srv.URL))
	assertErrNoSecret(t, err)
	if kind := kindOf(err); kind != KindNetwork {
		t.Errorf("kind = %v, want %v (err %v)", kind, KindNetwork, err)
	}
	if got := srv.hits.Load(); got != 0 {
		t.Errorf("server handled %d requests over an untrusted TLS connection, want 0", got)
	}
}

func TestContentDispositionFromServer(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   string
	}{
		{name: "plain", header: `attachment; filename="result.gz"`, want: "result.gz"},
		{name: "traversal", header: `attachment; filename="../../etc/cron.d/x"`, want: "x"},
		{name: "echoes the signature", header: `attachment; filename="` + testSigDecoded[:20] + `.gz"`, want: ""},
		{name: "missing", header: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, false, func(w http.ResponseWriter, r *http.Request) {
				if tt.header != "" {
					w.Header().Set("Content-Disposition", tt.header)
				}
				_, _ = io.WriteString(w, payload)
			})
			d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{srv.addr()}})
			b, err := d.Open(ctxT(t), blobLink(srv.URL))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer b.Close()
			if b.Name != tt.want {
				t.Errorf("Name = %q, want %q", b.Name, tt.want)
			}
			assertNoSecret(t, "Name", b.Name)
		})
	}
}
