package download

import (
	"errors"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// redacted replaces secret values in URLs and error text.
const redacted = "REDACTED"

// publicParams are the SAS and blob query parameters whose values are not secret and help when reading a
// log (expiry, permissions, version). Every other parameter value, `sig` first of all, is redacted: an
// allow-list fails closed when Azure adds a parameter we do not know.
var publicParams = map[string]bool{
	"sv": true, "ss": true, "srt": true, "sp": true, "se": true, "st": true, "spr": true, "sip": true,
	"sr": true, "sdd": true, "si": true, "rscc": true, "rscd": true, "rsce": true, "rscl": true, "rsct": true,
	"timeout": true, "comp": true, "restype": true, "snapshot": true, "versionid": true,
}

// secretParamRE finds secret-looking query values in free text, such as a redirect Location that
// net/http quotes in an error; those belong to a URL other than the link, so secretsOf cannot list them.
var secretParamRE = regexp.MustCompile(`(?i)\b(sig|signature|token|access_token|code|key|password|secret)=[^&\s"'<>]+`)

// Redact returns link with every query value other than a few known-harmless SAS fields (se, sp, sv, ...)
// replaced by REDACTED, the user info and the fragment removed. It is the only form of a link that may
// appear in logs, errors or events. A link that does not parse is cut at its query.
func Redact(link string) string {
	u, err := url.Parse(link)
	if err != nil {
		// Parsing failed, so we cannot tell the parts apart reliably: keep what precedes the first '?'
		// or '#', drop any user info, and say that something was removed.
		cut := len(link)
		if i := strings.IndexAny(link, "?#"); i >= 0 {
			cut = i
		}
		head := link[:cut]
		if at := strings.LastIndex(head, "@"); at >= 0 {
			if s := strings.Index(head, "//"); s >= 0 && s < at {
				head = head[:s+2] + head[at+1:]
			}
		}
		if cut < len(link) {
			return head + "?" + redacted
		}
		return head
	}
	u.User = nil
	u.Fragment, u.RawFragment = "", ""
	u.RawQuery = redactQuery(u.RawQuery)
	return u.String()
}

// redactQuery rewrites a raw query string, keeping its order and the raw form of public values.
func redactQuery(raw string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		k, v, hasValue := strings.Cut(p, "=")
		if !hasValue || v == "" {
			continue
		}
		if key, err := url.QueryUnescape(k); err == nil && publicParams[strings.ToLower(key)] {
			continue
		}
		parts[i] = k + "=" + redacted
	}
	return strings.Join(parts, "&")
}

// secretsOf lists the strings that must never appear in output derived from link: the raw and decoded
// values of every non-public query parameter, and the user info. Very short values are skipped because
// scrubbing them would mangle ordinary text and they cannot hold a signature.
func secretsOf(link string) []string {
	const minLen = 6
	var out []string
	add := func(s string) {
		if len(s) >= minLen {
			out = append(out, s)
		}
	}
	raw := link
	if i := strings.IndexByte(raw, '#'); i >= 0 {
		raw = raw[:i]
	}
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		for p := range strings.SplitSeq(raw[i+1:], "&") {
			k, v, ok := strings.Cut(p, "=")
			if !ok {
				continue
			}
			if key, err := url.QueryUnescape(k); err == nil && publicParams[strings.ToLower(key)] {
				continue
			}
			add(v)
			if dv, err := url.QueryUnescape(v); err == nil && dv != v {
				add(dv)
			}
			if dv, err := url.PathUnescape(v); err == nil && dv != v {
				add(dv)
			}
		}
	}
	if u, err := url.Parse(link); err == nil && u.User != nil {
		add(u.User.Username())
		if pw, ok := u.User.Password(); ok {
			add(pw)
		}
		add(u.User.String())
	}
	// Longest first, so that replacing a value never leaves the tail of a longer one behind.
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// containsAny reports whether s contains any of the secrets.
func containsAny(s string, secrets []string) bool {
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			return true
		}
	}
	return false
}

// echoesSecret reports whether s shares a run of at least 12 characters with a secret. It guards values
// that an untrusted server chooses (file name, error code), where even part of the signature must not
// be passed on.
func echoesSecret(s string, secrets []string) bool {
	const run = 12
	for _, sec := range secrets {
		if len(sec) <= run {
			if strings.Contains(s, sec) {
				return true
			}
			continue
		}
		for i := 0; i+run <= len(sec); i++ {
			if strings.Contains(s, sec[i:i+run]) {
				return true
			}
		}
	}
	return false
}

// scrub returns err unchanged when its text holds no secret, and otherwise an error with the secrets
// replaced by REDACTED that does not wrap the original (so errors.Unwrap cannot reach the secret).
func scrub(err error, secrets []string) error {
	if err == nil {
		return nil
	}
	leaks := false
	for e := err; e != nil; e = errors.Unwrap(e) {
		if msg := e.Error(); containsAny(msg, secrets) || secretParamRE.MatchString(msg) {
			leaks = true
			break
		}
	}
	if !leaks {
		return err
	}
	msg := err.Error()
	for _, sec := range secrets {
		msg = strings.ReplaceAll(msg, sec, redacted)
	}
	msg = secretParamRE.ReplaceAllString(msg, "${1}="+redacted)
	return &redactedError{msg: msg}
}
