package download

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
)

// connectProxy is a real HTTP CONNECT proxy: it answers CONNECT by dialling and splicing bytes both ways,
// and records every target it was asked for. The link host names of the tests (acct.example.com, which
// the httptest certificate covers) are not in DNS, so the proxy plays the resolver: every target is
// dialled at upstream, the test's TLS server.
type connectProxy struct {
	*httptest.Server
	mu       sync.Mutex
	targets  []string // CONNECT targets, in order
	other    []string // requests that were not CONNECT
	auth     []string // Proxy-Authorization of each CONNECT
	upstream string
}

func newConnectProxy() *connectProxy {
	p := &connectProxy{}
	p.Server = httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	p.Config.ErrorLog = log.New(io.Discard, "", 0)
	p.Start()
	return p
}

func (p *connectProxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if r.Method != http.MethodConnect {
		p.other = append(p.other, r.Method+" "+r.URL.String())
		p.mu.Unlock()
		http.Error(w, "only CONNECT", http.StatusMethodNotAllowed)
		return
	}
	p.targets = append(p.targets, r.Host)
	p.auth = append(p.auth, r.Header.Get("Proxy-Authorization"))
	upstream := p.upstream
	p.mu.Unlock()
	if upstream == "" {
		http.Error(w, "no upstream", http.StatusBadGateway)
		return
	}
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer up.Close()
	conn, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, brw.Reader) // client to upstream, including anything already buffered
		_ = up.Close()
		close(done)
	}()
	_, _ = io.Copy(conn, up)
	_ = conn.Close()
	<-done
}

// reset clears the records and sets the upstream for the next test.
func (p *connectProxy) reset(upstream string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.targets, p.other, p.auth, p.upstream = nil, nil, nil, upstream
}

func (p *connectProxy) seen() (targets, other, auth []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...), append([]string(nil), p.other...), append([]string(nil), p.auth...)
}

// envProxy is the proxy that HTTPS_PROXY names for the whole test binary. http.ProxyFromEnvironment reads
// the environment once per process, so it is set before any test runs. It changes nothing for the other
// tests: their links are plain http (never proxied) or to 127.0.0.1 (never proxied from the environment).
var envProxy *connectProxy

// noProxyHost is in NO_PROXY: links to it are dialled directly.
const noProxyHost = "direct.example.com"

func TestMain(m *testing.M) {
	envProxy = newConnectProxy()
	for _, k := range []string{"HTTP_PROXY", "http_proxy", "https_proxy", "no_proxy", "REQUEST_METHOD"} {
		os.Unsetenv(k)
	}
	os.Setenv("HTTPS_PROXY", envProxy.URL)
	os.Setenv("NO_PROXY", noProxyHost)
	code := m.Run()
	envProxy.Close()
	os.Exit(code)
}

// proxiedLink is an MDE-shaped link to host on the port of the TLS server srv.
func proxiedLink(t *testing.T, host string, srv *server) string {
	t.Helper()
	_, port, err := net.SplitHostPort(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	return blobLink("https://" + net.JoinHostPort(host, port))
}

// noLookup makes any local name resolution fail the test: through a proxy, the proxy resolves.
func noLookup(t *testing.T, d *Downloader) {
	d.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		t.Errorf("resolved %q locally", host)
		return nil, errors.New("no lookup in this test")
	}
}

