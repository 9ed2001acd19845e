package mde

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/simulator"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

const (
	entraTenant   = "8f2d1c3e-0000-4000-8000-000000000001"
	entraClient   = "1b2c3d4e-0000-4000-8000-000000000002"
	entraAction   = "7f5d2a7c-3b3e-4f0c-9a57-1b1f6c2d7e02"
	k8sIssuer     = "https://oidc.example-cluster.test/issuer"
	k8sSubject    = "system:serviceaccount:lr:lr-relay"
	miClient      = "5e6f7081-0000-4000-8000-000000000005"
	entraScopeAPI = "https://api.securitycenter.microsoft.com/.default"
)

// certPair is a self-signed client certificate and its key, as PEM (certificate then PKCS#8 key).
type certPair struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
	pem  []byte
}

func newCertPair(t *testing.T, notAfter time.Time) certPair {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "lr-relay test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	b = append(b, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})...)
	return certPair{cert: cert, key: key, pem: b}
}

// entraEnv is the simulator served over TLS (azidentity insists on https), with one tenant whose app has
// certificates and a federated credential, and one managed identity.
type entraEnv struct {
	t     *testing.T
	sim   *simulator.Simulator
	srv   *httptest.Server
	clock *fakeClock // the relay's clock (token cache, pacing)
	// simOffset shifts the simulator's clock, to make assertions look expired.
	mu        sync.Mutex
	simOffset time.Duration
	issuerKey *rsa.PrivateKey
	good      certPair
	paths     []string // "METHOD /path" of every request the simulator got
	dir       string
}

