package simulator

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is a SHA-1 thumbprint by definition
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lr-relay/lr-relay/internal/action"
)

func testKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testCert(t *testing.T, key *rsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sim test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sign builds a compact JWS with alg RS256 or PS256.
func sign(t *testing.T, key *rsa.PrivateKey, header, claims map[string]any) string {
	t.Helper()
	hb, _ := json.Marshal(header)
	cb, _ := json.Marshal(claims)
	signed := base64.RawURLEncoding.EncodeToString(hb) + "." + base64.RawURLEncoding.EncodeToString(cb)
	sum := sha256.Sum256([]byte(signed))
	var sig []byte
	var err error
	if header["alg"] == "PS256" {
		sig, err = rsa.SignPSS(rand.Reader, key, crypto.SHA256, sum[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	} else {
		sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	}
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestClientAssertions(t *testing.T) {
	const issuer = "https://cluster.test/issuer"
	key, other, issuerKey := testKey(t), testKey(t), testKey(t)
	cert := testCert(t, key)
	s256 := sha256.Sum256(cert.Raw)
	s1 := sha1.Sum(cert.Raw) //nolint:gosec
	e := newEnv(t, Config{
		Certificates: []*x509.Certificate{cert},
		Federated:    []FederatedCredential{{Issuer: issuer, Subject: "system:serviceaccount:lr:relay"}},
		Issuers:      []Issuer{{URL: issuer, Keys: []crypto.PublicKey{&issuerKey.PublicKey}}},
	})
	endpoint := e.srv.URL + "/" + DefaultTenantID + "/oauth2/v2.0/token"
	now := time.Now()
	claims := func(mut func(map[string]any)) map[string]any {
		c := map[string]any{"iss": DefaultClientID, "sub": DefaultClientID, "aud": endpoint,
			"exp": now.Add(10 * time.Minute).Unix(), "nbf": now.Unix(), "jti": "x"}
		if mut != nil {
			mut(c)
		}
		return c
	}
	ps := map[string]any{"alg": "PS256", "typ": "JWT", "x5t#S256": base64.StdEncoding.EncodeToString(s256[:])}
	rs := map[string]any{"alg": "RS256", "typ": "JWT", "x5t": base64.RawURLEncoding.EncodeToString(s1[:])}
	fed := func(mut func(map[string]any)) map[string]any {
		c := map[string]any{"iss": issuer, "sub": "system:serviceaccount:lr:relay", "aud": []string{FederatedAudience},
			"exp": now.Add(time.Hour).Unix()}
		if mut != nil {
			mut(c)
		}
		return c
	}
	tests := []struct {
		name      string
		assertion string
		secret    string
		status    int
		aadsts    int
	}{
		{"PS256 with x5t#S256 (MSAL)", sign(t, key, ps, claims(nil)), "", 200, 0},
		{"RS256 with x5t", sign(t, key, rs, claims(nil)), "", 200, 0},
		{"signed by another key", sign(t, other, ps, claims(nil)), "", 401, 700027},
		{"no thumbprint", sign(t, key, map[string]any{"alg": "PS256"}, claims(nil)), "", 401, 700027},
		{"unregistered thumbprint", sign(t, key, map[string]any{"alg": "PS256", "x5t#S256": "AAAA"}, claims(nil)), "", 401, 700027},
		{"audience elsewhere", sign(t, key, ps, claims(func(c map[string]any) { c["aud"] = "https://login.example/token" })), "", 401, 700023},
		{"subject not the client", sign(t, key, ps, claims(func(c map[string]any) { c["sub"] = "someone" })), "", 401, 700021},
		{"expired", sign(t, key, ps, claims(func(c map[string]any) { c["exp"] = now.Add(-6 * time.Minute).Unix() })), "", 401, 700024},
		{"within skew", sign(t, key, ps, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), "", 200, 0},
		{"not yet valid", sign(t, key, ps, claims(func(c map[string]any) { c["nbf"] = now.Add(10 * time.Minute).Unix() })), "", 401, 700024},
		{"no exp", sign(t, key, ps, claims(func(c map[string]any) { delete(c, "exp") })), "", 401, 700024},
		{"malformed", "not.a.jwt", "", 401, 50027},
		{"secret and assertion", sign(t, key, ps, claims(nil)), DefaultClientSecret, 400, 90025},
		{"federated", sign(t, issuerKey, map[string]any{"alg": "RS256", "kid": "1"}, fed(nil)), "", 200, 0},
		{"federated, wrong audience", sign(t, issuerKey, map[string]any{"alg": "RS256"}, fed(func(c map[string]any) { c["aud"] = "api://other" })), "", 400, 700212},
		{"federated, wrong subject", sign(t, issuerKey, map[string]any{"alg": "RS256"}, fed(func(c map[string]any) { c["sub"] = "x" })), "", 400, 700213},
		{"federated, expired", sign(t, issuerKey, map[string]any{"alg": "RS256"}, fed(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() })), "", 401, 700024},
		{"federated, forged", sign(t, other, map[string]any{"alg": "RS256"}, fed(nil)), "", 401, 50013},
		{"federated, unknown issuer", sign(t, issuerKey, map[string]any{"alg": "RS256"}, fed(func(c map[string]any) { c["iss"] = "https://evil.test" })), "", 400, 700211},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"grant_type": {"client_credentials"}, "client_id": {DefaultClientID},
				"scope":                 {"https://api.securitycenter.microsoft.com/.default openid offline_access profile"},
				"client_assertion_type": {assertionType}, "client_assertion": {tt.assertion}}
			if tt.secret != "" {
				form.Set("client_secret", tt.secret)
			}
			resp, err := http.PostForm(endpoint, form)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				AccessToken string `json:"access_token"`
				ErrorCodes  []int  `json:"error_codes"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tt.status {
				t.Errorf("status = %d, want %d (codes %v)", resp.StatusCode, tt.status, body.ErrorCodes)
			}
			if tt.aadsts != 0 && (len(body.ErrorCodes) != 1 || body.ErrorCodes[0] != tt.aadsts) {
				t.Errorf("error_codes = %v, want [%d]", body.ErrorCodes, tt.aadsts)
			}
			if tt.status == 200 && body.AccessToken == "" {
				t.Error("no access token")
			}
		})
	}
}

func TestEntraMetadata(t *testing.T) {
	e := newEnv(t, Config{})
	get := func(path string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	status, m := get("/" + DefaultTenantID + "/v2.0/.well-known/openid-configuration")
	if want := e.srv.URL + "/" + DefaultTenantID + "/oauth2/v2.0/token"; status != 200 || m["token_endpoint"] != want {
		t.Errorf("openid-configuration: %d, token_endpoint %v; want 200, %s", status, m["token_endpoint"], want)
	}
	if status, _ := get("/unknown-tenant/v2.0/.well-known/openid-configuration"); status != 400 {
		t.Errorf("openid-configuration of an unknown tenant: %d, want 400", status)
	}
	q := url.Values{"api-version": {"1.1"}, "authorization_endpoint": {"https://login.microsoftonline.us/" + DefaultTenantID + "/oauth2/v2.0/authorize"}}
	status, m = get("/common/discovery/instance?" + q.Encode())
	if want := "https://login.microsoftonline.us/" + DefaultTenantID + "/v2.0/.well-known/openid-configuration"; status != 200 || m["tenant_discovery_endpoint"] != want {
		t.Errorf("instance discovery: %d, %v; want 200, %s", status, m["tenant_discovery_endpoint"], want)
	}
	if n := e.sim.Stats().MetadataCalls; n != 3 {
		t.Errorf("MetadataCalls = %d, want 3", n)
	}
}

func TestManagedIdentityEndpoint(t *testing.T) {
	e := newEnv(t, Config{ManagedIdentities: []ManagedIdentity{{ClientID: "mi-1", TenantID: DefaultTenantID}}})
	call := func(header, clientID string) (int, map[string]string) {
		t.Helper()
		q := url.Values{"api-version": {"2019-08-01"}, "resource": {"https://api.securitycenter.microsoft.com"}}
		if clientID != "" {
			q.Set("client_id", clientID)
		}
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/msi/token?"+q.Encode(), nil)
		req.Header.Set("X-IDENTITY-HEADER", header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		m := map[string]string{}
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	if status, _ := call("wrong", "mi-1"); status != 401 {
		t.Errorf("wrong identity header: %d, want 401", status)
	}
	if status, _ := call(DefaultIdentityHeader, "mi-2"); status != 400 {
		t.Errorf("unknown identity: %d, want 400", status)
	}
	if status, _ := call(DefaultIdentityHeader, ""); status != 400 {
		t.Errorf("no system-assigned identity: %d, want 400", status)
	}
	status, m := call(DefaultIdentityHeader, "mi-1")
	if status != 200 || m["access_token"] == "" || m["expires_on"] == "" {
		t.Fatalf("managed identity token: %d %v", status, m)
	}
	// The token works on the API like any other token of the tenant.
	e.sim.AddAction(Action{MachineAction: action.MachineAction{ID: "7f5d2a7c-3b3e-4f0c-9a57-1b1f6c2d7e09", Status: "Succeeded"}})
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/api/machineactions/7f5d2a7c-3b3e-4f0c-9a57-1b1f6c2d7e09", nil)
	req.Header.Set("Authorization", "Bearer "+m["access_token"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("API with a managed identity token: %d, want 200", resp.StatusCode)
	}
}
