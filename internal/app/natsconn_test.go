package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

func TestRedactNATSURLs(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"no credentials", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"user and password", "nats://relay:s3cret@nats-1:4222", "nats://relay:REDACTED@nats-1:4222"},
		{"token", "tls://t0ken@nats-1:4222", "tls://REDACTED@nats-1:4222"},
		{"escaped password", "nats://relay:p%40ss%3Aw0rd@nats-1:4222", "nats://relay:REDACTED@nats-1:4222"},
		{"no scheme", "relay:s3cret@nats-1:4222", "relay:REDACTED@nats-1:4222"},
		{"several", "nats://a:pw1@n1:4222, nats://n2:4222,nats://tok@n3:4222",
			"nats://a:REDACTED@n1:4222, nats://n2:4222,nats://REDACTED@n3:4222"},
		{"unparsable", "nats://a:p w%zz@n1:4222", "REDACTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := redactNATSURLs(tc.in); got != tc.want {
				t.Errorf("redactNATSURLs(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestRedactorCutsURLCredentialsOutOfErrors(t *testing.T) {
	urls := "nats://relay:p%40ssw0rd@n1:4222,nats://s3cr3tt0ken@n2:4222"
	r := newRedactor(urls)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"whole URL", fmt.Errorf("dial %s: %w", urls, nats.ErrAuthorization)},
		{"unescaped password", fmt.Errorf("password p@ssw0rd rejected: %w", nats.ErrAuthorization)},
		{"token", fmt.Errorf("token s3cr3tt0ken: %w", nats.ErrAuthorization)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := r.err(tc.err)
			for _, secret := range []string{"p@ssw0rd", "p%40ssw0rd", "s3cr3tt0ken"} {
				if strings.Contains(got.Error(), secret) {
					t.Errorf("redacted error %q still holds %q", got, secret)
				}
			}
			if !strings.Contains(got.Error(), "REDACTED") {
				t.Errorf("redacted error %q does not say REDACTED", got)
			}
			if !errors.Is(got, nats.ErrAuthorization) {
				t.Errorf("redacted error %q lost its cause", got)
			}
		})
	}
	if plain := errors.New("no secret here"); r.err(plain) != plain {
		t.Errorf("an error without credentials was rewritten")
	}
}

// pki is a throwaway CA with a server certificate for 127.0.0.1 and a client certificate, as PEM files.
type pki struct {
	dir                  string
	caFile               string
	serverCert, serverKy string
	clientCert, clientKy string
}

func newPKI(t *testing.T, dir, name string) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := pki{dir: dir, caFile: filepath.Join(dir, name+"-ca.pem")}
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	leaf := func(cn string, usage x509.ExtKeyUsage, serial int64) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+"-"+cn+".pem"), filepath.Join(dir, name+"-"+cn+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "PRIVATE KEY", keyDER)
		return certFile, keyFile
	}
	p.serverCert, p.serverKy = leaf("server", x509.ExtKeyUsageServerAuth, 2)
	p.clientCert, p.clientKy = leaf("client", x509.ExtKeyUsageClientAuth, 3)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startServer starts a JetStream server on a free port, configured by set.
func startServer(t *testing.T, set func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
		NoSigs: true, NoLog: true}
	set(o)
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats-server did not become ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