func newEntraEnv(t *testing.T, extraCerts ...*x509.Certificate) *entraEnv {
	t.Helper()
	e := &entraEnv{t: t, clock: &fakeClock{now: time.Now()}, dir: t.TempDir()}
	e.good = newCertPair(t, time.Now().Add(24*time.Hour))
	var err error
	if e.issuerKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	e.sim, err = simulator.New(simulator.Config{
		TenantID: entraTenant, ClientID: entraClient, ClientSecret: "entra-secret",
		Certificates:      append([]*x509.Certificate{e.good.cert}, extraCerts...),
		Federated:         []simulator.FederatedCredential{{Issuer: k8sIssuer, Subject: k8sSubject}},
		Issuers:           []simulator.Issuer{{URL: k8sIssuer, Keys: []crypto.PublicKey{&e.issuerKey.PublicKey}}},
		ManagedIdentities: []simulator.ManagedIdentity{{ClientID: miClient, TenantID: entraTenant}},
		Clock: func() time.Time {
			e.mu.Lock()
			defer e.mu.Unlock()
			return time.Now().Add(e.simOffset)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.sim.AddAction(simulator.Action{MachineAction: action.MachineAction{ID: entraAction, Type: "LiveResponse", Status: "Succeeded"}})
	h := e.sim.Handler()
	e.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.paths = append(e.paths, r.Method+" "+r.URL.Path)
		e.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *entraEnv) setSimOffset(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.simOffset = d
}

func (e *entraEnv) requests() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.paths...)
}

// file writes b to name in the test's directory and returns the path.
func (e *entraEnv) file(name string, b []byte) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	// Write and rename, as Kubernetes does when it rotates a mounted secret.
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// federatedToken is a service account token as the cluster's issuer signs it (RS256).
func (e *entraEnv) federatedToken(sub, aud string, exp time.Time) []byte {
	e.t.Helper()
	return signJWT(e.t, e.issuerKey, map[string]any{"alg": "RS256", "kid": "k1", "typ": "JWT"}, map[string]any{
		"iss": k8sIssuer, "sub": sub, "aud": []string{aud}, "exp": exp.Unix(), "nbf": time.Now().Add(-time.Minute).Unix(),
		"iat": time.Now().Unix(),
	})
}

func signJWT(t *testing.T, key *rsa.PrivateKey, header, claims map[string]any) []byte {
	t.Helper()
	hb, _ := json.Marshal(header)
	cb, _ := json.Marshal(claims)
	signed := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return []byte(signed + "." + base64.RawURLEncoding.EncodeToString(sig))
}

// client builds a client for the simulator's tenant with the given auth settings.
func (e *entraEnv) client(mutate func(*Config), reg prometheus.Registerer) (*Client, *testutil.SyncBuffer) {
	e.t.Helper()
	cfg := Config{
		APIURL: e.srv.URL, TokenURL: e.srv.URL + "/{tenant}/oauth2/v2.0/token", Scope: entraScopeAPI,
		TenantID: entraTenant, ClientID: entraClient, Tenant: "contoso", RequestTimeout: 10 * time.Second,
		UserAgent: "MdePartner-LrRelay-lr-relay/test", MaxThrottleRetries: 5,
	}
	mutate(&cfg)
	logs := &testutil.SyncBuffer{}
	opts := []Option{WithClock(e.clock.Now), withJitter(func() float64 { return 0 })}
	if reg != nil {
		opts = append(opts, WithRegisterer(reg))
	}
	c, err := New(cfg, e.srv.Client(), (&fakeLimiter{}).both(), zerolog.New(logs).Level(zerolog.DebugLevel), opts...)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	return c, logs
}

// wantAction checks that the client gets a token and that the API accepts it.
func wantAction(t *testing.T, c *Client) {
	t.Helper()
	ma, err := c.GetAction(context.Background(), entraAction)
	if err != nil {
		t.Fatalf("GetAction: %v", err)
	}
	if ma.ID != entraAction {
		t.Fatalf("action id = %q, want %q", ma.ID, entraAction)
	}
}

// wantRejected checks that err is a credentials rejection with the AADSTS number (0: any).
func wantRejected(t *testing.T, err error, aadsts int) *TokenError {
	t.Helper()
	var te *TokenError
	if !errors.As(err, &te) {
		t.Fatalf("error = %T %v, want *TokenError", err, err)
	}
	if !te.CredentialsRejected() || te.Retryable() || isRetryable(err) {
		t.Errorf("CredentialsRejected, Retryable = %v, %v; want true, false (%v)", te.CredentialsRejected(), te.Retryable(), err)
	}
	if aadsts != 0 && te.AADSTS != aadsts {
		t.Errorf("AADSTS = %d, want %d (%v)", te.AADSTS, aadsts, err)
	}
	return te
}

func TestCertificateAuth(t *testing.T) {
	pfx, err := os.ReadFile("testdata/client.pfx")
	if err != nil {
		t.Fatal(err)
	}
	pfxCerts, _, err := azidentity.ParseCertificates(pfx, []byte("pfx-pass"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEntraEnv(t, pfxCerts...)

	t.Run("PEM certificate and key", func(t *testing.T) {
		before := len(e.requests())
		c, _ := e.client(func(c *Config) { c.Auth, c.ClientCertFile = AuthCertificate, e.file("pem.pem", e.good.pem) }, nil)
		wantAction(t, c)
		// What azidentity asked for, in order: the tenant's openid-configuration, then the token.
		got := e.requests()[before:]
		want := []string{
			"GET /" + entraTenant + "/v2.0/.well-known/openid-configuration",
			"POST /" + entraTenant + "/oauth2/v2.0/token",
			"GET /api/machineactions/" + entraAction,
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("PFX with password file", func(t *testing.T) {
		c, _ := e.client(func(c *Config) {
			c.Auth, c.ClientCertFile, c.ClientCertPasswordFile = AuthCertificate, "testdata/client.pfx", "testdata/client.pfx.password"
		}, nil)
		wantAction(t, c)
	})
	t.Run("PFX with wrong password", func(t *testing.T) {
		c, _ := e.client(func(c *Config) {
			c.Auth, c.ClientCertFile, c.ClientCertPasswordFile = AuthCertificate, "testdata/client.pfx", e.file("wrong-pass", []byte("nope\n"))
		}, nil)
		te := wantRejected(t, c.CheckAuth(context.Background()), 0)
		if te.Code != codeCredentialFile || strings.Contains(te.Error(), "nope") {
			t.Errorf("error = %v, want code %s without the password", te, codeCredentialFile)
		}
	})
	t.Run("missing certificate file", func(t *testing.T) {
		c, _ := e.client(func(c *Config) { c.Auth, c.ClientCertFile = AuthCertificate, filepath.Join(e.dir, "absent.pem") }, nil)
		te := wantRejected(t, c.CheckAuth(context.Background()), 0)
		if te.Code != codeCredentialFile || !strings.Contains(te.Error(), "absent.pem") {
			t.Errorf("error = %v, want code %s naming the file", te, codeCredentialFile)
		}
	})
	t.Run("certificate not registered", func(t *testing.T) {
		other := newCertPair(t, time.Now().Add(time.Hour))
		c, _ := e.client(func(c *Config) { c.Auth, c.ClientCertFile = AuthCertificate, e.file("other.pem", other.pem) }, nil)
		te := wantRejected(t, c.CheckAuth(context.Background()), 700027)
		if te.Status != http.StatusUnauthorized || te.Code != "invalid_client" {
			t.Errorf("status, code = %d, %q; want 401, invalid_client", te.Status, te.Code)
		}
	})
	t.Run("certificate and key do not match", func(t *testing.T) {
		// The registered certificate with another key: refused locally, before any request (the simulator's
		// own signature check is covered in its package).
		other := newCertPair(t, time.Now().Add(time.Hour))
		mixed := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.good.cert.Raw}), other.pem[len(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.cert.Raw})):]...)
		c, _ := e.client(func(c *Config) { c.Auth, c.ClientCertFile = AuthCertificate, e.file("mixed.pem", mixed) }, nil)
		if te := wantRejected(t, c.CheckAuth(context.Background()), 0); te.Code != codeCredentialFile {
			t.Errorf("code = %q, want %s", te.Code, codeCredentialFile)
		}
	})
	t.Run("expired assertion", func(t *testing.T) {
		// MSAL's assertions live 10 minutes; 20 minutes later (beyond the 5 minute skew) they are expired.
		e.setSimOffset(20 * time.Minute)
		defer e.setSimOffset(0)
		c, _ := e.client(func(c *Config) { c.Auth, c.ClientCertFile = AuthCertificate, e.file("pem.pem", e.good.pem) }, nil)
		wantRejected(t, c.CheckAuth(context.Background()), 700024)
	})
	t.Run("expired certificate", func(t *testing.T) {
		old := newCertPair(t, time.Now().Add(time.Minute))
		e2 := newEntraEnv(t, old.cert)
		e2.setSimOffset(2 * time.Minute) // the certificate expired, the assertion is still fresh
		c, _ := e2.client(func(c *Config) { c.Auth, c.ClientCertFile = AuthCertificate, e2.file("old.pem", old.pem) }, nil)
		wantRejected(t, c.CheckAuth(context.Background()), 700027)
	})
}

func TestCertificateRotationAndPacing(t *testing.T) {
	e := newEntraEnv(t)
	reg := prometheus.NewRegistry()
	wrong := newCertPair(t, time.Now().Add(time.Hour))
	certFile := e.file("client.pem", wrong.pem)
	c, logs := e.client(func(c *Config) { c.Auth, c.ClientCertFile = AuthCertificate, certFile }, reg)
	gauge := func() float64 { return promtest.ToFloat64(c.metrics.auth.WithLabelValues("contoso")) }
	if g := gauge(); g != 0 {
		t.Errorf("lr_tenant_auth_ok before the first token = %v, want 0", g)
	}

	wantRejected(t, c.CheckAuth(context.Background()), 700027)
	calls := e.sim.Stats().TokenCalls
	if ok, why := c.AuthHealthy(); ok || !strings.Contains(why, "credentials rejected") || !strings.Contains(why, "AADSTS700027") {
		t.Errorf("AuthHealthy = %v, %q; want false, credentials rejected with AADSTS700027", ok, why)
	}
	// Paced: further requests get the rejection at once, without a token request.
	for range 5 {
		_, err := c.GetAction(context.Background(), entraAction)
		wantRejected(t, err, 700027)
	}
	if got := e.sim.Stats().TokenCalls; got != calls {
		t.Errorf("token requests while paced = %d, want 0", got-calls)
	}
	// After the pacing interval, one real attempt (the file is unchanged, so it fails again).
	e.clock.Advance(rejectedPace)
	wantRejected(t, c.CheckAuth(context.Background()), 700027)
	if got := e.sim.Stats().TokenCalls; got != calls+1 {
		t.Errorf("token requests after %s = %d, want 1", rejectedPace, got-calls)
	}
	if n := strings.Count(logs.String(), "mde credentials rejected"); n != 1 {
		t.Errorf("rejection log lines = %d, want 1 (one per transition):\n%s", n, logs)
	}
	if g := gauge(); g != 0 {
		t.Errorf("lr_tenant_auth_ok while rejected = %v, want 0", g)
	}

	// Rotation: the right certificate lands in the file; the next request tries at once, within the pace.
	e.clock.Advance(time.Second)
	e.file("client.pem", e.good.pem)
	wantAction(t, c)
	if ok, why := c.AuthHealthy(); !ok {
		t.Errorf("AuthHealthy after rotation = false, %q", why)
	}
	if g := gauge(); g != 1 {
		t.Errorf("lr_tenant_auth_ok after rotation = %v, want 1", g)
	}
	if !strings.Contains(logs.String(), "mde credentials accepted again") {
		t.Errorf("no recovery log line:\n%s", logs)
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("the key leaked into the logs")
	}
}

func TestSecretFileRotation(t *testing.T) {
	e := newEntraEnv(t)
	secretFile := e.file("secret", []byte("old-secret\n"))
	c, logs := e.client(func(c *Config) { c.ClientSecretFile = secretFile }, nil)
	te := wantRejected(t, c.CheckAuth(context.Background()), 7000215)
	if te.Code != "invalid_client" {
		t.Errorf("code = %q, want invalid_client", te.Code)
	}
	calls := e.sim.Stats().TokenCalls
	wantRejected(t, c.CheckAuth(context.Background()), 7000215)
	if got := e.sim.Stats().TokenCalls; got != calls {
		t.Errorf("token requests while paced = %d, want 0", got-calls)
	}
	e.file("secret", []byte("entra-secret\n"))
	wantAction(t, c)
	if strings.Contains(logs.String(), "old-secret") || strings.Contains(logs.String(), "entra-secret") {
		t.Errorf("a secret leaked into the logs:\n%s", logs)
	}
}

func TestWorkloadIdentityAuth(t *testing.T) {
	e := newEntraEnv(t)
	tokenFile := e.file("federated-token", e.federatedToken(k8sSubject, simulator.FederatedAudience, time.Now().Add(time.Hour)))
	c, _ := e.client(func(c *Config) { c.Auth, c.FederatedTokenFile = AuthWorkloadIdentity, tokenFile }, nil)
	wantAction(t, c)

	// The file is read for every token: a token for another subject, written now, is what the next
	// refresh sends, and the simulator refuses it.
	e.file("federated-token", e.federatedToken("system:serviceaccount:other:intruder", simulator.FederatedAudience, time.Now().Add(time.Hour)))
	e.clock.Advance(time.Hour)
	wantRejected(t, c.CheckAuth(context.Background()), 700213)

	cases := []struct {
		name   string
		token  []byte
		aadsts int
	}{
		{"wrong audience", e.federatedToken(k8sSubject, "api://SomethingElse", time.Now().Add(time.Hour)), 700212},
		{"expired", e.federatedToken(k8sSubject, simulator.FederatedAudience, time.Now().Add(-10*time.Minute)), 700024},
		{"untrusted issuer", signJWT(t, newCertPair(t, time.Now().Add(time.Hour)).key, map[string]any{"alg": "RS256"},
			map[string]any{"iss": "https://evil.test", "sub": k8sSubject, "aud": simulator.FederatedAudience, "exp": time.Now().Add(time.Hour).Unix()}), 700211},
		{"forged signature", signJWT(t, newCertPair(t, time.Now().Add(time.Hour)).key, map[string]any{"alg": "RS256"},
			map[string]any{"iss": k8sIssuer, "sub": k8sSubject, "aud": simulator.FederatedAudience, "exp": time.Now().Add(time.Hour).Unix()}), 50013},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			f := e.file("fed-"+strings.ReplaceAll(tt.name, " ", "-"), tt.token)
			c, _ := e.client(func(c *Config) { c.Auth, c.FederatedTokenFile = AuthWorkloadIdentity, f }, nil)
			wantRejected(t, c.CheckAuth(context.Background()), tt.aadsts)
		})
	}
	t.Run("missing token file", func(t *testing.T) {
		c, _ := e.client(func(c *Config) { c.Auth, c.FederatedTokenFile = AuthWorkloadIdentity, filepath.Join(e.dir, "absent") }, nil)
		te := wantRejected(t, c.CheckAuth(context.Background()), 0)
		if te.Code != codeCredentialFile {
			t.Errorf("code = %q, want %s", te.Code, codeCredentialFile)
		}
	})
}

