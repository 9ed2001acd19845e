package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
)

// validateNATS checks the NATS connection settings that need no network: the URLs, that every file named
// exists and is readable, and that at most one authentication method is chosen. It never echoes LR_NATS_URL:
// the URL may hold credentials.
func (c Config) validateNATS() []error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("LR_%s: %s", name, fmt.Sprintf(format, args...)))
	}

	urlCreds := false
	urls := strings.Split(c.NATSURL, ",")
	for i, raw := range urls {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			bad("NATS_URL", "entry %d of %d is empty", i+1, len(urls))
			continue
		}
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw // as the client reads it
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" {
			// url.Parse's error quotes the URL, credentials and all: say where, not what.
			bad("NATS_URL", "entry %d of %d is not a URL (scheme://[credentials@]host:port)", i+1, len(urls))
			continue
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			bad("NATS_URL", "entry %d of %d: scheme must be nats, tls, ws or wss, got %q", i+1, len(urls), u.Scheme)
		}
		if u.User != nil {
			urlCreds = true
		}
	}

	// Files are read at connect; a file that is missing or unreadable is a configuration error now.
	for _, f := range []struct{ name, path string }{
		{"NATS_CREDS_FILE", c.NATSCredsFile}, {"NATS_TLS_CA_FILE", c.NATSTLSCAFile},
		{"NATS_TLS_CERT_FILE", c.NATSTLSCertFile}, {"NATS_TLS_KEY_FILE", c.NATSTLSKeyFile},
		{"NATS_NKEY_SEED_FILE", c.NATSNkeySeedFile}, {"NATS_PASSWORD_FILE", c.NATSPasswordFile},
		{"NATS_TOKEN_FILE", c.NATSTokenFile},
	} {
		if f.path == "" {
			continue
		}
		if err := readableFile(f.path); err != nil {
			bad(f.name, "%v", err)
		}
	}
	if (c.NATSTLSCertFile == "") != (c.NATSTLSKeyFile == "") {
		bad("NATS_TLS_KEY_FILE", "set both LR_NATS_TLS_CERT_FILE and LR_NATS_TLS_KEY_FILE for mutual TLS, or neither")
	}
	if (c.NATSUser == "") != (c.NATSPasswordFile == "") {
		bad("NATS_PASSWORD_FILE", "set both LR_NATS_USER and LR_NATS_PASSWORD_FILE, or neither")
	}

	var methods []string
	for _, m := range []struct {
		name string
		set  bool
	}{
		{"LR_NATS_CREDS_FILE", c.NATSCredsFile != ""},
		{"LR_NATS_NKEY_SEED_FILE", c.NATSNkeySeedFile != ""},
		{"LR_NATS_USER", c.NATSUser != "" || c.NATSPasswordFile != ""},
		{"LR_NATS_TOKEN_FILE", c.NATSTokenFile != ""},
		{"credentials in LR_NATS_URL", urlCreds},
	} {
		if m.set {
			methods = append(methods, m.name)
		}
	}
	if len(methods) > 1 {
		errs = append(errs, fmt.Errorf("LR_NATS_*: choose one NATS authentication method, got %s",
			strings.Join(methods, " and ")))
	}

	if p := c.NATSInboxPrefix; p == "" || strings.ContainsAny(p, " \t\n*>") || strings.HasPrefix(p, ".") ||
		strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
		bad("NATS_INBOX_PREFIX", "must be a subject prefix without wildcards, spaces or a trailing '.', got %q", p)
	}
	if d := c.NATSJSDomain; strings.ContainsAny(d, " \t\n.*>") {
		bad("NATS_JS_DOMAIN", "must be a name without spaces, '.', '*' or '>', got %q", d)
	}
	return errs
}

// readableFile reports why path cannot be read, or nil. It opens the file rather than stat-ing it, so that
// a file the process may not read is caught too.
func readableFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	switch {
	case err != nil:
		return err
	case info.IsDir():
		return fmt.Errorf("%s is a directory, want a file", path)
	case info.Size() == 0:
		return fmt.Errorf("%s is empty", path)
	}
	return nil
}