// testConfig is the default configuration with vars set, loaded and validated the way main does it.
func testConfig(t *testing.T, vars map[string]string) config.Config {
	t.Helper()
	for k, v := range vars {
		t.Setenv(k, v)
	}
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestNATSConnectionModes connects the way `lr-relay run` does (App.connect, then the JetStream context)
// to a real server that requires each mode, and asks JetStream for the account's information. The failure
// cases must stop the start with a refusal that names the settings, quickly, instead of retrying forever.
func TestNATSConnectionModes(t *testing.T) {
	dir := t.TempDir()
	good, wrong := newPKI(t, dir, "good"), newPKI(t, dir, "wrong")
	tlsServer := func(verify bool) func(*server.Options) {
		return func(o *server.Options) {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: good.serverCert, KeyFile: good.serverKy,
				CaFile: good.caFile, Verify: verify})
			if err != nil {
				t.Fatal(err)
			}
			o.TLS, o.TLSConfig, o.TLSVerify, o.TLSTimeout = true, tc, verify, 5
		}
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := user.Seed()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := user.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	otherSeed, err := other.Seed()
	if err != nil {
		t.Fatal(err)
	}
	seedFile, otherSeedFile := writeFile(t, dir, "user.nk", string(seed)+"\n"), writeFile(t, dir, "other.nk", string(otherSeed))
	passwordFile := writeFile(t, dir, "password", "pa ss:w@rd\n")
	wrongPasswordFile := writeFile(t, dir, "wrong-password", "nope\n")
	tokenFile := writeFile(t, dir, "token", "t0ken-for-relay\n")
	passwordServer := func(o *server.Options) {
		o.Users = []*server.User{{Username: "relay", Password: "pa ss:w@rd"}}
	}

	for _, tc := range []struct {
		name   string
		server func(*server.Options)
		scheme string
		vars   map[string]string
		// refused: the start must fail with an error holding every one of these.
		refused []string
	}{
		{name: "tls with CA", server: tlsServer(false), scheme: "nats",
			vars: map[string]string{"LR_NATS_TLS_CA_FILE": good.caFile}},
		{name: "tls:// URL with CA", server: tlsServer(false), scheme: "tls",
			vars: map[string]string{"LR_NATS_TLS_CA_FILE": good.caFile}},
		{name: "mutual tls", server: tlsServer(true), scheme: "nats",
			vars: map[string]string{"LR_NATS_TLS_CA_FILE": good.caFile, "LR_NATS_TLS_CERT_FILE": good.clientCert,
				"LR_NATS_TLS_KEY_FILE": good.clientKy}},
		{name: "nkey", scheme: "nats",
			server: func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} },
			vars:   map[string]string{"LR_NATS_NKEY_SEED_FILE": seedFile}},
		{name: "user and password", server: passwordServer, scheme: "nats",
			vars: map[string]string{"LR_NATS_USER": "relay", "LR_NATS_PASSWORD_FILE": passwordFile}},
		{name: "token", scheme: "nats",
			server: func(o *server.Options) { o.Authorization = "t0ken-for-relay" },
			vars:   map[string]string{"LR_NATS_TOKEN_FILE": tokenFile}},
		{name: "mutual tls and password", scheme: "tls",
			server: func(o *server.Options) { tlsServer(true)(o); passwordServer(o) },
			vars: map[string]string{"LR_NATS_TLS_CA_FILE": good.caFile, "LR_NATS_TLS_CERT_FILE": good.clientCert,
				"LR_NATS_TLS_KEY_FILE": good.clientKy, "LR_NATS_USER": "relay", "LR_NATS_PASSWORD_FILE": passwordFile}},

		{name: "wrong CA", server: tlsServer(false), scheme: "nats",
			vars:    map[string]string{"LR_NATS_TLS_CA_FILE": wrong.caFile},
			refused: []string{"refused lr-relay", "certificate signed by unknown authority"}},
		{name: "mutual tls without a client certificate", server: tlsServer(true), scheme: "nats",
			vars:    map[string]string{"LR_NATS_TLS_CA_FILE": good.caFile},
			refused: []string{"refused lr-relay", "LR_NATS_TLS_CERT_FILE"}},
		{name: "client certificate of another CA", server: tlsServer(true), scheme: "nats",
			vars: map[string]string{"LR_NATS_TLS_CA_FILE": good.caFile, "LR_NATS_TLS_CERT_FILE": wrong.clientCert,
				"LR_NATS_TLS_KEY_FILE": wrong.clientKy},
			refused: []string{"refused lr-relay"}},
		{name: "TLS server, plain client", server: tlsServer(false), scheme: "nats",
			refused: []string{"refused lr-relay", "unknown authority"}},
		{name: "wrong password", server: passwordServer, scheme: "nats",
			vars:    map[string]string{"LR_NATS_USER": "relay", "LR_NATS_PASSWORD_FILE": wrongPasswordFile},
			refused: []string{"refused lr-relay", "authorization violation"}},
		{name: "password in the URL, wrong", server: passwordServer, scheme: "nats://relay:nope-in-url@",
			refused: []string{"refused lr-relay", "authorization violation", "relay:REDACTED@"}},
		{name: "unknown nkey", scheme: "nats",
			server:  func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} },
			vars:    map[string]string{"LR_NATS_NKEY_SEED_FILE": otherSeedFile},
			refused: []string{"refused lr-relay", "authorization violation"}},
		{name: "no token", scheme: "nats",
			server:  func(o *server.Options) { o.Authorization = "t0ken-for-relay" },
			refused: []string{"refused lr-relay", "authorization violation"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, tc.server)
			addr := s.Addr().String()
			u := tc.scheme + "://" + addr
			if strings.HasSuffix(tc.scheme, "@") {
				u = tc.scheme + addr
			}
			vars := map[string]string{"LR_NATS_URL": u}
			for _, k := range []string{"LR_NATS_TLS_CA_FILE", "LR_NATS_TLS_CERT_FILE", "LR_NATS_TLS_KEY_FILE",
				"LR_NATS_NKEY_SEED_FILE", "LR_NATS_USER", "LR_NATS_PASSWORD_FILE", "LR_NATS_TOKEN_FILE", "LR_NATS_CREDS_FILE"} {
				vars[k] = tc.vars[k]
			}
			logs := &testutil.SyncBuffer{}
			a := &App{cfg: testConfig(t, vars), log: zerolog.New(logs)}
			start := time.Now()
			nc, err := a.connect(func(error) {})
			if tc.refused != nil {
				if err == nil {
					nc.Close()
					t.Fatalf("connected, want a refusal; logs:\n%s", logs.String())
				}
				for _, want := range tc.refused {
					if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				if took := time.Since(start); took > 20*time.Second {
					t.Errorf("the refusal took %s: it was retried", took)
				}
				for _, secret := range []string{"nope-in-url", "pa ss:w@rd", "t0ken-for-relay", string(otherSeed)} {
					if strings.Contains(err.Error()+logs.String(), secret) {
						t.Errorf("a secret (%q) is in the error or the logs:\n%s\n%s", secret, err, logs.String())
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := newJetStream(nc, a.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := js.AccountInfo(ctx); err != nil {
				t.Fatalf("JetStream account info: %v", err)
			}
			if tc.vars["LR_NATS_TLS_CA_FILE"] != "" {
				if _, err := nc.TLSConnectionState(); err != nil {
					t.Errorf("connection is not TLS: %v", err)
				}
			}
		})
	}
}

// TestNATSInboxPrefixAndDomain runs JetStream requests as a user who may subscribe only under a custom
// inbox prefix, through the API of a named JetStream domain (as behind a leaf node). The server maps its own
// domain's API ($JS.hub.API.>) onto $JS.API.> before it checks permissions, so the user needs both.
func TestNATSInboxPrefixAndDomain(t *testing.T) {
	s := startServer(t, func(o *server.Options) {
		o.JetStreamDomain = "hub"
		o.Users = []*server.User{{Username: "relay", Password: "pw", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"$JS.hub.API.>", "$JS.API.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_RELAY_INBOX.>"}},
		}}}
	})
	passwordFile := writeFile(t, t.TempDir(), "password", "pw")
	for _, tc := range []struct {
		name, prefix, domain string
		ok                   bool
	}{
		{"custom prefix in the domain", "_RELAY_INBOX", "hub", true},
		{"default prefix", "_INBOX", "hub", false},
		{"another domain", "_RELAY_INBOX", "elsewhere", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &testutil.SyncBuffer{}
			a := &App{cfg: testConfig(t, map[string]string{
				"LR_NATS_URL": s.ClientURL(), "LR_NATS_USER": "relay", "LR_NATS_PASSWORD_FILE": passwordFile,
				"LR_NATS_INBOX_PREFIX": tc.prefix, "LR_NATS_JS_DOMAIN": tc.domain,
			}), log: zerolog.New(logs)}
			nc, err := a.connect(func(error) {})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := newJetStream(nc, a.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			info, err := js.AccountInfo(ctx)
			if tc.ok {
				if err != nil {
					t.Fatalf("JetStream account info: %v", err)
				}
				if info.Domain != "hub" {
					t.Errorf("answered by domain %q, want hub", info.Domain)
				}
				return
			}
			if err == nil {
				t.Fatalf("JetStream answered, want a failure (prefix %q, domain %q)", tc.prefix, tc.domain)
			}
		})
	}
}

