package simulator

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is defined as a SHA-1 thumbprint (RFC 7515 4.1.7); it is not used for security here.
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	// assertionType is the only client_assertion_type Entra ID accepts (RFC 7523).
	assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// FederatedAudience is the audience Entra ID expects in a federated token unless the federated
	// credential names another.
	FederatedAudience = "api://AzureADTokenExchange"
	// assertionSkew is the clock skew Entra ID tolerates on exp and nbf.
	assertionSkew = 5 * time.Minute
	// maxAssertion bounds what is parsed; real assertions are a few kilobytes.
	maxAssertion = 16 << 10
)

// rejection is the token endpoint's answer to an assertion it refuses, with Entra ID's status, error code
// and AADSTS number for that case.
type rejection struct {
	status int
	code   string
	aadsts int
	msg    string
}

func rejectClient(aadsts int, msg string) *rejection {
	return &rejection{status: http.StatusUnauthorized, code: "invalid_client", aadsts: aadsts, msg: msg}
}

func rejectRequest(aadsts int, msg string) *rejection {
	return &rejection{status: http.StatusBadRequest, code: "invalid_request", aadsts: aadsts, msg: msg}
}

// jwt is a parsed compact JWS. Only what Entra ID looks at is kept.
type jwt struct {
	alg, x5t, x5tS256 string
	claims            jwtClaims
	signed, sig       []byte
}

type jwtClaims struct {
	Iss string      `json:"iss"`
	Sub string      `json:"sub"`
	Aud audience    `json:"aud"`
	Exp json.Number `json:"exp"`
	Nbf json.Number `json:"nbf"`
}

// audience is the aud claim, which RFC 7519 allows as one string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

func (a audience) has(want string) bool {
	for _, v := range a {
		if strings.EqualFold(strings.TrimRight(v, "/"), strings.TrimRight(want, "/")) {
			return true
		}
	}
	return false
}

// parseJWT splits and decodes a compact JWS without trusting anything in it yet.
func parseJWT(s string) (*jwt, error) {
	if len(s) > maxAssertion {
		return nil, errors.New("assertion too large")
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, errors.New("header is not base64url")
	}
	cb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("payload is not base64url")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, errors.New("signature is not base64url")
	}
	var h struct {
		Alg     string `json:"alg"`
		X5t     string `json:"x5t"`
		X5tS256 string `json:"x5t#S256"`
	}
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, errors.New("header is not JSON")
	}
	j := &jwt{alg: h.Alg, x5t: h.X5t, x5tS256: h.X5tS256, sig: sig, signed: []byte(parts[0] + "." + parts[1])}
	dec := json.NewDecoder(bytes.NewReader(cb))
	dec.UseNumber()
	if err := dec.Decode(&j.claims); err != nil {
		return nil, errors.New("payload is not a JSON claims set")
	}
	return j, nil
}

// verify checks the signature with pub. Entra ID accepts RS256 and PS256 assertions; MSAL sends PS256 with
// x5t#S256, older clients RS256 with x5t.
func (j *jwt) verify(pub crypto.PublicKey) error {
	key, ok := pub.(*rsa.PublicKey)
	if !ok {
		return errors.New("not an RSA key")
	}
	sum := sha256.Sum256(j.signed)
	switch j.alg {
	case "RS256":
		return rsa.VerifyPKCS1v15(key, crypto.SHA256, sum[:], j.sig)
	case "PS256":
		return rsa.VerifyPSS(key, crypto.SHA256, sum[:], j.sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	}
	return errors.New("unsupported alg " + j.alg)
}

// timely checks exp (required) and nbf (optional) against now, with Entra ID's tolerance.
func (j *jwt) timely(now time.Time) bool {
	exp, err := strconv.ParseFloat(j.claims.Exp.String(), 64)
	if err != nil || now.After(time.Unix(int64(exp), 0).Add(assertionSkew)) {
		return false
	}
	if j.claims.Nbf != "" {
		nbf, err := strconv.ParseFloat(j.claims.Nbf.String(), 64)
		if err != nil || now.Add(assertionSkew).Before(time.Unix(int64(nbf), 0)) {
			return false
		}
	}
	return true
}

// decodeThumbprint reads an x5t value: RFC 7515 says base64url, MSAL sends standard base64; both are
// accepted, as Entra ID does.
func decodeThumbprint(s string) []byte {
	for _, enc := range []*base64.Encoding{base64.RawURLEncoding, base64.URLEncoding, base64.StdEncoding, base64.RawStdEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b
		}
	}
	return nil
}

