package mde

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// The authentication modes (Config.Auth).
const (
	// AuthSecret is the client credentials grant with a client secret, through golang.org/x/oauth2.
	AuthSecret = "secret"
	// AuthCertificate signs a client assertion with a certificate's key (azidentity).
	AuthCertificate = "certificate"
	// AuthWorkloadIdentity sends a federated token (a Kubernetes service account token) as the client
	// assertion (azidentity).
	AuthWorkloadIdentity = "workload-identity"
	// AuthManagedIdentity asks the hosting environment's managed identity endpoint (azidentity).
	AuthManagedIdentity = "managed-identity"
)

// AuthModes returns the valid authentication modes, for help texts and validation messages.
func AuthModes() []string {
	return []string{AuthSecret, AuthCertificate, AuthWorkloadIdentity, AuthManagedIdentity}
}

// codeCredentialFile is the TokenError code of a credential file that cannot be read or used (missing,
// unreadable, not a certificate, wrong password): like a rejection, only the operator can fix it.
const codeCredentialFile = "credential_file_unusable"

// maxTokenErrorBody bounds what is kept of a token endpoint's error answer for classification.
const maxTokenErrorBody = 64 << 10

// credential obtains new access tokens for one tenant. Implementations read their files at every token
// request, so that a rotated secret, certificate or federated token is used without a restart; tokens are
// cached for most of an hour, so that costs one small read per hour.
type credential interface {
	// token fetches a new access token and its lifetime. reqCtx carries the per-request timeout; ctx is the
	// caller's, to tell the caller giving up from the request timing out. Errors are *TokenError.
	token(ctx, reqCtx context.Context) (string, time.Duration, error)
	// files summarises the credential files' content, so that a rotated file can be noticed.
	files() string
	// secrets returns the secret values to scrub from any text that reaches an error or a log.
	secrets() []string
}

// fileStamp describes the content of paths (a SHA-256 of each, or "missing"), so that a rotated file is
// noticed whatever its size and timestamps: a rewrite within the same clock tick, or a Kubernetes secret
// update that swaps a symlink. The files are a few kilobytes, and are read this way only while a tenant is
// paced after a rejection.
func fileStamp(paths ...string) string {
	var b strings.Builder
	for _, p := range paths {
		if p == "" {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintf(&b, "%s:missing;", p)
			continue
		}
		fmt.Fprintf(&b, "%s:%x;", p, sha256.Sum256(data))
	}
	return b.String()
}

// fileError is the TokenError of a credential file that could not be used. The path is named, never the
// content.
func fileError(what, path string, err error) *TokenError {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &TokenError{Code: codeCredentialFile, Err: fmt.Errorf("%s %s: %v", what, path, err)}
}

// secretCredential is the client credentials grant with a client secret. It stays on x/oauth2: one form
// POST with no discovery requests, accepted on loopback http by the simulator and the tests, and exactly the
// behaviour lr-relay has always had.
type secretCredential struct {
	conf    clientcredentials.Config // ClientSecret is filled in per request
	secret  string                   // the literal secret, when there is no file
	file    string                   // re-read at every request when set
	http    *http.Client
	timeout time.Duration

	mu   sync.Mutex
	last string // guarded by mu; the secret last read, for scrubbing
}

func (c *secretCredential) files() string { return fileStamp(c.file) }

func (c *secretCredential) secrets() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return []string{c.secret, c.last}
}

func (c *secretCredential) token(ctx, reqCtx context.Context) (string, time.Duration, error) {
	secret := c.secret
	if c.file != "" {
		b, err := os.ReadFile(c.file)
		if err != nil {
			return "", 0, fileError("client secret file", c.file, err)
		}
		if secret = strings.TrimSpace(string(b)); secret == "" {
			return "", 0, fileError("client secret file", c.file, errors.New("empty"))
		}
		c.mu.Lock()
		c.last = secret
		c.mu.Unlock()
	}
	conf := c.conf
	conf.ClientSecret = secret
	tk, err := conf.Token(context.WithValue(reqCtx, oauth2.HTTPClient, c.http))
	if err != nil {
		return "", 0, c.tokenError(ctx, reqCtx, err, secret)
	}
	return tk.AccessToken, tokenLifetime(tk), nil
}

