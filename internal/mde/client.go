// Package mde is the client for the Microsoft Defender for Endpoint API calls lr-relay makes: reading a
// machine action and asking for the download link of one live response command's result.
//
// The client owns the parts of talking to Defender that every call must get right: an access token (client
// secret through x/oauth2; certificate, workload identity or managed identity through azidentity) that is
// cached, refreshed early at a jittered point and once more when the API refuses it, with rejected
// credentials typed, paced and reported as the tenant's auth health; the per-tenant throttle (every call
// waits on a Limiter, and a 429 pauses the whole tenant for Retry-After);
// bounded bodies and per-request timeouts; and typed errors that say whether trying again can help. Neither
// the client secret nor a token ever appears in an error or a log line.
package mde

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/quota"
)

const (
	// DefaultRetryAfter is used when a 429 carries no usable Retry-After header.
	DefaultRetryAfter = 60 * time.Second
	// maxRetryAfter caps a Retry-After so that a garbled header cannot stall a tenant for days; the API's
	// longest window is one hour.
	maxRetryAfter = time.Hour
)

// Body size limits. A link answer is a few hundred bytes and an action a few kilobytes; anything far larger
// is not what the API documents and is refused rather than buffered.
const (
	maxLinkBytes   = 1 << 20
	maxActionBytes = 8 << 20
	maxErrorBytes  = 64 << 10
)

// Config is everything the client needs for one tenant. Cloud selection and the LR_MDE_* overrides are
// resolved by the caller (see ResolveCloud), so the values here are final.
type Config struct {
	// APIURL is the API base URL, such as https://api.securitycenter.microsoft.com. It must be https, except
	// for a loopback host (tests, local simulators).
	APIURL string
	// TokenURL is the OAuth2 token endpoint; a literal "{tenant}" in it is replaced by TenantID.
	TokenURL string
	// Scope is the OAuth2 scope to request, such as https://api.securitycenter.microsoft.com/.default.
	Scope string
	// TenantID is the Entra tenant id (GUID or domain) that goes into TokenURL.
	TenantID string
	// ClientID is the application (client) id of the app registration.
	ClientID string
	// ClientSecret is the app registration's client secret. It is sent only in the token request body.
	ClientSecret string
	// Auth is the authentication mode: AuthSecret (the default), AuthCertificate, AuthWorkloadIdentity or
	// AuthManagedIdentity.
	Auth string
	// ClientSecretFile holds the client secret; it is read at every token request, so a rotated secret is
	// used without a restart. It takes the place of ClientSecret.
	ClientSecretFile string
	// ClientCertFile is the certificate with its private key, PEM or PKCS#12 (PFX), for AuthCertificate;
	// ClientCertPasswordFile holds the password of an encrypted PFX. Both are read at every token request.
	ClientCertFile, ClientCertPasswordFile string
	// FederatedTokenFile is the federated token (AZURE_FEDERATED_TOKEN_FILE) for AuthWorkloadIdentity,
	// read at every token request.
	FederatedTokenFile string
	// Tenant is the tenant's name inside lr-relay; it is the Tenant of the limiter keys and labels metrics and
	// logs. Required.
	Tenant string
	// UserAgent is sent with every request; Microsoft asks partners for MdePartner-{Company}-{Product}/{Version}.
	// Required.
	UserAgent string
	// MaxThrottleRetries is how many 429s one call absorbs (pausing the tenant each time) before it returns
	// the throttling error (LR_MDE_MAX_THROTTLE_RETRIES); zero means none. It must not be negative.
	MaxThrottleRetries int
	// RequestTimeout bounds each HTTP request, token requests included, reading the body included
	// (LR_MDE_REQUEST_TIMEOUT). Required: it must be positive.
	RequestTimeout time.Duration
}

// Limiter is what the client needs from the rate limiter (quota.Local and quota.Shared). Wait blocks until key
// may make one call (and honours any pause); Pause stops every call on key until the given time, because a 429
// means the tenant's quota is spent, not just this call's. The client never sleeps by itself: after a 429 it
// calls Pause and then Wait again, so it is Wait that must block until the pause is over.
type Limiter interface {
	Wait(ctx context.Context, key quota.Key) error
	Pause(key quota.Key, until time.Time)
}