func TestProxy(t *testing.T) {
	srv := newServer(t, true, servePayload)
	_, port, _ := net.SplitHostPort(srv.addr())
	rule := ".example.com:" + port
	proxy := newConnectProxy()
	t.Cleanup(proxy.Close)
	// The proxy password has the shape of the suite's signature, so the harness fails the test if it
	// ever shows up in a log line.
	proxyURL := strings.Replace(proxy.URL, "http://", "http://proxyuser:"+testSigDecoded[:20]+"@", 1)
	target := "acct.example.com:" + port

	t.Run("allowed link goes through LR_DOWNLOAD_PROXY", func(t *testing.T) {
		proxy.reset(srv.addr())
		envProxy.reset(srv.addr())
		d := newTestDownloader(t, Config{AllowedHosts: []string{rule}, ProxyURL: proxyURL}, srv.Server)
		noLookup(t, d)
		before := srv.hits.Load()
		b, err := d.Open(ctxT(t), proxiedLink(t, "acct.example.com", srv))
		if err != nil {
			assertErrNoSecret(t, err)
			t.Fatalf("Open: %v", err)
		}
		got, err := io.ReadAll(b)
		b.Close()
		if err != nil || string(got) != payload {
			t.Fatalf("body = %q, %v; want %q", got, err, payload)
		}
		targets, other, auth := proxy.seen()
		if len(targets) != 1 || targets[0] != target {
			t.Errorf("CONNECT targets = %q, want [%s]", targets, target)
		}
		if len(other) != 0 {
			t.Errorf("proxy saw non-CONNECT requests %q (the signed URL must not reach it)", other)
		}
		if len(auth) != 1 || !strings.HasPrefix(auth[0], "Basic ") {
			t.Errorf("CONNECT Proxy-Authorization = %q, want the proxy URL's user info", auth)
		}
		if got := srv.hits.Load() - before; got != 1 {
			t.Errorf("server got %d requests, want 1", got)
		}
		if envTargets, _, _ := envProxy.seen(); len(envTargets) != 0 {
			t.Errorf("LR_DOWNLOAD_PROXY did not override HTTPS_PROXY: the environment's proxy saw %q", envTargets)
		}
	})

	t.Run("allowed link goes through HTTPS_PROXY", func(t *testing.T) {
		envProxy.reset(srv.addr())
		d := newTestDownloader(t, Config{AllowedHosts: []string{rule}}, srv.Server)
		noLookup(t, d)
		b, err := d.Open(ctxT(t), proxiedLink(t, "acct.example.com", srv))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		got, err := io.ReadAll(b)
		b.Close()
		if err != nil || string(got) != payload {
			t.Fatalf("body = %q, %v; want %q", got, err, payload)
		}
		if targets, _, _ := envProxy.seen(); len(targets) != 1 || targets[0] != target {
			t.Errorf("HTTPS_PROXY targets = %q, want [%s]", targets, target)
		}
	})

	t.Run("NO_PROXY host is dialled directly, with the public-address check", func(t *testing.T) {
		envProxy.reset(srv.addr())
		d := newTestDownloader(t, Config{AllowedHosts: []string{rule}}, srv.Server)
		var looked []string
		d.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
			looked = append(looked, host)
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		_, err := d.Open(ctxT(t), proxiedLink(t, noProxyHost, srv))
		assertErrNoSecret(t, err)
		var ae *addrError
		if kindOf(err) != KindDisallowed || !errors.As(err, &ae) {
			t.Errorf("err = %v, want the dial guard's refusal", err)
		}
		if len(looked) != 1 || looked[0] != noProxyHost {
			t.Errorf("lookups = %q, want [%s]", looked, noProxyHost)
		}
		if targets, _, _ := envProxy.seen(); len(targets) != 0 {
			t.Errorf("proxy saw %q for a NO_PROXY host", targets)
		}
	})

	// Every link below breaks the allow-list: it must be refused before any CONNECT is sent, with the
	// proxy from the configuration and with the one from the environment.
	refused := []struct{ name, link string }{
		{"host not allowed", proxiedLink(t, "evil.example.org", srv)},
		{"lookalike of the suffix", proxiedLink(t, "acct.example.com.evil.example.org", srv)},
		{"suffix host on another port", blobLink("https://acct.example.com:22")},
		{"metadata address literal", blobLink("https://169.254.169.254")},
		{"azure host address literal", blobLink("https://168.63.129.16")},
		{"loopback literal on the server's port", proxiedLink(t, "127.0.0.1", srv)},
		{"ipv4-compatible literal", proxiedLink(t, "::127.0.0.1", srv)},
		{"the proxy itself", blobLink("https://" + proxy.Listener.Addr().String())},
	}
	for _, mode := range []struct {
		name     string
		proxyURL string
		p        *connectProxy
	}{{"LR_DOWNLOAD_PROXY", proxyURL, proxy}, {"HTTPS_PROXY", "", envProxy}} {
		for _, tt := range refused {
			t.Run(mode.name+"/"+tt.name, func(t *testing.T) {
				mode.p.reset(srv.addr())
				d := newTestDownloader(t, Config{AllowedHosts: []string{rule}, ProxyURL: mode.proxyURL}, srv.Server)
				noLookup(t, d)
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
				if targets, other, _ := mode.p.seen(); len(targets)+len(other) != 0 {
					t.Errorf("proxy was asked for %q %q", targets, other)
				}
				if got := srv.hits.Load() - before; got != 0 {
					t.Errorf("server got %d requests, want 0", got)
				}
			})
		}
	}

	t.Run("redirect to a disallowed host is refused before its CONNECT", func(t *testing.T) {
		first := newServer(t, true, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", blobLink("https://evil.example.org:"+port))
			w.WriteHeader(http.StatusFound)
		})
		_, firstPort, _ := net.SplitHostPort(first.addr())
		proxy.reset(first.addr())
		d := newTestDownloader(t, Config{AllowedHosts: []string{rule, ".example.com:" + firstPort}, ProxyURL: proxyURL}, first.Server)
		noLookup(t, d)
		before := first.hits.Load()
		_, err := d.Open(ctxT(t), proxiedLink(t, "acct.example.com", first))
		assertErrNoSecret(t, err)
		if got := kindOf(err); got != KindDisallowed {
			t.Errorf("kind = %v, want %v (err %v)", got, KindDisallowed, err)
		}
		if got := first.hits.Load() - before; got != 1 {
			t.Errorf("first hop got %d requests, want 1", got)
		}
		if targets, _, _ := proxy.seen(); len(targets) != 1 || targets[0] != "acct.example.com:"+firstPort {
			t.Errorf("CONNECT targets = %q, want only the first hop", targets)
		}
	})

	t.Run("plain http links are never proxied", func(t *testing.T) {
		plain := newServer(t, false, servePayload)
		proxy.reset(plain.addr())
		d := newTestDownloader(t, Config{AllowHTTP: true, AllowedHosts: []string{plain.addr()}, ProxyURL: proxyURL})
		b, err := d.Open(ctxT(t), blobLink(plain.URL))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		b.Close()
		if targets, other, _ := proxy.seen(); len(targets)+len(other) != 0 {
			t.Errorf("proxy saw %q %q for a plain http link", targets, other)
		}
	})

	t.Run("unreachable proxy is a retryable network error without the password", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close()
		d := newTestDownloader(t, Config{AllowedHosts: []string{rule},
			ProxyURL: fmt.Sprintf("http://proxyuser:%s@%s", testSigDecoded[:20], dead)}, srv.Server)
		_, err = d.Open(ctxT(t), proxiedLink(t, "acct.example.com", srv))
		assertErrNoSecret(t, err)
		var e *Error
		if !errors.As(err, &e) || e.Kind != KindNetwork || !e.Retryable() {
			t.Errorf("err = %v, want a retryable network error", err)
		}
	})
}

func TestParseProxyURL(t *testing.T) {
	for _, tt := range []struct {
		raw, want string // want "" = valid
	}{
		{raw: "http://proxy.corp:3128"},
		{raw: "https://proxy.corp"},
		{raw: "http://user:pw@10.1.2.3:8080/"},
		{raw: "socks5://proxy:1080", want: `scheme "socks5" is not supported`},
		{raw: "proxy.corp:3128", want: "is not supported"},
		{raw: "http://", want: "has no host"},
		{raw: "http://user:hunter2@proxy:3128/path", want: "must not have a path"},
		{raw: "http://proxy:3128?x=1", want: "must not have a path"},
		{raw: "http://pro xy:3128", want: "not a valid URL"},
	} {
		t.Run(tt.raw, func(t *testing.T) {
			_, err := ParseProxyURL(tt.raw)
			if tt.want == "" {
				if err != nil {
					t.Errorf("ParseProxyURL = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseProxyURL = %v, want it to mention %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q repeats the password", err)
			}
		})
	}
}
