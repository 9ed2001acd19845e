package download

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name string
		link string
		want string
	}{
		{name: "mde link",
			link: "https://acct.blob.core.windows.net/investigation-actions-data/id/CustomPlaybookCommandOutput/ab?se=2021-02-04T16%3A13%3A50Z&sp=r&sv=2019-07-07&sr=b&sig=" + testSig,
			want: "https://acct.blob.core.windows.net/investigation-actions-data/id/CustomPlaybookCommandOutput/ab?se=2021-02-04T16%3A13%3A50Z&sp=r&sv=2019-07-07&sr=b&sig=REDACTED"},
		{name: "upper-case key", link: "https://h/p?SIG=" + testSig + "&sv=1", want: "https://h/p?SIG=REDACTED&sv=1"},
		{name: "unknown params are redacted", link: "https://h/p?token=abc&skoid=guid&sp=r", want: "https://h/p?token=REDACTED&skoid=REDACTED&sp=r"},
		{name: "encoded key", link: "https://h/p?%73ig=" + testSig, want: "https://h/p?%73ig=REDACTED"},
		{name: "user info and fragment dropped", link: "https://u:" + testSig + "@h/p?x=1#sig=" + testSig, want: "https://h/p?x=REDACTED"},
		{name: "no query", link: "https://h/p", want: "https://h/p"},
		{name: "empty values kept", link: "https://h/p?sig=&flag", want: "https://h/p?sig=&flag"},
		{name: "unparseable", link: "https://u:pw@h/%zz?sig=" + testSig, want: "https://h/%zz?REDACTED"},
		{name: "unparseable without query", link: "https://h/%zz", want: "https://h/%zz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Redact(tt.link)
			if got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.link, got, tt.want)
			}
			assertNoSecret(t, "Redact", got)
		})
	}
}

func TestScrub(t *testing.T) {
	link := "https://h/p?sig=" + testSig
	secrets := secretsOf(link)
	tests := []struct {
		name      string
		err       error
		wantSame  bool
		wantInMsg string
	}{
		{name: "harmless error kept", err: errors.New("connection reset"), wantSame: true},
		{name: "raw signature", err: fmt.Errorf("get %q: %w", link, errors.New("boom")), wantInMsg: "sig=REDACTED"},
		{name: "decoded signature", err: errors.New("bad " + testSigDecoded), wantInMsg: "bad REDACTED"},
		{name: "foreign signature in a location", err: errors.New(`failed to parse Location header "https://x/%zz?sig=other-secret&sp=r"`),
			wantInMsg: "sig=REDACTED&sp=r"},
		{name: "signature deep in the chain", err: fmt.Errorf("outer: %w", &hidden{inner: errors.New(testSig)}), wantInMsg: "outer: hidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := scrub(tt.err, secrets)
			if tt.wantSame {
				if got != tt.err {
					t.Errorf("scrub replaced a harmless error: %v", got)
				}
				return
			}
			assertErrNoSecret(t, got)
			if strings.Contains(got.Error(), "other-secret") {
				t.Errorf("scrub kept a foreign signature: %q", got)
			}
			if !strings.Contains(got.Error(), tt.wantInMsg) {
				t.Errorf("scrub = %q, want it to contain %q", got, tt.wantInMsg)
			}
			if errors.Unwrap(got) != nil {
				t.Errorf("scrubbed error still wraps %v", errors.Unwrap(got))
			}
		})
	}
}

// hidden hides its cause's text but still exposes it through Unwrap.
type hidden struct{ inner error }

func (h *hidden) Error() string { return "hidden" }
func (h *hidden) Unwrap() error { return h.inner }