// Limiters holds one limiter per throttled operation, because each has its own windows. One limiter may serve
// many tenants: the key (tenant, endpoint) selects the budget.
type Limiters struct {
	// Links budgets GetLiveResponseResultDownloadLink (LR_RATE_LIMITS).
	Links Limiter
	// Actions budgets GET machineactions/{id} (LR_ACTION_RATE_LIMITS).
	Actions Limiter
}

// Option adjusts a Client beyond its Config.
type Option func(*options)

type options struct {
	now    func() time.Time
	reg    prometheus.Registerer
	jitter func() float64
}

// WithClock replaces time.Now, for tests of token expiry and Retry-After dates.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithRegisterer registers the client's metrics (lr_mde_*) with reg. Clients of several tenants may
// share one registerer.
func WithRegisterer(reg prometheus.Registerer) Option { return func(o *options) { o.reg = reg } }

// Client calls the Defender API for one tenant. It is safe for concurrent use.
type Client struct {
	apiURL      string
	tenant      string
	userAgent   string
	maxThrottle int
	timeout     time.Duration
	http        *http.Client
	limiters    Limiters
	log         zerolog.Logger
	now         func() time.Time
	tokens      *tokenCache
	metrics     *metrics
}

// op names a call in errors (Name) and metrics (Label), and the endpoint of its limiter key.
type op struct{ Name, Label, Endpoint string }

var (
	opGetAction = op{Name: "get action", Label: "get_action", Endpoint: quota.EndpointActions}
	opGetLink   = op{Name: "get result link", Label: "get_result_link", Endpoint: quota.EndpointLinks}
)