// TestNATSPasswordChangeOnTheServer changes the user's password on the running server, which drops
// lr-relay. With the password file rotated too, the client reconnects with the new password (the file is read
// at every connect). Without, the server refuses it on every reconnect, the client gives up, and connect's
// closed callback (which ends Run) gets the reason, instead of a relay waiting forever on a dead connection.
func TestNATSPasswordChangeOnTheServer(t *testing.T) {
	for _, rotate := range []bool{true, false} {
		t.Run(fmt.Sprintf("file rotated %v", rotate), func(t *testing.T) {
			opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
				NoSigs: true, NoLog: true, Users: []*server.User{{Username: "relay", Password: "old"}}}
			s, err := server.NewServer(opts)
			if err != nil {
				t.Fatal(err)
			}
			go s.Start()
			if !s.ReadyForConnections(10 * time.Second) {
				t.Fatal("nats-server did not become ready")
			}
			t.Cleanup(s.Shutdown)
			passwordFile := writeFile(t, t.TempDir(), "password", "old")
			logs := &testutil.SyncBuffer{}
			a := &App{cfg: testConfig(t, map[string]string{"LR_NATS_URL": s.ClientURL(), "LR_NATS_USER": "relay",
				"LR_NATS_PASSWORD_FILE": passwordFile}), log: zerolog.New(logs)}
			closed := make(chan error, 1)
			nc, err := a.connect(func(err error) { closed <- err })
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			reconnected := make(chan struct{}, 1)
			nc.SetReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} })

			if rotate {
				writeFile(t, filepath.Dir(passwordFile), "password", "new\n")
			}
			reloaded := *opts
			reloaded.Port = s.Addr().(*net.TCPAddr).Port
			reloaded.Users = []*server.User{{Username: "relay", Password: "new"}}
			if err := s.ReloadOptions(&reloaded); err != nil {
				t.Fatal(err)
			}
			select {
			case <-reconnected:
				if !rotate {
					t.Fatal("reconnected with the old password")
				}
				if err := nc.Flush(); err != nil {
					t.Errorf("flush after reconnecting: %v", err)
				}
			case err := <-closed:
				if rotate {
					t.Fatalf("gave up with the rotated password: %v", err)
				}
				if !errors.Is(err, nats.ErrAuthorization) {
					t.Errorf("closed with %v, want the authorization violation", err)
				}
				if !strings.Contains(logs.String(), `"level":"error"`) {
					t.Errorf("the refusal was not logged at error level:\n%s", logs.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatal("neither reconnected nor gave up within 30s")
			}
		})
	}
}