func TestManagedIdentityAuth(t *testing.T) {
	e := newEntraEnv(t)
	// App Service's managed identity environment, which azidentity reads at every credential it builds.
	t.Setenv("IDENTITY_ENDPOINT", e.srv.URL+"/msi/token")
	t.Setenv("IDENTITY_HEADER", simulator.DefaultIdentityHeader)
	c, _ := e.client(func(c *Config) { c.Auth, c.ClientID, c.TenantID, c.TokenURL = AuthManagedIdentity, miClient, "", "" }, nil)
	wantAction(t, c)
	if n := e.sim.Stats().IdentityCalls; n != 1 {
		t.Errorf("managed identity requests = %d, want 1", n)
	}

	t.Run("unknown identity", func(t *testing.T) {
		c, _ := e.client(func(c *Config) {
			c.Auth, c.ClientID, c.TenantID, c.TokenURL = AuthManagedIdentity, "00000000-0000-4000-8000-00000000dead", "", ""
		}, nil)
		te := wantRejected(t, c.CheckAuth(context.Background()), 0)
		if te.Status != http.StatusBadRequest {
			t.Errorf("status = %d, want 400", te.Status)
		}
	})
	t.Run("endpoint down is transient", func(t *testing.T) {
		t.Setenv("IDENTITY_ENDPOINT", "https://127.0.0.1:1/msi/token")
		c, _ := e.client(func(c *Config) {
			c.Auth, c.ClientID, c.TenantID, c.TokenURL = AuthManagedIdentity, "00000000-0000-4000-8000-00000000beef", "", ""
		}, nil)
		err := c.CheckAuth(context.Background())
		var te *TokenError
		if !errors.As(err, &te) || te.CredentialsRejected() || !isRetryable(err) {
			t.Errorf("error = %v, want a retryable *TokenError that is not a rejection", err)
		}
		if ok, why := c.AuthHealthy(); ok || !strings.Contains(why, "no token yet") {
			t.Errorf("AuthHealthy = %v, %q; want false, no token yet", ok, why)
		}
	})
}

