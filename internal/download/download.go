// Package download fetches live response result files from the SAS links that the MDE API hands out.
//
// The link is untrusted input: it arrives from an API response and is followed without credentials. The
// Downloader therefore allows only HTTPS to configured hosts, re-checks every redirect, refuses to dial
// private addresses for hosts it trusts only by suffix (SSRF), never sends Authorization or cookies,
// streams the body under a byte cap, an idle timeout, a minimum rate and a total timeout, and keeps the
// SAS signature out of every error, log line and returned value.
//
// Downloads may go through an egress proxy (HTTPS_PROXY/NO_PROXY, or Config.ProxyURL) by CONNECT. The
// allow-list still applies to every link and redirect before anything is sent, but the address the proxy
// connects to is out of sight: the dial-time public-address check then applies only to direct dials.
package download

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// MinRateWindow is the sliding interval over which the service judges MinRate. It is a fixed rule, not a
// setting (LR_DOWNLOAD_MIN_RATE documents it); the service passes it as Config.RateWindow, and tests pass
// shorter windows.
const MinRateWindow = 30 * time.Second

const (
	// maxRedirects is how many redirects a download may follow; Azure blob links do not redirect at all,
	// so a few hops only tolerate a fronting proxy.
	maxRedirects = 3
	// errorBodyLimit caps how much of an error response is read to find the Azure <Code>.
	errorBodyLimit = 4 << 10
	userAgent      = "lr-relay"
)