// operatorServer starts a server in operator (JWT) mode with one account that may use JetStream, and returns
// a .creds file of a user of that account and one of a user signed by another account the server does not
// know.
func operatorServer(t *testing.T) (s *server.Server, creds, foreignCreds string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	operator, err := nkeys.CreateOperator()
	must(err)
	opub, err := operator.PublicKey()
	must(err)
	oc := jwt.NewOperatorClaims(opub)
	_, err = oc.Encode(operator)
	must(err)
	resolver := &server.MemAccResolver{}
	userCreds := func(name string, registered bool) string {
		account, err := nkeys.CreateAccount()
		must(err)
		apub, err := account.PublicKey()
		must(err)
		ac := jwt.NewAccountClaims(apub)
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		ajwt, err := ac.Encode(operator)
		must(err)
		if registered {
			must(resolver.Store(apub, ajwt))
		}
		user, err := nkeys.CreateUser()
		must(err)
		upub, err := user.PublicKey()
		must(err)
		ujwt, err := jwt.NewUserClaims(upub).Encode(account)
		must(err)
		seed, err := user.Seed()
		must(err)
		b, err := jwt.FormatUserConfig(ujwt, seed)
		must(err)
		return writeFile(t, t.TempDir(), name+".creds", string(b))
	}
	creds, foreignCreds = userCreds("relay", true), userCreds("foreign", false)
	// JetStream in operator mode needs a system account.
	sys, err := nkeys.CreateAccount()
	must(err)
	syspub, err := sys.PublicKey()
	must(err)
	sysjwt, err := jwt.NewAccountClaims(syspub).Encode(operator)
	must(err)
	must(resolver.Store(syspub, sysjwt))
	s = startServer(t, func(o *server.Options) {
		o.TrustedOperators = []*jwt.OperatorClaims{oc}
		o.AccountResolver = resolver
		o.SystemAccount = syspub
	})
	return s, creds, foreignCreds
}

// TestNATSCredsFile connects with a .creds file to a server in operator mode, and is refused with the .creds
// of an account the server does not trust.
func TestNATSCredsFile(t *testing.T) {
	s, creds, foreign := operatorServer(t)
	t.Run("trusted", func(t *testing.T) {
		a := &App{cfg: testConfig(t, map[string]string{"LR_NATS_URL": s.ClientURL(), "LR_NATS_CREDS_FILE": creds}),
			log: zerolog.New(&testutil.SyncBuffer{})}
		nc, err := a.connect(func(error) {})
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := newJetStream(nc, a.cfg)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := js.AccountInfo(ctx); err != nil {
			t.Fatalf("JetStream account info: %v", err)
		}
	})
	t.Run("unknown account", func(t *testing.T) {
		a := &App{cfg: testConfig(t, map[string]string{"LR_NATS_URL": s.ClientURL(), "LR_NATS_CREDS_FILE": foreign}),
			log: zerolog.New(&testutil.SyncBuffer{})}
		nc, err := a.connect(func(error) {})
		if err == nil {
			nc.Close()
			t.Fatal("connected, want a refusal")
		}
		if !strings.Contains(err.Error(), "refused lr-relay") {
			t.Errorf("error %q does not say it was refused", err)
		}
	})
}