// New checks cfg, reporting every problem at once, and returns a client. httpClient may be nil for a plain
// client; its own Timeout, if any, applies on top of RequestTimeout. Both limiters are required: calling
// Defender without one would meet 429s instead of avoiding them.
func New(cfg Config, httpClient *http.Client, limiters Limiters, log zerolog.Logger, opts ...Option) (*Client, error) {
	o := options{now: time.Now, jitter: rand.Float64}
	for _, opt := range opts {
		opt(&o)
	}
	var errs []error
	apiURL, err := checkURL("APIURL", cfg.APIURL)
	if err != nil {
		errs = append(errs, err)
	}
	mode := cfg.Auth
	if mode == "" {
		mode = AuthSecret
	}
	// A managed identity gets its token from the hosting environment's endpoint, not from TokenURL.
	tokenURL, tokenURLOK := cfg.TokenURL, false
	if mode != AuthManagedIdentity {
		if strings.Contains(tokenURL, "{tenant}") {
			if strings.TrimSpace(cfg.TenantID) == "" {
				errs = append(errs, errors.New("mde: TenantID is required because TokenURL contains {tenant}"))
			}
			tokenURL = Cloud{TokenURLTemplate: tokenURL}.TokenURL(strings.TrimSpace(cfg.TenantID))
		}
		if tokenURL, err = checkURL("TokenURL", tokenURL); err != nil {
			errs = append(errs, err)
		} else {
			tokenURLOK = true
		}
	}
	if strings.TrimSpace(cfg.Scope) == "" {
		errs = append(errs, errors.New("mde: Scope is required"))
	}
	if mode != AuthManagedIdentity && strings.TrimSpace(cfg.ClientID) == "" {
		errs = append(errs, errors.New("mde: ClientID is required"))
	}
	var authority string
	switch mode {
	case AuthSecret:
		if cfg.ClientSecret == "" && cfg.ClientSecretFile == "" {
			errs = append(errs, errors.New("mde: ClientSecret or ClientSecretFile is required"))
		}
	case AuthCertificate, AuthWorkloadIdentity:
		if mode == AuthCertificate && cfg.ClientCertFile == "" {
			errs = append(errs, errors.New("mde: ClientCertFile is required for certificate authentication"))
		}
		if mode == AuthWorkloadIdentity && cfg.FederatedTokenFile == "" {
			errs = append(errs, errors.New("mde: FederatedTokenFile is required for workload identity"))
		}
		if tokenURLOK {
			if authority, err = authorityHost(tokenURL, strings.TrimSpace(cfg.TenantID)); err != nil {
				errs = append(errs, fmt.Errorf("mde: %w", err))
			}
		}
	case AuthManagedIdentity:
	default:
		errs = append(errs, fmt.Errorf("mde: unknown Auth %q: valid modes are %s", cfg.Auth, strings.Join(AuthModes(), ", ")))
	}
	// The defaults of these live in internal/config (envconfig tags); New only takes them as given.
	if strings.TrimSpace(cfg.Tenant) == "" {
		errs = append(errs, errors.New("mde: Tenant is required"))
	}
	if strings.TrimSpace(cfg.UserAgent) == "" {
		errs = append(errs, errors.New("mde: UserAgent is required"))
	}
	if cfg.MaxThrottleRetries < 0 {
		errs = append(errs, fmt.Errorf("mde: MaxThrottleRetries must not be negative, got %d", cfg.MaxThrottleRetries))
	}
	if cfg.RequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("mde: RequestTimeout is required and must be positive, got %s", cfg.RequestTimeout))
	}
	if limiters.Links == nil || limiters.Actions == nil {
		errs = append(errs, errors.New("mde: a Limiter is required for links and for actions"))
	}
	if o.now == nil {
		errs = append(errs, errors.New("mde: WithClock needs a non-nil function"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	c := &Client{
		apiURL:      apiURL,
		tenant:      strings.TrimSpace(cfg.Tenant),
		userAgent:   strings.TrimSpace(cfg.UserAgent),
		maxThrottle: cfg.MaxThrottleRetries,
		timeout:     cfg.RequestTimeout,
		http:        httpClient,
		limiters:    limiters,
		now:         o.now,
	}
	if c.http == nil {
		c.http = &http.Client{}
	}
	c.log = log.With().Str("component", "mde").Str("tenant", c.tenant).Logger()
	if c.metrics, err = newMetrics(o.reg, c.tenant); err != nil {
		return nil, fmt.Errorf("mde: registering metrics: %w", err)
	}
	var cred credential
	if mode == AuthSecret {
		cred = &secretCredential{
			conf: clientcredentials.Config{
				ClientID: strings.TrimSpace(cfg.ClientID),
				TokenURL: tokenURL,
				Scopes:   []string{strings.TrimSpace(cfg.Scope)},
				// In the form body, as Entra expects; also avoids x/oauth2's auto-detection sending two requests.
				AuthStyle: oauth2.AuthStyleInParams,
			},
			secret: cfg.ClientSecret, file: cfg.ClientSecretFile, http: c.http, timeout: c.timeout,
		}
	} else {
		cred = &azCredential{
			mode: mode, tenantID: strings.TrimSpace(cfg.TenantID), clientID: strings.TrimSpace(cfg.ClientID),
			authority: authority, scope: strings.TrimSpace(cfg.Scope),
			certFile: cfg.ClientCertFile, passFile: cfg.ClientCertPasswordFile, tokenFile: cfg.FederatedTokenFile,
			http: c.http, timeout: c.timeout,
		}
	}
	c.tokens = &tokenCache{
		cred:    cred,
		now:     c.now,
		jitter:  o.jitter,
		timeout: c.timeout,
		log:     c.log,
		metrics: c.metrics,
		tenant:  c.tenant,
	}
	c.metrics.authOK(false)
	return c, nil
}

// checkURL accepts an absolute https URL (http only for loopback hosts, so that a token is never sent in
// clear text to a real server) and returns it without a trailing slash.
func checkURL(name, raw string) (string, error) {
	raw = strings.TrimRight(strings.TrimSpace(raw), "/")
	if raw == "" {
		return "", fmt.Errorf("mde: %s is required", name)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("mde: %s %q is not an absolute URL", name, raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return "", fmt.Errorf("mde: %s %q must use https", name, raw)
		}
	default:
		return "", fmt.Errorf("mde: %s %q must use https", name, raw)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("mde: %s %q must not have a query or fragment", name, raw)
	}
	return raw, nil
}

// GetAction reads the machine action id (GET {api}/api/machineactions/{id}). HasCommands is set when the
// answer had a "commands" key at all. Errors: ErrInvalidArgument, *APIError (404 for an unknown or invisible
// action), *TokenError, ErrBadResponse, or a transport error; see IsRetryable.
func (c *Client) GetAction(ctx context.Context, id string) (*action.MachineAction, error) {
	if !action.IsGUID(id) {
		return nil, fmt.Errorf("%w: action id %q is not a GUID", ErrInvalidArgument, shorten(id, 64))
	}
	body, err := c.do(ctx, opGetAction, c.apiURL+"/api/machineactions/"+url.PathEscape(id), maxActionBytes)
	if err != nil {
		return nil, err
	}
	var ma action.MachineAction
	if err := json.Unmarshal(body, &ma); err != nil {
		return nil, fmt.Errorf("%w: %s: decoding action: %v", ErrBadResponse, opGetAction.Name, err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(body, &keys); err != nil {
		return nil, fmt.Errorf("%w: %s: decoding action: %v", ErrBadResponse, opGetAction.Name, err)
	}
	_, ma.HasCommands = keys["commands"]
	if !strings.EqualFold(ma.ID, id) {
		return nil, fmt.Errorf("%w: %s: asked for action %s, got id %q", ErrBadResponse, opGetAction.Name, id, shorten(ma.ID, 64))
	}
	return &ma, nil
}

// GetResultLink asks for the download link of command index of action id
// (GET {api}/api/machineactions/{id}/GetLiveResponseResultDownloadLink(index=N)) and returns it. The link is
// a SAS URL whose sig is a secret and which expires after 30 minutes: log only its host and path. Errors are
// as for GetAction.
func (c *Client) GetResultLink(ctx context.Context, id string, index int) (string, error) {
	if !action.IsGUID(id) {
		return "", fmt.Errorf("%w: action id %q is not a GUID", ErrInvalidArgument, shorten(id, 64))
	}
	if index < 0 {
		return "", fmt.Errorf("%w: command index %d is negative", ErrInvalidArgument, index)
	}
	u := c.apiURL + "/api/machineactions/" + url.PathEscape(id) +
		"/GetLiveResponseResultDownloadLink(index=" + strconv.Itoa(index) + ")"
	body, err := c.do(ctx, opGetLink, u, maxLinkBytes)
	if err != nil {
		return "", err
	}
	var v struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return "", fmt.Errorf("%w: %s: decoding link: %v", ErrBadResponse, opGetLink.Name, err)
	}
	// The link itself never goes into an error: it carries the SAS signature.
	link, err := url.Parse(v.Value)
	if v.Value == "" || err != nil || !link.IsAbs() || link.Host == "" {
		return "", fmt.Errorf("%w: %s: answer has no usable link in \"value\"", ErrBadResponse, opGetLink.Name)
	}
	return v.Value, nil
}

// do performs one API call: wait for the limiter, attach a token, send, and handle 401 (one refresh) and 429
// (pause the tenant, retry up to maxThrottle times). It returns the body of a 2xx answer.
func (c *Client) do(ctx context.Context, o op, rawURL string, limit int64) ([]byte, error) {
	key := quota.Key{Tenant: c.tenant, Endpoint: o.Endpoint}
	limiter := c.limiters.Actions
	if o.Endpoint == quota.EndpointLinks {
		limiter = c.limiters.Links
	}
	throttled, refreshed := 0, false
	for {
		// The token comes first: a token request between the grant and the call would delay the call's
		// arrival past what the limiter accounted for. After a long wait the cached token is re-checked.
		if _, err := c.tokens.get(ctx); err != nil {
			return nil, err
		}
		if err := limiter.Wait(ctx, key); err != nil {
			err = fmt.Errorf("mde: %s: waiting for rate limiter: %w", o.Name, err)
			if throttled > 0 {
				// The wait after a 429 was cut short (quota.WithMaxWait): the caller sets the call aside
				// until the pause ends and counts the 429 itself (see ThrottledWait).
				return nil, &throttledWait{err: err}
			}
			return nil, err
		}
		tok, err := c.tokens.get(ctx)
		if err != nil {
			return nil, err
		}
		status, header, body, err := c.send(ctx, o, rawURL, tok, limit)
		if err != nil {
			return nil, err
		}
		if status >= 200 && status <= 299 {
			return body, nil
		}
		apiErr := c.apiError(o, status, header, body, tok)
		switch status {
		case http.StatusUnauthorized:
			if !refreshed {
				refreshed = true
				c.tokens.invalidate(tok)
				c.log.Info().Str("op", o.Label).Str("code", apiErr.Code).Str("target", apiErr.Target).
					Msg("mde api refused the token; retrying once with a fresh one")
				continue
			}
		case http.StatusTooManyRequests:
			until := c.now().Add(apiErr.RetryAfter)
			limiter.Pause(key, until)
			retry := throttled < c.maxThrottle
			c.log.Warn().Str("op", o.Label).Stringer("key", key).Dur("retry_after", apiErr.RetryAfter).
				Time("paused_until", until).Int("throttled", throttled+1).Bool("retrying", retry).
				Str("target", apiErr.Target).Msg("mde api throttled the tenant; pausing its calls")
			if retry {
				throttled++
				continue
			}
		}
		return nil, apiErr
	}
}

// throttledWait is a call's wait for its budget cut short right after the API answered 429. Its
// AfterThrottle tells a caller that sets such calls aside (the relay, under quota.WithMaxWait) that the 429
// counts toward LR_MDE_MAX_THROTTLE_RETRIES across its attempts, since this call could not count it.
type throttledWait struct{ err error }

func (e *throttledWait) Error() string       { return e.err.Error() }
func (e *throttledWait) Unwrap() error       { return e.err }
func (e *throttledWait) AfterThrottle() bool { return true }

// send makes one HTTP request under the per-request timeout and reads at most limit bytes of a 2xx body
// (maxErrorBytes of any other).
func (c *Client) send(ctx context.Context, o op, rawURL, tok string, limit int64) (int, http.Header, []byte, error) {
	reqCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, rawURL, nil)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("mde: %s: building request: %w", o.Name, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.metrics.request(o.Label, "transport_error", -1)
		return 0, nil, nil, c.transportError(ctx, reqCtx, o, err)
	}
	defer resp.Body.Close()
	ok := resp.StatusCode >= 200 && resp.StatusCode <= 299
	if !ok {
		limit = maxErrorBytes
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		c.metrics.request(o.Label, "transport_error", -1)
		return 0, nil, nil, c.transportError(ctx, reqCtx, o, fmt.Errorf("reading body: %w", err))
	}
	c.metrics.request(o.Label, resultLabel(resp.StatusCode), time.Since(start).Seconds())
	if int64(len(body)) > limit {
		if ok {
			return 0, nil, nil, fmt.Errorf("%w: %s: body larger than %d bytes", ErrBadResponse, o.Name, limit)
		}
		body = body[:limit]
	}
	return resp.StatusCode, resp.Header, body, nil
}

func resultLabel(status int) string {
	switch {
	case status >= 200 && status <= 299:
		return "ok"
	case status == http.StatusTooManyRequests:
		return "throttled"
	case status == http.StatusUnauthorized:
		return "unauthorized"
	case status >= 500:
		return "server_error"
	}
	return "client_error"
}

// transportError marks the client's own timeout (the caller's context still alive) as such, so that
// IsRetryable can tell it from the caller giving up.
func (c *Client) transportError(ctx, reqCtx context.Context, o op, err error) error {
	if ctx.Err() == nil && (reqCtx.Err() != nil || isTimeout(err)) {
		return &timeoutError{op: o.Name, timeout: c.timeout, err: err}
	}
	return fmt.Errorf("mde: %s: %w", o.Name, err)
}

// apiError builds the *APIError for a non-2xx answer from the documented JSON body, or from a sanitised
// snippet when the body is something else (a proxy's HTML page, an empty body).
func (c *Client) apiError(o op, status int, header http.Header, body []byte, tok string) *APIError {
	e := &APIError{Op: o.Name, Status: status}
	var eb struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Target  string `json:"target"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &eb); err == nil && eb.Error != nil {
		e.Code = safeToken(redact(eb.Error.Code, c.scrub(tok)...), 64)
		e.Message = c.sanitise(eb.Error.Message, tok, 300)
		e.Target = safeToken(redact(eb.Error.Target, c.scrub(tok)...), 100)
	} else {
		e.Message = c.sanitise(string(body), tok, 200)
	}
	if status == http.StatusTooManyRequests {
		e.RetryAfter = parseRetryAfter(header.Get("Retry-After"), c.now())
	}
	return e
}

// sanitise makes server text safe for an error string: the secret and the token are removed in case the
// server echoed them, control characters and invalid UTF-8 go, whitespace collapses and the length is capped.
func (c *Client) sanitise(s, tok string, n int) string {
	s = strings.ToValidUTF8(redact(s, c.scrub(tok)...), " ")
	s = strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	return shorten(strings.Join(strings.Fields(s), " "), n)
}

// scrub lists the values that must never reach an error: the credential's secrets and the token.
func (c *Client) scrub(tok string) []string {
	return append(c.tokens.cred.secrets(), tok)
}

// shorten caps s at n runes, marking the cut.
func shorten(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "..."
}

// parseRetryAfter reads Retry-After as seconds or as an HTTP date. A missing or unreadable header means the
// default; the result is kept between one second and one hour.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	d := DefaultRetryAfter
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		d = time.Duration(min(max(secs, 0), int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, time.Second), maxRetryAfter)
}