// tokenError turns whatever x/oauth2 returned into a *TokenError that is safe to log. An
// *oauth2.RetrieveError is never kept: its Error() prints the endpoint's body.
func (c *secretCredential) tokenError(ctx, reqCtx context.Context, err error, secret string) *TokenError {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		te := &TokenError{Code: safeToken(redact(re.ErrorCode, secret), 64)}
		if re.Response != nil {
			te.Status = re.Response.StatusCode
		}
		if id := aadstsRE.FindString(re.ErrorDescription); id != "" {
			te.Err = errors.New(id)
			te.AADSTS, _ = strconv.Atoi(strings.TrimPrefix(id, "AADSTS"))
		}
		return te
	}
	if ctx.Err() == nil && (reqCtx.Err() != nil || isTimeout(err)) {
		return &TokenError{Err: &timeoutError{op: "get token", timeout: c.timeout, err: err}}
	}
	if secret != "" && strings.Contains(err.Error(), secret) {
		// Not expected from x/oauth2 (the secret travels in the body), but never worth the risk.
		err = errors.New(redact(err.Error(), secret))
	}
	return &TokenError{Err: err}
}

// azCredential obtains tokens through azidentity: a certificate, a federated token (workload identity) or
// a managed identity. A fresh azidentity credential is built for every token request. That re-reads the
// certificate and the federated token file each time (rotation without restart), and bypasses MSAL's own
// token cache, which would otherwise hand back the token lr-relay just decided to replace (after a 401, or
// at its jittered refresh point). The cost is one openid-configuration GET per token, about one per hour.
type azCredential struct {
	mode               string
	tenantID, clientID string
	authority          string // https://host/ of the cloud's login endpoint
	scope              string
	certFile, passFile string
	tokenFile          string
	http               *http.Client
	timeout            time.Duration
}

func (c *azCredential) files() string {
	return fileStamp(c.certFile, c.passFile, c.tokenFile)
}

func (c *azCredential) secrets() []string { return nil }