func TestFileName(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   string
	}{
		{name: "quoted", header: `attachment; filename="x.gz"`, want: "x.gz"},
		{name: "token", header: `attachment; filename=x.gz`, want: "x.gz"},
		{name: "rfc 2231", header: `attachment; filename*=UTF-8''na%C3%AFve%20file.gz`, want: "naïve file.gz"},
		{name: "rfc 2231 wins", header: `attachment; filename="plain.gz"; filename*=UTF-8''fancy.gz`, want: "fancy.gz"},
		{name: "unix traversal", header: `attachment; filename="../../etc/passwd"`, want: "passwd"},
		{name: "windows path", header: `attachment; filename="C:\\Windows\\Temp\\dump.gz"`, want: "dump.gz"},
		{name: "encoded traversal", header: `attachment; filename*=UTF-8''..%2F..%2Fx.gz`, want: "x.gz"},
		{name: "only dots", header: `attachment; filename=".."`, want: ""},
		{name: "trailing separator", header: `attachment; filename="dir/"`, want: ""},
		{name: "newline", header: `attachment; filename*=UTF-8''a%0Ab.gz`, want: ""},
		{name: "nul", header: `attachment; filename*=UTF-8''a%00b.gz`, want: ""},
		{name: "escape sequence", header: `attachment; filename*=UTF-8''%1B%5B31mred.gz`, want: ""},
		{name: "bidi override", header: `attachment; filename*=UTF-8''invoice%E2%80%AEzg.exe`, want: ""},
		{name: "invalid utf-8", header: `attachment; filename*=UTF-8''%FF%FE.gz`, want: ""},
		{name: "alternate data stream", header: `attachment; filename="x.gz:evil"`, want: ""},
		{name: "too long", header: `attachment; filename="` + strings.Repeat("a", 300) + `"`, want: ""},
		{name: "malformed header", header: `attachment; filename="unterminated`, want: ""},
		{name: "no filename", header: `inline`, want: ""},
		{name: "empty", header: ``, want: ""},
		{name: "spaces trimmed", header: `attachment; filename="  x.gz  "`, want: "x.gz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fileName(tt.header); got != tt.want {
				t.Errorf("fileName(%q) = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestMatchHost(t *testing.T) {
	d, err := New(filled(Config{AllowedHosts: []string{".blob.core.windows.net", ".Blob.Core.UsGovCloudApi.Net.", "mirror.internal",
		"127.0.0.1:8443", "[::1]:9000", ".zone.test:8443"}}), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, port string
		want       match
	}{
		{"acct.blob.core.windows.net", "443", matchSuffix},
		{"ACCT.BLOB.CORE.WINDOWS.NET", "443", matchSuffix},
		{"acct.blob.core.windows.net.", "443", matchSuffix},
		{"a.b.blob.core.windows.net", "443", matchSuffix},
		{"acct.blob.core.usgovcloudapi.net", "443", matchSuffix},
		{"evilblob.core.windows.net", "443", matchNone},
		{"blob.core.windows.net", "443", matchNone},
		{"acct.blob.core.windows.net.evil.example", "443", matchNone},
		{"acct.table.core.windows.net", "443", matchNone},
		{"mirror.internal", "80", matchLiteral},
		{"mirror.internal", "8080", matchLiteral},
		{"x.mirror.internal", "80", matchNone},
		{"127.0.0.1", "8443", matchLiteral},
		{"127.0.0.1", "8444", matchNone},
		{"::1", "9000", matchLiteral},
		{"::1", "9001", matchNone},
		{"169.254.169.254", "80", matchNone},
		// A suffix rule matches port 443 only, unless the entry names a port.
		{"acct.blob.core.windows.net", "22", matchNone},
		{"acct.blob.core.windows.net", "80", matchNone},
		{"acct.blob.core.windows.net", "8443", matchNone},
		{"acct.blob.core.usgovcloudapi.net", "444", matchNone},
		{"x.zone.test", "8443", matchSuffix},
		{"x.zone.test", "443", matchNone},
		{"x.zone.test", "8444", matchNone},
		{"168.63.129.16", "443", matchNone},
		{"::127.0.0.1", "443", matchNone},
	}
	for _, tt := range tests {
		t.Run(tt.host+":"+tt.port, func(t *testing.T) {
			if got := d.matchHost(tt.host, tt.port); got != tt.want {
				t.Errorf("matchHost(%q, %q) = %d, want %d", tt.host, tt.port, got, tt.want)
			}
		})
	}
}

func TestIsPublic(t *testing.T) {
	tests := []struct {
		addr string
		want bool
	}{
		{"20.60.0.1", true}, // an Azure Storage address
		{"8.8.8.8", true},
		{"2603:1030::1", true},
		{"127.0.0.1", false},
		{"127.255.0.1", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"100.64.0.1", false},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"255.255.255.255", false},
		{"224.0.0.1", false},
		{"::", false},
		{"::1", false},
		{"fe80::1", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:169.254.169.254", false},
		{"64:ff9b::a9fe:a9fe", false}, // NAT64 of 169.254.169.254
		{"64:ff9b::808:808", true},    // NAT64 of 8.8.8.8 (DNS64 on an IPv6-only cluster)
		{"64:ff9b::a9f:1", false},     // NAT64 of 10.159.0.1
		{"64:ff9b::a83f:8110", false}, // NAT64 of 168.63.129.16
		{"ff02::1", false},
		// Azure's host address (WireServer) and the metadata service.
		{"168.63.129.16", false},
		{"168.63.129.17", true},
		{"::ffff:168.63.129.16", false},
		{"169.254.0.1", false},
		// Special-purpose IPv4 ranges.
		{"100.127.255.254", false}, // CGNAT 100.64.0.0/10
		{"100.128.0.1", true},
		{"198.18.0.1", false}, // benchmarking 198.18.0.0/15
		{"198.19.255.255", false},
		{"198.20.0.1", true},
		{"192.0.2.1", false},       // documentation
		{"198.51.100.1", false},    // documentation
		{"203.0.113.1", false},     // documentation
		{"192.88.99.1", false},     // 6to4 relay anycast
		{"192.0.0.9", false},       // IETF protocol assignments
		{"239.255.255.250", false}, // multicast
		{"240.0.0.1", false},
		// IPv4-compatible IPv6 (::a.b.c.d) is refused whatever it embeds.
		{"::127.0.0.1", false},
		{"::169.254.169.254", false},
		{"::8.8.8.8", false},
		// IPv4-mapped forms are judged as the IPv4 address they map (it is what gets dialled).
		{"::ffff:10.0.0.1", false},
		{"::ffff:100.64.0.1", false},
		{"::ffff:8.8.8.8", true},
		{"::ffff:0:127.0.0.1", false}, // IPv4-translated (SIIT)
		{"::ffff:0:8.8.8.8", false},
		// 6to4, Teredo and local-use NAT64 embed or relay to an IPv4 address: refused whole.
		{"2002:7f00:1::1", false},                       // 6to4 of 127.0.0.1
		{"2002:a9fe:a9fe::1", false},                    // 6to4 of 169.254.169.254
		{"2002:808:808::1", false},                      // 6to4 of 8.8.8.8
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", false}, // Teredo
		{"2001::1", false},
		{"2001:2::1", false},         // benchmarking
		{"64:ff9b:1::7f00:1", false}, // local-use NAT64
		{"64:ff9b:1:ffff::1", false},
		// Other special-purpose IPv6 ranges.
		{"2001:db8::1", false},     // documentation
		{"3fff::1", false},         // documentation
		{"5f00::1", false},         // SRv6 SIDs
		{"100::1", false},          // discard
		{"fec0::1", false},         // site-local
		{"ff05::1", false},         // multicast
		{"2a01:111:f100::1", true}, // a Microsoft address
		{"2001:200::1", true},      // outside 2001::/23
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := isPublic(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("isPublic(%s) = %v, want %v", tt.addr, got, tt.want)
			}
			err := controlPublicOnly("tcp", netip.AddrPortFrom(netip.MustParseAddr(tt.addr), 443).String(), nil)
			if got := err == nil; got != tt.want {
				t.Errorf("controlPublicOnly(%s) allowed = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	// service is what the relay passes with the default configuration.
	service := Config{AllowedHosts: []string{".blob.core.windows.net", ".blob.core.usgovcloudapi.net"}, MaxBytes: 4 << 30,
		Timeout: 30 * time.Second, IdleTimeout: 60 * time.Second, TotalTimeout: 2 * time.Hour, MinRate: 32 << 10,
		RateWindow: MinRateWindow, Concurrency: 8}
	with := func(change func(*Config)) Config {
		c := service
		change(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings, one per expected problem; none = valid
	}{
		{name: "the service's defaults", cfg: service},
		{name: "zero is refused: no defaults here", cfg: Config{},
			want: []string{"MAX_BYTES must be positive", "download timeout must be positive", "idle timeout must be positive",
				"concurrency must be at least 1", "ALLOWED_HOSTS must name at least one host"}},
		{name: "a minimum rate needs a window", cfg: with(func(c *Config) { c.RateWindow = 0 }), want: []string{"rate window"}},
		{name: "no minimum rate needs no window", cfg: with(func(c *Config) { c.MinRate, c.RateWindow = 0, 0 })},
		{name: "literal and suffix", cfg: with(func(c *Config) { c.AllowedHosts = []string{".blob.test", "127.0.0.1:8080", "[::1]:1", "host"} })},
		{name: "every problem at once",
			cfg: Config{MaxBytes: -1, Timeout: -1, IdleTimeout: -1, TotalTimeout: -1,
				MinRate: -1, RateWindow: -1, ProxyURL: "socks5://user:pw@proxy:1080", Concurrency: -1,
				AllowedHosts: []string{"", "https://x.blob.core.windows.net", "*.blob.core.windows.net", ".", ".x.net:0", ".:443", "h:0", "h:x"}},
			want: []string{"MAX_BYTES", "download timeout", "idle timeout", "total timeout", "minimum rate", "rate window", "concurrency",
				`LR_DOWNLOAD_PROXY: scheme "socks5" is not supported`, "empty entry", "not a URL",
				`write a suffix rule as ".blob.core.windows.net"`, `"." is not a valid suffix`, `".x.net:0" has an invalid port`,
				`".:443" is not a valid suffix`, `"h:0" has an invalid port`, `"h:x" has an invalid port`}},
		{name: "suffix rule with a port", cfg: with(func(c *Config) { c.AllowedHosts = []string{".blob.test:8443", ".x.net:443"} })},
		{name: "proxy", cfg: with(func(c *Config) { c.ProxyURL, c.MinRate, c.TotalTimeout = "http://user:pw@10.0.0.3:3128", 1, time.Hour })},
		{name: "proxy with a path", cfg: with(func(c *Config) { c.ProxyURL = "http://user:secretpw@10.0.0.3:3128/x" }),
			want: []string{"must not have a path"}},
		{name: "empty list", cfg: with(func(c *Config) { c.AllowedHosts = []string{} }), want: []string{"at least one host"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				if _, err := New(tt.cfg, zerolog.Nop()); err != nil {
					t.Errorf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want errors")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
			if _, err := New(tt.cfg, zerolog.Nop()); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}

func TestErrorRetryableAndText(t *testing.T) {
	tests := []struct {
		err           *Error
		wantRetryable bool
		wantText      string
	}{
		{&Error{Kind: KindExpired, Status: 403, Code: "AuthenticationFailed", URL: "https://h/p?sig=REDACTED"}, false,
			"download https://h/p?sig=REDACTED: expired (status 403 AuthenticationFailed)"},
		{&Error{Kind: KindStatus, Status: 404, Code: "BlobNotFound", URL: "u"}, false, "download u: status (status 404 BlobNotFound)"},
		{&Error{Kind: KindStatus, Status: 503, URL: "u"}, true, "download u: status (status 503)"},
		{&Error{Kind: KindStatus, Status: 429, URL: "u"}, true, "download u: status (status 429)"},
		{&Error{Kind: KindStatus, Status: 408, URL: "u"}, true, "download u: status (status 408)"},
		{&Error{Kind: KindNetwork, URL: "u", Err: errors.New("reset")}, true, "download u: network: reset"},
		{&Error{Kind: KindTimeout, URL: "u"}, true, "download u: timeout"},
		{&Error{Kind: KindTooLarge, URL: "u"}, false, "download u: too_large"},
		{&Error{Kind: KindDisallowed, URL: "u"}, false, "download u: disallowed"},
		{&Error{Kind: KindCanceled, URL: "u"}, false, "download u: canceled"},
		{&Error{URL: "u"}, false, "download u: unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.wantText, func(t *testing.T) {
			if got := tt.err.Retryable(); got != tt.wantRetryable {
				t.Errorf("Retryable() = %v, want %v", got, tt.wantRetryable)
			}
			if got := tt.err.Error(); got != tt.wantText {
				t.Errorf("Error() = %q, want %q", got, tt.wantText)
			}
		})
	}
}