// certificateFor finds the registered certificate the assertion's x5t#S256 or x5t names.
func (j *jwt) certificateFor(certs []*x509.Certificate) *x509.Certificate {
	for _, c := range certs {
		if j.x5tS256 != "" {
			sum := sha256.Sum256(c.Raw)
			if bytes.Equal(decodeThumbprint(j.x5tS256), sum[:]) {
				return c
			}
			continue
		}
		if j.x5t != "" {
			sum := sha1.Sum(c.Raw) //nolint:gosec // see the import
			if bytes.Equal(decodeThumbprint(j.x5t), sum[:]) {
				return c
			}
		}
	}
	return nil
}

// checkAssertion verifies a client_assertion the way Entra ID does and returns nil when it is accepted.
//
// An assertion whose iss is the client id is a certificate credential: its header must name a registered
// certificate (x5t#S256 or x5t), its signature must verify with that certificate's key, iss and sub must be
// the client id, aud the token endpoint, and exp/nbf must hold. Any other assertion is a federated token
// (workload identity): its issuer must be trusted, its signature must verify with one of the issuer's keys,
// it must be unexpired, and a federated credential of the app must match its iss, sub and aud.
func (s *Simulator) checkAssertion(assertion string, creds Credentials, endpoint string, now time.Time) *rejection {
	j, err := parseJWT(assertion)
	if err != nil {
		return rejectClient(50027, "JWT token is invalid or malformed: "+err.Error()+".")
	}
	if strings.EqualFold(j.claims.Iss, creds.ClientID) {
		cert := j.certificateFor(creds.Certificates)
		switch {
		case j.x5t == "" && j.x5tS256 == "":
			return rejectClient(700027, "Client assertion contains no x5t or x5t#S256 header.")
		case cert == nil:
			return rejectClient(700027, "The certificate with identifier used to sign the client assertion is not registered on application.")
		case j.verify(cert.PublicKey) != nil:
			return rejectClient(700027, "Client assertion failed signature validation.")
		case !strings.EqualFold(j.claims.Sub, creds.ClientID):
			return rejectClient(700021, "Client assertion application identifier doesn't match 'client_id' parameter.")
		case !j.claims.Aud.has(endpoint):
			return rejectClient(700023, "Client assertion audience claim does not match the token endpoint.")
		case now.After(cert.NotAfter):
			return rejectClient(700027, "The certificate used to sign the client assertion has expired.")
		case !j.timely(now):
			return rejectClient(700024, "Client assertion is not within its valid time range.")
		}
		return nil
	}
	is, ok := s.issuers[j.claims.Iss]
	if !ok {
		return rejectRequest(700211, "No matching federated identity record found for presented assertion issuer.")
	}
	verified := false
	for _, k := range is.Keys {
		if j.verify(k) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return rejectClient(50013, "Assertion failed signature validation.")
	}
	if !j.timely(now) {
		return rejectClient(700024, "Client assertion is not within its valid time range.")
	}
	var byIssuer, bySubject bool
	for _, fc := range creds.Federated {
		byIssuer = byIssuer || fc.Issuer == j.claims.Iss
		if fc.Issuer != j.claims.Iss || fc.Subject != j.claims.Sub {
			continue
		}
		bySubject = true
		aud := fc.Audience
		if aud == "" {
			aud = FederatedAudience
		}
		if j.claims.Aud.has(aud) {
			return nil
		}
	}
	if !byIssuer {
		return rejectRequest(700211, "No matching federated identity record found for presented assertion issuer.")
	}
	if bySubject {
		return rejectRequest(700212, "No matching federated identity record found for presented assertion audience.")
	}
	return rejectRequest(700213, "No matching federated identity record found for presented assertion subject.")
}

// tokenEndpoint is the URL the request was sent to, which a client assertion's aud must name.
func tokenEndpoint(r *http.Request) string {
	return baseURL(r) + r.URL.Path
}

// baseURL is the scheme and host the client called.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