// Config configures a Downloader. It has no defaults: they live in the configuration (internal/config,
// LR_DOWNLOAD_*), and New refuses a Config whose required fields are not filled in.
type Config struct {
	// AllowHTTP allows plain http links (LR_DOWNLOAD_ALLOW_HTTP). Only for tests and the demo: real links
	// are https, and http would expose the signature on the wire.
	AllowHTTP bool
	// AllowedHosts lists the hosts links may point to (LR_DOWNLOAD_ALLOWED_HOSTS); at least one. An entry starting with "." matches any host name ending in it (at least one
	// more label; case-insensitive) on port 443, or on the port the entry names (".zone.example:8443"),
	// and such hosts must resolve to public addresses. Any other entry is an exact host, host:port or IP
	// (port omitted = any port), exempt from the public-address check because an operator named it on
	// purpose (tests and the demo use "127.0.0.1:PORT").
	AllowedHosts []string
	// MaxBytes caps the body as received, i.e. compressed for GetFile (LR_DOWNLOAD_MAX_BYTES).
	MaxBytes int64
	// Timeout bounds connecting, the TLS handshake and waiting for the response headers.
	Timeout time.Duration
	// IdleTimeout bounds the time a single body read may wait without receiving any byte, which ends
	// slow-drip bodies that would otherwise hold a worker forever.
	IdleTimeout time.Duration
	// TotalTimeout, when non-zero, bounds the whole download from Open to the last Read
	// (LR_DOWNLOAD_TOTAL_TIMEOUT). 0 means no total bound.
	TotalTimeout time.Duration
	// MinRate, when non-zero, is the slowest acceptable body rate in bytes per second
	// (LR_DOWNLOAD_MIN_RATE), averaged over the last RateWindow spent waiting in Read: a body below it
	// fails with KindTooSlow. 0 means no minimum.
	MinRate int64
	// RateWindow is the sliding interval of MinRate (MinRateWindow in the service); required when MinRate
	// is set.
	RateWindow time.Duration
	// ProxyURL, when set, is the egress proxy every https download goes through by CONNECT
	// (LR_DOWNLOAD_PROXY), overriding HTTPS_PROXY and NO_PROXY. When empty, the environment decides as
	// for http.ProxyFromEnvironment. Plain http links (tests only) are never proxied: the proxy would
	// see the signed URL.
	ProxyURL string
	// Now is the clock used to judge the link's `se` expiry; nil means time.Now.
	Now func() time.Time
	// Concurrency is how many downloads may run at once (the relay's workers); it sizes the connection
	// pool so that concurrent downloads from one storage account reuse their TLS connections (at least 4
	// idle connections per host are kept whatever it is). At least 1.
	Concurrency int
}

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBytes <= 0 {
		errs = append(errs, fmt.Errorf("LR_DOWNLOAD_MAX_BYTES must be positive, got %d", c.MaxBytes))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("download timeout must be positive, got %s", c.Timeout))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("download idle timeout must be positive, got %s", c.IdleTimeout))
	}
	if c.TotalTimeout < 0 {
		errs = append(errs, errors.New("download total timeout must not be negative"))
	}
	if c.MinRate < 0 {
		errs = append(errs, errors.New("download minimum rate must not be negative"))
	}
	if c.RateWindow < 0 || (c.MinRate > 0 && c.RateWindow == 0) {
		errs = append(errs, fmt.Errorf("download rate window must be positive when a minimum rate is set, got %s", c.RateWindow))
	}
	if c.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("download concurrency must be at least 1, got %d", c.Concurrency))
	}
	if c.ProxyURL != "" {
		if _, err := ParseProxyURL(c.ProxyURL); err != nil {
			errs = append(errs, fmt.Errorf("LR_DOWNLOAD_PROXY: %w", err))
		}
	}
	if len(c.AllowedHosts) == 0 {
		errs = append(errs, errors.New("LR_DOWNLOAD_ALLOWED_HOSTS must name at least one host"))
	}
	for _, h := range c.AllowedHosts {
		if _, err := parseRule(h); err != nil {
			errs = append(errs, fmt.Errorf("LR_DOWNLOAD_ALLOWED_HOSTS: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Downloader opens result links. It is safe for concurrent use; it keeps a pool of idle connections.
type Downloader struct {
	cfg     Config
	log     zerolog.Logger
	rules   []hostRule
	now     func() time.Time
	client  *http.Client
	tr      *http.Transport
	dialer  *net.Dialer // for literal hosts
	guarded *net.Dialer // for suffix hosts: refuses non-public addresses
	// lookup resolves suffix-matched hosts. Tests replace it to make a trusted-looking name resolve to a
	// private address, which the guarded dialer must then refuse.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// proxyURL is the parsed Config.ProxyURL, nil when the environment decides through envProxy.
	proxyURL *url.URL
	envProxy func(*http.Request) (*url.URL, error)
	// proxies holds the host:port (lowercase) of every proxy a request was sent to. Those addresses come
	// from the operator (Config or environment), so dialContext dials them as it would a literal entry,
	// without the public-address check: corporate proxies live on private addresses.
	proxies sync.Map
}

// ParseProxyURL checks an egress proxy URL: http or https scheme, a host, nothing else but an optional
// port and user info. Errors never repeat the URL's password.
func ParseProxyURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, errors.New("not a valid URL (want e.g. http://proxy.example:3128)")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("scheme %q is not supported (want http:// or https://, the proxy is used by CONNECT)", u.Scheme)
	}
	if u.Hostname() == "" || u.Opaque != "" {
		return nil, fmt.Errorf("%s has no host", u.Redacted())
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%s must not have a path, query or fragment", u.Redacted())
	}
	return u, nil
}

// proxyAddr is the host:port the Transport dials to reach proxy u, lowercased.
func proxyAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	return strings.ToLower(net.JoinHostPort(u.Hostname(), port))
}

// New checks cfg and builds a Downloader with its own HTTP client: the proxy of
// Config.ProxyURL or of the environment, no cookie jar, no credentials, no transparent decompression (so
// MaxBytes counts what actually crosses the wire and a gzip file arrives as gzip), HTTP/1.1 over TLS 1.2+.
func New(cfg Config, log zerolog.Logger) (*Downloader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("download config: %w", err)
	}
	d := &Downloader{cfg: cfg, log: log, now: cfg.Now, envProxy: http.ProxyFromEnvironment}
	if cfg.ProxyURL != "" {
		d.proxyURL, _ = ParseProxyURL(cfg.ProxyURL) // validated above
		log.Info().Str("proxy", d.proxyURL.Host).Msg("downloads go through the configured proxy (LR_DOWNLOAD_PROXY)")
	}
	if d.now == nil {
		d.now = time.Now
	}
	for _, h := range cfg.AllowedHosts {
		r, _ := parseRule(h) // validated above
		d.rules = append(d.rules, r)
	}
	d.dialer = &net.Dialer{Timeout: cfg.Timeout}
	d.guarded = &net.Dialer{Timeout: cfg.Timeout, Control: controlPublicOnly}
	d.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	d.tr = &http.Transport{
		Proxy:                  d.proxy,
		DialContext:            d.dialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    cfg.Timeout,
		ResponseHeaderTimeout:  cfg.Timeout,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           max(16, 2*cfg.Concurrency),
		MaxIdleConnsPerHost:    max(4, cfg.Concurrency),
		IdleConnTimeout:        90 * time.Second,
	}
	d.client = &http.Client{Transport: d.tr, CheckRedirect: d.checkRedirect}
	return d, nil
}