func TestCheckAuthAllRechecksFailingTenants(t *testing.T) {
	e := newEntraEnv(t)
	secretFile := e.file("secret", []byte("revoked\n"))
	bad, _ := e.client(func(c *Config) { c.ClientSecretFile = secretFile; c.Tenant = "bad" }, nil)
	good, _ := e.client(func(c *Config) { c.ClientSecret = "entra-secret"; c.Tenant = "good" }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); CheckAuthAll(ctx, []*Client{bad, good}, 2, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()

	testutil.Eventually(t, 10*time.Second, func() error { return authState(bad, false, "credentials rejected") })
	testutil.Eventually(t, 10*time.Second, func() error { return authState(good, true, "") })
	// The rejected tenant is checked again, but paced: no token request until its file changes.
	calls := e.sim.Stats().TokenCalls
	time.Sleep(50 * time.Millisecond) // several recheck rounds; nothing may happen, so there is nothing to poll for
	if got := e.sim.Stats().TokenCalls; got != calls {
		t.Errorf("token requests while paced = %d, want 0", got-calls)
	}
	e.file("secret", []byte("entra-secret\n"))
	testutil.Eventually(t, 10*time.Second, func() error { return authState(bad, true, "") })
}

// authState says how c's AuthHealthy differs from the wanted state (and detail, when want is false).
func authState(c *Client, want bool, detail string) error {
	if ok, why := c.AuthHealthy(); ok != want || !strings.Contains(why, detail) {
		return fmt.Errorf("AuthHealthy = %v, %q; want %v with %q", ok, why, want, detail)
	}
	return nil
}