func (c *azCredential) token(ctx, reqCtx context.Context) (string, time.Duration, error) {
	rec := &recorder{client: c.http}
	opts := azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: c.authority},
		Transport: rec,
		// The relay decides about retries (it knows the tenant's backoff); azcore's own would multiply them.
		Retry:     policy.RetryOptions{MaxRetries: -1},
		Telemetry: policy.TelemetryOptions{Disabled: true},
	}
	var (
		cred    azcore.TokenCredential
		err     error
		fileErr error // set by the assertion callback when the federated token file cannot be read
		fileMu  sync.Mutex
	)
	switch c.mode {
	case AuthCertificate:
		data, rerr := os.ReadFile(c.certFile)
		if rerr != nil {
			return "", 0, fileError("client certificate file", c.certFile, rerr)
		}
		var password []byte
		if c.passFile != "" {
			pw, rerr := os.ReadFile(c.passFile)
			if rerr != nil {
				return "", 0, fileError("client certificate password file", c.passFile, rerr)
			}
			password = bytes.TrimRight(pw, "\r\n")
		}
		certs, key, perr := azidentity.ParseCertificates(data, password)
		if perr != nil {
			// The parser's message names the format problem; it never contains the key or the password.
			return "", 0, fileError("client certificate file", c.certFile, errors.New(shorten(perr.Error(), 120)))
		}
		cred, err = azidentity.NewClientCertificateCredential(c.tenantID, c.clientID, certs, key,
			&azidentity.ClientCertificateCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
	case AuthWorkloadIdentity:
		// ClientAssertionCredential with our own callback rather than WorkloadIdentityCredential, which keeps
		// the file's content for ten minutes: the token file is read for every token request.
		read := func(context.Context) (string, error) {
			b, rerr := os.ReadFile(c.tokenFile)
			if rerr == nil && len(bytes.TrimSpace(b)) == 0 {
				rerr = errors.New("empty")
			}
			if rerr != nil {
				fileMu.Lock()
				fileErr = rerr
				fileMu.Unlock()
				return "", rerr
			}
			return string(bytes.TrimSpace(b)), nil
		}
		cred, err = azidentity.NewClientAssertionCredential(c.tenantID, c.clientID, read,
			&azidentity.ClientAssertionCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
	case AuthManagedIdentity:
		o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
		if c.clientID != "" {
			o.ID = azidentity.ClientID(c.clientID)
		}
		cred, err = azidentity.NewManagedIdentityCredential(o)
	default:
		return "", 0, &TokenError{Err: fmt.Errorf("unknown auth mode %q", c.mode)}
	}
	if err != nil {
		return "", 0, &TokenError{Code: codeCredentialFile, Err: fmt.Errorf("%s credential: %s", c.mode, shorten(firstLine(err.Error()), 160))}
	}
	at, err := cred.GetToken(reqCtx, policy.TokenRequestOptions{Scopes: []string{c.scope}})
	if err == nil {
		if at.Token == "" {
			return "", 0, &TokenError{Err: errors.New("answer has no access token")}
		}
		life := time.Until(at.ExpiresOn)
		if at.ExpiresOn.IsZero() || life <= 0 {
			life = defaultTokenLifetime
		}
		return at.Token, life, nil
	}
	fileMu.Lock()
	ferr := fileErr
	fileMu.Unlock()
	if ferr != nil {
		return "", 0, fileError("federated token file", c.tokenFile, ferr)
	}
	return "", 0, c.tokenError(ctx, reqCtx, rec, err)
}

// tokenError classifies a failed azidentity request by what went over the wire, which the recorder saw:
// a transport failure is transient like any other; an error answer becomes a *TokenError with the status,
// the OAuth2 error code and the AADSTS number, never the body. azidentity's own error text is not kept: it
// prints the whole response.
func (c *azCredential) tokenError(ctx, reqCtx context.Context, rec *recorder, err error) *TokenError {
	status, body, terr := rec.last()
	switch {
	case terr != nil:
		if ctx.Err() == nil && (reqCtx.Err() != nil || isTimeout(terr)) {
			return &TokenError{Err: &timeoutError{op: "get token", timeout: c.timeout, err: terr}}
		}
		return &TokenError{Err: terr}
	case status != 0:
		te := &TokenError{Status: status}
		var eb struct {
			Error       json.RawMessage `json:"error"`
			Description string          `json:"error_description"`
			Codes       []int           `json:"error_codes"`
			Message     string          `json:"message"` // managed identity endpoints
		}
		if json.Unmarshal(body, &eb) == nil {
			var code string
			if json.Unmarshal(eb.Error, &code) == nil {
				te.Code = safeToken(code, 64)
			}
			if len(eb.Codes) > 0 {
				te.AADSTS = eb.Codes[0]
			} else if id := aadstsRE.FindString(eb.Description); id != "" {
				te.AADSTS, _ = strconv.Atoi(strings.TrimPrefix(id, "AADSTS"))
			}
		}
		if te.AADSTS != 0 {
			te.Err = fmt.Errorf("AADSTS%d", te.AADSTS)
		}
		// A managed identity endpoint that refuses the identity (unknown client id, no identity assigned)
		// answers 400, 401 or 403: a configuration the operator must fix, like a rejected secret. IMDS's 404
		// and 410 mean the identity is not available yet, which passes.
		if c.mode == AuthManagedIdentity && (status == http.StatusBadRequest || status == http.StatusUnauthorized || status == http.StatusForbidden) {
			te.rejected = true
			if te.Err == nil {
				te.Err = errors.New("managed identity endpoint refused the request")
			}
		}
		return te
	}
	if ctx.Err() != nil {
		return &TokenError{Err: fmt.Errorf("get token: %w", ctx.Err())}
	}
	// Neither an answer nor a transport error: azidentity refused before sending (a malformed metadata
	// document, an unsupported configuration). Only the first line is kept.
	return &TokenError{Err: errors.New(shorten(firstLine(err.Error()), 160))}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}

// recorder is the azcore Transport: it sends through lr-relay's HTTP client (proxy, timeouts, TLS) and
// remembers the last transport error or error answer, so that failures are classified on what happened
// rather than on azidentity's error text.
type recorder struct {
	client *http.Client

	mu     sync.Mutex
	status int
	body   []byte
	err    error
}

// Do implements policy.Transporter.
func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	resp, err := r.client.Do(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.status, r.body, r.err = 0, nil, err
		return nil, err
	}
	r.err = nil
	if resp.StatusCode < 400 {
		r.status, r.body = 0, nil
		return resp, nil
	}
	b, rerr := io.ReadAll(io.LimitReader(resp.Body, maxTokenErrorBody))
	_ = resp.Body.Close()
	if rerr != nil {
		r.status, r.body, r.err = 0, nil, rerr
		return nil, rerr
	}
	r.status, r.body = resp.StatusCode, b
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

func (r *recorder) last() (int, []byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status, r.body, r.err
}

// authorityHost derives the authority host azidentity needs (https://host/) from a token URL of the form
// https://host/{tenant}/oauth2/v2.0/token, so that every cloud, and any LR_MDE_TOKEN_URL override, keeps
// its own login host. MSAL requires https and the tenant as the first path segment.
func authorityHost(tokenURL, tenantID string) (string, error) {
	u, err := url.Parse(tokenURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("TokenURL %q is not an absolute URL", tokenURL)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("TokenURL %q must use https for certificate, workload and managed identity authentication", tokenURL)
	}
	want := "/" + url.PathEscape(tenantID) + "/oauth2/v2.0/token"
	if !strings.EqualFold(u.EscapedPath(), want) {
		return "", fmt.Errorf("TokenURL %q must have the form https://<login host>/{tenant}/oauth2/v2.0/token for azidentity", tokenURL)
	}
	return "https://" + u.Host + "/", nil
}