// CloseIdleConnections closes pooled connections; call it on shutdown.
func (d *Downloader) CloseIdleConnections() { d.tr.CloseIdleConnections() }

// Open checks link, requests it and returns the body to stream once the server answered 200 OK with an
// acceptable Content-Length. Every failure is an *Error whose text carries only the redacted link.
// The caller must Close the returned Body. ctx cancellation aborts Open and any later Read.
func (d *Downloader) Open(ctx context.Context, link string) (*Body, error) {
	red := Redact(link)
	secrets := secretsOf(link)
	fail := func(e *Error) (*Body, error) {
		d.log.Debug().Str("url", red).Str("kind", e.Kind.String()).Int("status", e.Status).
			Str("code", e.Code).Bool("retryable", e.Retryable()).Msg("download refused or failed")
		return nil, e
	}

	u, err := url.Parse(link)
	if err != nil {
		return fail(&Error{Kind: KindDisallowed, URL: red, Err: errors.New("link is not a valid URL")})
	}
	if err := d.checkURL(u); err != nil {
		return fail(&Error{Kind: KindDisallowed, URL: red, Err: err})
	}
	if exp, ok := sasExpiry(u); ok && !d.now().Before(exp) {
		return fail(&Error{Kind: KindExpired, URL: red,
			Err: fmt.Errorf("link expired at %s", exp.UTC().Format(time.RFC3339))})
	}
	if err := ctx.Err(); err != nil {
		return fail(ctxError(err, red))
	}

	reqCtx, cancel := context.WithCancel(ctx)
	if d.cfg.TotalTimeout > 0 {
		reqCtx, cancel = context.WithTimeout(ctx, d.cfg.TotalTimeout)
	}
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return fail(&Error{Kind: KindDisallowed, URL: red, Err: errors.New("link cannot be requested")})
	}
	// A fresh request carries no Authorization or Cookie; set only what identifies us.
	req.Header.Set("User-Agent", userAgent)

	resp, err := d.client.Do(req)
	if err != nil {
		cancel()
		return fail(d.doError(ctx, reqCtx, err, red, secrets))
	}
	body := newGuardedReader(resp.Body, d.cfg.MaxBytes, d.cfg.IdleTimeout, newRateMeter(d.cfg.MinRate, d.cfg.RateWindow),
		d.cfg.TotalTimeout, ctx, reqCtx, cancel, red, secrets)

	if resp.StatusCode != http.StatusOK {
		e := statusError(resp, body, red, secrets)
		_ = body.Close()
		return fail(e)
	}
	if resp.ContentLength > d.cfg.MaxBytes {
		_ = body.Close()
		return fail(&Error{Kind: KindTooLarge, URL: red,
			Err: fmt.Errorf("announced length %d exceeds the cap of %d bytes", resp.ContentLength, d.cfg.MaxBytes)})
	}
	name := fileName(resp.Header.Get("Content-Disposition"))
	if echoesSecret(name, secrets) {
		name = ""
	}
	d.log.Debug().Str("url", red).Int64("contentLength", resp.ContentLength).Str("name", name).Msg("download opened")
	return &Body{ReadCloser: body, Name: name, ContentLength: resp.ContentLength}, nil
}

// proxy is the Transport's Proxy func. It sends https requests through Config.ProxyURL, or the proxy the
// environment names for them (HTTPS_PROXY, NO_PROXY; never for localhost), and records the proxy's
// address so that dialContext lets it through. Plain http is never proxied: CONNECT is used only for
// https, so the proxy sees the host and port, never the signed URL (unless it intercepts TLS).
func (d *Downloader) proxy(req *http.Request) (*url.URL, error) {
	if req.URL.Scheme != "https" {
		return nil, nil
	}
	u := d.proxyURL
	if u == nil {
		var err error
		if u, err = d.envProxy(req); err != nil {
			// net/http's message quotes the variable's value, which may hold the proxy password.
			return nil, errors.New("HTTPS_PROXY does not hold a valid proxy URL")
		}
		if u == nil {
			return nil, nil
		}
	}
	d.proxies.Store(proxyAddr(u), true)
	return u, nil
}

