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
	// host and port are set for a literal rule; port "" matches any port.
	host, port string
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
		s := normHost(e)
		if len(s) < 2 || strings.Contains(s, "..") || strings.ContainsAny(s, ":[]@ ") {
			return hostRule{}, fmt.Errorf("%q is not a valid suffix rule (want e.g. .blob.core.windows.net, no port)", e)
		}
		return hostRule{suffix: s}, nil
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
// allow one private mirror inside an otherwise public zone.
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
		if r.suffix != "" && len(h) > len(r.suffix) && strings.HasSuffix(h, r.suffix) {
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
// literal hosts are dialled as given; suffix hosts are resolved here and every candidate IP goes through
// a dialer whose Control func refuses non-public addresses, so DNS answers (including rebinding between
// lookups) cannot steer us to internal services or cloud metadata.
func (d *Downloader) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
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

// nonPublic lists special-purpose ranges that netip's predicates do not cover.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("100::/64"),        // discard
}

// nat64 is the well-known NAT64 prefix; the IPv4 address it embeds is what is really reached.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// isPublic reports whether a is a globally routable unicast address: not loopback, private (RFC 1918,
// unique-local), link-local (169.254.0.0/16 with the cloud metadata service, fe80::/10), multicast,
// unspecified or another special-purpose range.
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
