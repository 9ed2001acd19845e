package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/config"
)

// natsSecurityOptions turns the NATS security settings into connection options: TLS (server verification and
// mutual TLS), one authentication method, and the inbox prefix. Files are read here, when lr-relay connects;
// the certificates, the password and the token are read again at every reconnect, so that a rotated file is
// picked up without a restart (a file that cannot be read then keeps the last good value, and says so).
func natsSecurityOptions(cfg config.Config, log zerolog.Logger) ([]nats.Option, error) {
	var opts []nats.Option

	if cfg.NATSTLSCAFile != "" || cfg.NATSTLSCertFile != "" {
		var certCB nats.TLSCertHandler
		var rootCB nats.RootCAsHandler
		if cfg.NATSTLSCertFile != "" {
			certCB = func() (tls.Certificate, error) {
				c, err := tls.LoadX509KeyPair(cfg.NATSTLSCertFile, cfg.NATSTLSKeyFile)
				if err != nil {
					return c, &natsConfigError{vars: "LR_NATS_TLS_CERT_FILE/LR_NATS_TLS_KEY_FILE", err: err}
				}
				return c, nil
			}
		}
		if cfg.NATSTLSCAFile != "" {
			rootCB = func() (*x509.CertPool, error) {
				pem, err := os.ReadFile(cfg.NATSTLSCAFile)
				if err != nil {
					return nil, &natsConfigError{vars: "LR_NATS_TLS_CA_FILE", err: err}
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return nil, &natsConfigError{vars: "LR_NATS_TLS_CA_FILE",
						err: fmt.Errorf("no PEM certificate in %s", cfg.NATSTLSCAFile)}
				}
				return pool, nil
			}
		}
		// ClientTLSConfig turns TLS on and calls both callbacks once now, so a bad file fails the start.
		opts = append(opts, nats.ClientTLSConfig(certCB, rootCB))
	}

	switch {
	case cfg.NATSCredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.NATSCredsFile))
	case cfg.NATSNkeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NATSNkeySeedFile)
		if err != nil {
			return nil, &natsConfigError{vars: "LR_NATS_NKEY_SEED_FILE", err: err}
		}
		opts = append(opts, o)
	case cfg.NATSUser != "":
		password, err := secretFile(cfg.NATSPasswordFile, "LR_NATS_PASSWORD_FILE", log)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfoHandler(func() (string, string) { return cfg.NATSUser, password() }))
	case cfg.NATSTokenFile != "":
		token, err := secretFile(cfg.NATSTokenFile, "LR_NATS_TOKEN_FILE", log)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.TokenHandler(token))
	}

	if cfg.NATSInboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.NATSInboxPrefix))
	}
	return opts, nil
}

// newJetStream returns the JetStream context of nc, in LR_NATS_JS_DOMAIN when it is set.
func newJetStream(nc *nats.Conn, cfg config.Config) (jetstream.JetStream, error) {
	if cfg.NATSJSDomain != "" {
		js, err := jetstream.NewWithDomain(nc, cfg.NATSJSDomain)
		if err != nil {
			return nil, fmt.Errorf("jetstream domain %q (LR_NATS_JS_DOMAIN): %w", cfg.NATSJSDomain, err)
		}
		return js, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}

// secretFile reads a secret from path now, and returns a function that reads it again (at every reconnect),
// keeping the last good value when the file cannot be read.
func secretFile(path, name string, log zerolog.Logger) (func() string, error) {
	read := func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", &natsConfigError{vars: name, err: err}
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			return "", &natsConfigError{vars: name, err: fmt.Errorf("%s is empty", path)}
		}
		return s, nil
	}
	last, err := read()
	if err != nil {
		return nil, err
	}
	return func() string {
		s, err := read()
		if err != nil {
			log.Error().Err(err).Msg("cannot read the NATS secret again; using the value read before")
			return last
		}
		last = s
		return s
	}, nil
}

// natsConfigError is a NATS setting that cannot work as given (a file that cannot be read or parsed).
// Waiting does not cure it.
type natsConfigError struct {
	vars string
	err  error
}

func (e *natsConfigError) Error() string   { return e.vars + ": " + e.err.Error() }
func (e *natsConfigError) Unwrap() error   { return e.err }
func (e *natsConfigError) Retryable() bool { return false }