// checkRedirect re-applies the link rules to every hop and strips anything that could carry a credential
// or the signature (net/http sets Referer to the previous URL, sig included).
func (d *Downloader) checkRedirect(req *http.Request, via []*http.Request) error {
	red := Redact(req.URL.String())
	if len(via) > maxRedirects {
		return &Error{Kind: KindDisallowed, URL: red, Err: fmt.Errorf("more than %d redirects", maxRedirects)}
	}
	if err := d.checkURL(req.URL); err != nil {
		return &Error{Kind: KindDisallowed, URL: red, Err: fmt.Errorf("redirect refused: %w", err)}
	}
	for _, h := range []string{"Authorization", "Proxy-Authorization", "Cookie", "Referer"} {
		req.Header.Del(h)
	}
	return nil
}

// doError classifies a failure of http.Client.Do. The *url.Error that net/http returns embeds the full
// link, so it is never passed on: only its cause, scrubbed, is kept.
func (d *Downloader) doError(ctx, reqCtx context.Context, err error, red string, secrets []string) *Error {
	var de *Error
	if errors.As(err, &de) { // from checkRedirect; already redacted
		return de
	}
	var ae *addrError
	if errors.As(err, &ae) {
		return &Error{Kind: KindDisallowed, URL: red, Err: ae}
	}
	var he *hostError
	if errors.As(err, &he) {
		return &Error{Kind: KindDisallowed, URL: red, Err: he}
	}
	if ctx.Err() != nil {
		return ctxError(ctx.Err(), red)
	}
	if errors.Is(reqCtx.Err(), context.DeadlineExceeded) {
		return &Error{Kind: KindTimeout, URL: red, Err: fmt.Errorf("total timeout of %s: %w", d.cfg.TotalTimeout, context.DeadlineExceeded)}
	}
	cause := err
	var ue *url.Error
	if errors.As(err, &ue) {
		cause = ue.Err
	}
	cause = scrub(cause, secrets)
	var ne net.Error
	if errors.As(cause, &ne) && ne.Timeout() {
		return &Error{Kind: KindTimeout, URL: red, Err: cause}
	}
	return &Error{Kind: KindNetwork, URL: red, Err: cause}
}

// ctxError maps the caller's context error: cancellation is shutdown, a deadline is a timeout.
func ctxError(err error, red string) *Error {
	if errors.Is(err, context.Canceled) {
		return &Error{Kind: KindCanceled, URL: red, Err: err}
	}
	return &Error{Kind: KindTimeout, URL: red, Err: err}
}

// azureError is the XML error body of Azure Storage.
type azureError struct {
	Code string `xml:"Code"`
}

// statusError reads at most errorBodyLimit bytes of an error response to find the Azure error code and
// classifies the status. The Azure <Message> is not kept: it is untrusted free text and, for signature
// mismatches, quotes the string-to-sign.
func statusError(resp *http.Response, body io.Reader, red string, secrets []string) *Error {
	e := &Error{Kind: KindStatus, Status: resp.StatusCode, URL: red}
	buf, _ := io.ReadAll(io.LimitReader(body, errorBodyLimit))
	buf = bytes.TrimPrefix(bytes.TrimSpace(buf), []byte("\xef\xbb\xbf"))
	var ae azureError
	if bytes.HasPrefix(buf, []byte("<")) && xml.Unmarshal(buf, &ae) == nil {
		e.Code = cleanCode(ae.Code)
	}
	if e.Code == "" {
		// Azure also names the code in a header, which survives a truncated body.
		e.Code = cleanCode(resp.Header.Get("x-ms-error-code"))
	}
	if echoesSecret(e.Code, secrets) {
		e.Code = ""
	}
	if resp.StatusCode == http.StatusForbidden && e.Code == "AuthenticationFailed" {
		e.Kind = KindExpired
	}
	return e
}

// cleanCode keeps an error code only if it looks like one (a short identifier), since it comes from an
// untrusted body and ends up in logs.
func cleanCode(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 64 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return ""
		}
	}
	return s
}

// sasExpiry returns the link's signed expiry `se`, in the ISO 8601 forms Azure accepts. A missing or
// unparseable value yields false and the server decides.
func sasExpiry(u *url.URL) (time.Time, bool) {
	se := u.Query().Get("se")
	if se == "" {
		return time.Time{}, false
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04Z07:00", "2006-01-02"} {
		if t, err := time.Parse(layout, se); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}
