package download

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// hostRule is one parsed AllowedHosts entry.
type hostRule struct {
	// suffix is set for a suffix rule (".blob.core.windows.net"), lowercased, with its leading dot.
	suffix string
	// host is set for a literal rule.
	host string
	// port is the only port the rule matches. A literal rule without a port has "" and matches any port;
	// a suffix rule without a port matches only 443 (".blob.core.windows.net" does not allow
	// "x.blob.core.windows.net:22"), and ".zone:8443" names another one.
	port string
}

// match is how a host was allowed, which decides whether the dialled address is checked.
type match int

const (
	matchNone match = iota
	// matchLiteral: an operator named this exact host; it may be private (tests, demo, on-prem mirror).
	matchLiteral
	// matchSuffix: allowed only because it ends in a trusted zone; it must dial a public address.
	matchSuffix
)

// parseRule turns one AllowedHosts entry into a rule, rejecting forms that would silently never match or
// match far more than intended.
func parseRule(entry string) (hostRule, error) {
	e := strings.TrimSpace(entry)
	switch {
	case e == "":
		return hostRule{}, errors.New("empty entry")
	case strings.Contains(e, "/"):
		return hostRule{}, fmt.Errorf("%q must be a host name, host:port or IP, not a URL or path", e)
	case strings.HasPrefix(e, "*"):
		return hostRule{}, fmt.Errorf("%q: write a suffix rule as %q, without the '*'", e, strings.TrimLeft(e, "*"))
	case strings.HasPrefix(e, "."):
		suffix, port := e, "443"
		if h, p, err := net.SplitHostPort(e); err == nil {
			suffix, port = h, p
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return hostRule{}, fmt.Errorf("%q has an invalid port", e)
			}
		}
		s := normHost(suffix)
		if len(s) < 2 || strings.Contains(s, "..") || strings.ContainsAny(s, ":[]@ ") {
			return hostRule{}, fmt.Errorf("%q is not a valid suffix rule (want e.g. .blob.core.windows.net or .zone.example:8443)", e)
		}
		return hostRule{suffix: s, port: port}, nil
	}
	host, port := e, ""
	if h, p, err := net.SplitHostPort(e); err == nil {
		host, port = h, p
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return hostRule{}, fmt.Errorf("%q has an invalid port", e)
		}
	}
	host = normHost(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if host == "" || strings.ContainsAny(host, "[]@ ") {
		return hostRule{}, fmt.Errorf("%q is not a valid host", e)
	}
	return hostRule{host: host, port: port}, nil
}

// normHost lowercases a host name and drops one trailing dot, so "X.Blob.Core.Windows.Net." and
// "x.blob.core.windows.net" are the same host.
func normHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

// matchHost reports how host:port is allowed. Literal rules win over suffix rules, so an operator can
// allow one private mirror inside an otherwise public zone. A suffix rule matches only its own port (443
// unless the entry names one).
func (d *Downloader) matchHost(host, port string) match {
	h := normHost(host)
	for _, r := range d.rules {
		if r.suffix == "" && r.host == h && (r.port == "" || r.port == port) {
			return matchLiteral
		}
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return matchNone // an IP literal never matches a suffix
	}
	for _, r := range d.rules {
		// The suffix includes its leading dot, so "evilblob.core.windows.net" does not match
		// ".blob.core.windows.net"; the length check refuses the bare zone itself.
		if r.suffix != "" && r.port == port && len(h) > len(r.suffix) && strings.HasSuffix(h, r.suffix) {
			return matchSuffix
		}
	}
	return matchNone
}

// checkURL applies the scheme and host rules to a link or a redirect target. The returned error text
// names the scheme or host, which are not secret.
func (d *Downloader) checkURL(u *url.URL) error {
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme == "https":
	case scheme == "http" && d.cfg.AllowHTTP:
	case scheme == "http":
		return errors.New("plain http is not allowed (set LR_DOWNLOAD_ALLOW_HTTP for tests only)")
	default:
		return fmt.Errorf("scheme %q is not allowed", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return errors.New("link has no host")
	}
	if u.User != nil {
		return errors.New("user info in the link is not allowed")
	}
	host := u.Hostname()
	for i := 0; i < len(host); i++ {
		if c := host[i]; c <= ' ' || c >= 0x7f {
			return errors.New("host name must be plain ASCII")
		}
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if scheme == "http" {
			port = "80"
		}
	}
	if d.matchHost(host, port) == matchNone {
		return fmt.Errorf("host %q is not in the allowed hosts", u.Host)
	}
	return nil
}

// addrError is returned by the dial guard when a host allowed by a suffix rule resolved to an address
// that is not public.
type addrError struct{ addr string }