// natsRefused reports whether a failed first connect means the server refused lr-relay (credentials, TLS
// verification on either side, a TLS requirement not met, a setting that cannot work) rather than could not
// be reached. Reconnecting does not cure a refusal, so lr-relay stops with the reason instead of retrying
// silently.
func natsRefused(err error) bool {
	var (
		cfgErr    *natsConfigError
		alert     tls.AlertError
		verify    *tls.CertificateVerificationError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	var netErr net.Error
	switch {
	case tlsAlert(err):
		return true
	case errors.Is(err, nats.ErrTLS) && errors.As(err, &netErr) && netErr.Timeout():
		return false // a handshake that timed out: the network, not the settings
	case errors.Is(err, nats.ErrTLS):
		// The handshake failed: verification on either side, or a server that closes the connection after
		// the handshake because it requires a client certificate that was not sent.
		return true
	case errors.As(err, &cfgErr), errors.As(err, &alert), errors.As(err, &verify), errors.As(err, &unknownCA),
		errors.As(err, &hostname), errors.As(err, &invalid):
		return true
	}
	for _, e := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked,
		nats.ErrAccountAuthExpired, nats.ErrSecureConnRequired, nats.ErrSecureConnWanted,
		nats.ErrClientCertOrRootCAsRequired, nats.ErrTokenAlreadySet, nats.ErrInvalidContext} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// tlsAlert reports whether err is a TLS alert the server sent (certificate required, bad certificate, unknown
// CA). crypto/tls reports one as a net.OpError with Op "remote error"; with TLS 1.3 it arrives after the
// handshake, so the NATS client does not mark it as nats.ErrTLS.
func tlsAlert(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "remote error"
}

// redactNATSURLs returns LR_NATS_URL with the credentials of each URL replaced: user:REDACTED@ for a user
// and password, REDACTED@ for a token (or a user name alone, which may be a token). Entries that do not parse
// are replaced whole: their credentials cannot be told apart from the rest.
func redactNATSURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		raw := strings.TrimSpace(p)
		if !strings.Contains(raw, "@") {
			continue
		}
		withScheme := raw
		if !strings.Contains(raw, "://") {
			withScheme = "nats://" + raw
		}
		u, err := url.Parse(withScheme)
		if err != nil || u.User == nil {
			parts[i] = "REDACTED"
			continue
		}
		if _, hasPassword := u.User.Password(); hasPassword {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
		} else {
			u.User = url.User("REDACTED")
		}
		s := u.String()
		if withScheme != raw {
			s = strings.TrimPrefix(s, "nats://")
		}
		parts[i] = s
	}
	return strings.Join(parts, ",")
}

// natsURLSecrets returns the credentials held in LR_NATS_URL (passwords and tokens, raw and escaped), longest
// first, so that they can be cut out of any text.
func natsURLSecrets(urls string) []string {
	var out []string
	add := func(s string) {
		if s != "" {
			out = append(out, s, url.PathEscape(s), url.QueryEscape(s))
		}
	}
	for _, p := range strings.Split(urls, ",") {
		raw := strings.TrimSpace(p)
		at := strings.LastIndex(raw, "@")
		if at < 0 {
			continue
		}
		userinfo := raw[:at]
		if i := strings.Index(userinfo, "://"); i >= 0 {
			userinfo = userinfo[i+3:]
		}
		add(userinfo) // the whole of it, as it was written
		user, pass, hasPass := strings.Cut(userinfo, ":")
		if hasPass {
			add(pass)
			if p, err := url.PathUnescape(pass); err == nil {
				add(p)
			}
		} else {
			if u, err := url.PathUnescape(user); err == nil {
				add(u)
			}
		}
	}
	// Longest first: a secret that contains another is replaced whole.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && len(out[j]) > len(out[j-1]); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// redactor cuts the credentials of LR_NATS_URL out of errors and text before they are logged or returned.
type redactor struct{ secrets []string }

func newRedactor(urls string) redactor { return redactor{secrets: natsURLSecrets(urls)} }

func (r redactor) text(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, "REDACTED")
	}
	return s
}

// err returns err with the credentials cut out of its text; errors.Is and errors.As still see the original.
func (r redactor) err(err error) error {
	if err == nil || len(r.secrets) == 0 {
		return err
	}
	msg := err.Error()
	if red := r.text(msg); red != msg {
		return &redactedError{msg: red, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