func (e *addrError) Error() string {
	return fmt.Sprintf("address %s is not a public address", e.addr)
}

// hostError is returned by the dialer for a host that no rule allows; checkURL normally refuses such
// hosts first, so this is defence in depth.
type hostError struct{ host string }

func (e *hostError) Error() string { return fmt.Sprintf("dial to host %q is not allowed", e.host) }

// dialContext is the Transport's dialer. It re-applies the host rules to the address actually dialled:
// the egress proxy and literal hosts are dialled as given; suffix hosts are resolved here and every
// candidate IP goes through a dialer whose Control func refuses non-public addresses, so DNS answers
// (including rebinding between lookups) cannot steer us to internal services or cloud metadata. Through a
// proxy only the proxy is dialled here: the proxy resolves and connects to the link host itself.
func (d *Downloader) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if _, ok := d.proxies.Load(strings.ToLower(addr)); ok {
		// The egress proxy (Config.ProxyURL or the environment): named by the operator, dialled as given.
		// What it connects to next is the allow-listed link host, checked by checkURL before the request.
		return d.dialer.DialContext(ctx, network, addr)
	}
	switch d.matchHost(host, port) {
	case matchLiteral:
		return d.dialer.DialContext(ctx, network, addr)
	case matchSuffix:
	default:
		return nil, &hostError{host: host}
	}
	lookupCtx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	ips, err := d.lookup(lookupCtx, host)
	cancel()
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("no address for host %q", host)
	}
	var errs []error
	for _, ip := range ips {
		conn, err := d.guarded.DialContext(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// controlPublicOnly is the net.Dialer Control func of the guarded dialer: it runs after resolution, on
// the exact IP being connected to.
func controlPublicOnly(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &addrError{addr: address}
	}
	if !isPublic(ap.Addr()) {
		return &addrError{addr: ap.Addr().String()}
	}
	return nil
}

// nonPublic lists special-purpose ranges that netip's predicates do not cover. An address in any of them
// is refused for a host allowed by a suffix rule. The IPv6 transition ranges (IPv4-compatible, 6to4,
// Teredo, local-use NAT64) are refused whole: they embed, or are relayed to, an IPv4 address that cannot
// be checked reliably, and Azure Storage is never reached through them.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),        // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),    // carrier-grade NAT
	netip.MustParsePrefix("168.63.129.16/32"), // Azure host (WireServer: DHCP, DNS, health probes, VM agent)
	netip.MustParsePrefix("192.0.0.0/24"),     // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),     // documentation
	netip.MustParsePrefix("192.88.99.0/24"),   // 6to4 relay anycast (deprecated)
	netip.MustParsePrefix("198.18.0.0/15"),    // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"),  // documentation
	netip.MustParsePrefix("203.0.113.0/24"),   // documentation
	netip.MustParsePrefix("240.0.0.0/4"),      // reserved, broadcast
	netip.MustParsePrefix("::/96"),            // IPv4-compatible IPv6 (::a.b.c.d, deprecated), :: and ::1
	netip.MustParsePrefix("::ffff:0:0:0/96"),  // IPv4-translated (SIIT)
	netip.MustParsePrefix("64:ff9b:1::/48"),   // local-use NAT64: the embedding is site-defined
	netip.MustParsePrefix("100::/64"),         // discard
	netip.MustParsePrefix("2001::/23"),        // IETF protocol assignments, Teredo 2001::/32 included
	netip.MustParsePrefix("2001:db8::/32"),    // documentation
	netip.MustParsePrefix("2002::/16"),        // 6to4
	netip.MustParsePrefix("3fff::/20"),        // documentation
	netip.MustParsePrefix("5f00::/16"),        // SRv6 segment identifiers
	netip.MustParsePrefix("fec0::/10"),        // deprecated site-local
}

// nat64 is the well-known NAT64 prefix; the IPv4 address it embeds is what is really reached, so that
// address is judged instead (an IPv6-only cluster with DNS64 reaches Azure Storage this way).
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// isPublic reports whether a is a globally routable unicast address: not loopback, private (RFC 1918,
// unique-local), link-local (169.254.0.0/16 with the cloud metadata service 169.254.169.254, fe80::/10),
// multicast, unspecified or another special-purpose range (nonPublic). An IPv4-mapped address
// (::ffff:a.b.c.d) is judged as the IPv4 address it maps, which is what the dialler connects to; a NAT64
// address (64:ff9b::a.b.c.d) as the IPv4 address it embeds.
func isPublic(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	if nat64.Contains(a) {
		b := a.As16()
		return isPublic(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
	}
	return true
}
