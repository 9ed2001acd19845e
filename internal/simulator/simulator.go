// Package simulator is an in-process imitation of the Microsoft Defender for Endpoint API and of the Azure
// blob storage that serves live response results.
//
// It exists so that `lr-relay demo` runs with nothing installed, so that users can try their playbooks with
// `lr-relay simulate`, and so that every integration and fault test of the relay talks to something that
// behaves like the real service (see docs/mde-api.md): an Entra ID style token endpoint, the machine action
// and GetLiveResponseResultDownloadLink endpoints with their exact sliding-window throttle, SAS-signed blob
// links that expire, and injectable faults (5xx bursts, resets, hangs, slow downloads, early expiry, token
// failures and 429 storms). One http.Handler serves all of it, so a single httptest.Server is enough.
//
// A Simulator is safe for concurrent use. Fault decisions come from one seeded RNG, so a sequential test
// with the same seed sees the same faults; everything secret-like (tokens, link names, request ids) comes
// from crypto/rand and does not disturb that sequence.
package simulator

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
)

// Defaults used when the corresponding Config field is empty.
const (
	DefaultTenantID     = "demo-tenant"
	DefaultClientID     = "demo-client"
	DefaultClientSecret = "demo-secret"
	DefaultLimits       = "100/1m,1500/1h"
	DefaultLinkTTL      = 30 * time.Minute
	DefaultTokenTTL     = time.Hour
	// DefaultIdentityHeader is the X-IDENTITY-HEADER value the managed identity endpoint accepts by default.
	DefaultIdentityHeader = "sim-identity-header"
)

// Config configures a Simulator. The zero value is usable: it accepts the demo credentials and throttles like
// the real API.
type Config struct {
	// TenantID, ClientID and ClientSecret are the credentials the token endpoint accepts. They default to
	// "demo-tenant", "demo-client" and "demo-secret" so that the demo works without any setup.
	TenantID, ClientID, ClientSecret string
	// Certificates and Federated are the first tenant's certificate and federated credentials (see
	// Credentials).
	Certificates []*x509.Certificate
	Federated    []FederatedCredential
	// ExtraTenants are further tenants with their own credentials, so that per-tenant quotas and routing
	// can be exercised against one simulator.
	ExtraTenants []Credentials
	// LinkLimits and ActionLimits are the throttle windows of the download-link and machine-action
	// endpoints, in the "100/1m,1500/1h" syntax (see ParseWindows); both default to the real API's limits.
	LinkLimits, ActionLimits string
	// LinkTTL is how long a download link stays valid (default 30m, as in the real API).
	LinkTTL time.Duration
	// TokenTTL is the lifetime of issued bearer tokens (default 1h, as Entra ID).
	TokenTTL time.Duration
	// Issuers are the identity providers trusted for federated credentials (workload identity).
	Issuers []Issuer
	// ManagedIdentities are served by the managed identity endpoint GET /msi/token, which answers like App
	// Service's (IDENTITY_ENDPOINT, with IdentityHeader in X-IDENTITY-HEADER).
	ManagedIdentities []ManagedIdentity
	// IdentityHeader is the secret the managed identity endpoint expects; it defaults to
	// DefaultIdentityHeader.
	IdentityHeader string
	// Faults are the initial fault probabilities; they can be changed later with SetFaults.
	Faults Faults
	// Seed seeds the fault RNG so that tests are reproducible.
	Seed int64
	// Log receives one debug event per decision; it never carries tokens, secrets or SAS signatures.
	Log zerolog.Logger
	// Clock is the token endpoint's time, for tests of expired assertions; nil means time.Now.
	Clock func() time.Time
}

// Credentials are one tenant's app registration: what its token endpoint accepts. An application may have a
// secret, certificates and federated credentials at once, as in Entra ID; at least one is required.
type Credentials struct {
	TenantID, ClientID, ClientSecret string
	// Certificates are the public certificates uploaded to the app registration. A client_assertion JWT
	// must name one of them (x5t or x5t#S256) and be signed with its key.
	Certificates []*x509.Certificate
	// Federated are the app's federated identity credentials (workload identity): a client_assertion from
	// a trusted issuer (Config.Issuers) whose iss, sub and aud match one of them is accepted.
	Federated []FederatedCredential
}

// FederatedCredential is one federated identity credential of an app registration.
type FederatedCredential struct {
	// Issuer and Subject must equal the federated token's iss and sub claims.
	Issuer, Subject string
	// Audience must be one of the token's aud values; empty means api://AzureADTokenExchange.
	Audience string
}

// Issuer is an external identity provider (a Kubernetes cluster's service account issuer) whose tokens the
// simulated Entra ID trusts. Entra fetches the issuer's keys from its OIDC discovery document; the
// simulator is given them directly.
type Issuer struct {
	URL  string
	Keys []crypto.PublicKey
}

// ManagedIdentity is a managed identity the simulated App Service identity endpoint (/msi/token) hands
// tokens out for.
type ManagedIdentity struct {
	// ClientID is the identity's client id; a request without client_id gets the system-assigned identity,
	// which is the one with SystemAssigned set.
	ClientID       string
	TenantID       string
	SystemAssigned bool
}

// Action is a machine action the simulator knows, with the result content of its commands.
type Action struct {
	// MachineAction is what GET /api/machineactions/{id} returns (tenantId is not part of the API answer).
	// When its TenantID is set, only tokens of that tenant can see it; otherwise every tenant can.
	MachineAction action.MachineAction
	// Forbidden makes both endpoints answer 403 Forbidden for this action, as for an app lacking permission.
	Forbidden bool
	// Results maps a command index to the content its download link serves.
	Results map[int]Content
}

// Content is the stored result of one command.
//
// For a RunScript command, Data is the whole JSON document, served byte for byte. For a GetFile command,
// Data is the collected file, served gzip-compressed. When Data is nil the content is generated while it
// streams, so that very large results cost no memory: Size bytes of GeneratedReader(Size, Seed), which for
// GetFile is the file itself and for RunScript is the script_output of a generated JSON document
// (after a transcript banner line).
type Content struct {
	Data []byte
	Size int64
	Seed int64
	// FileName is the GetFile name sent in Content-Disposition (plus ".gz"); empty means the base name of
	// the command's Path parameter.
	FileName string
}

// Endpoint names one throttled API endpoint; each has its own counters per tenant.
type Endpoint string

// The throttled endpoints.
const (
	EndpointActions Endpoint = "actions"
	EndpointLinks   Endpoint = "links"
)

// Stats are counters of what the simulator saw and did, for tests and for the demo's summary.
type Stats struct {
	// TokenCalls counts every request to the token endpoint; TokensIssued the successful ones.
	TokenCalls, TokensIssued int
	// MetadataCalls counts requests for Entra's metadata documents (instance discovery and
	// openid-configuration); IdentityCalls those to the managed identity endpoint.
	MetadataCalls, IdentityCalls int
	// AssertionsRejected counts client assertions refused (bad signature, unknown certificate, wrong
	// audience, expired, unknown federated identity).
	AssertionsRejected int
	// ActionCalls and LinkCalls count every request to those endpoints, whatever the answer.
	ActionCalls, LinkCalls int
	// Unauthorized counts 401 answers (missing, unknown or expired token).
	Unauthorized int
	// Throttled counts 429 answers of any cause (window full, during Retry-After, storm).
	Throttled int
	// CallsDuringRetryAfter counts calls that arrived while a Retry-After was still in force.
	CallsDuringRetryAfter int
	// BlobDownloads counts blob requests that started sending content.
	BlobDownloads int
	// BlobAuthHeaders counts blob requests that carried an Authorization header: a relay bug, since the
	// SAS link must be fetched without the API token.
	BlobAuthHeaders int
	// Expired403 counts blob requests refused because the link had expired; BadSignature403 those refused
	// because the signature or its fields were wrong.
	Expired403, BadSignature403 int
	// FaultsInjected counts injected faults by name (see the Fault* constants).
	FaultsInjected map[string]int
}

// Simulator is the simulated API. Create it with New.
type Simulator struct {
	now      func() time.Time
	log      zerolog.Logger
	linkTTL  time.Duration
	tokenTTL time.Duration
	creds    map[string]Credentials
	issuers  map[string]Issuer
	mis      []ManagedIdentity
	idHeader string
	windows  map[Endpoint][]Window
	key      []byte
	mux      *http.ServeMux
	done     chan struct{}
	closeMu  sync.Once

	mu        sync.Mutex
	rng       *mrand.Rand
	faults    Faults
	burstLeft int
	tokens    map[string]issuedToken
	actions   map[string]Action
	throttles map[throttleKey]*slidingLog
	stats     Stats
	// perTenant holds the counters of the tenants that made requests, keyed by lowercase tenant id.
	perTenant map[string]*TenantCounts
	// tokenLog is every token request of a known tenant, newest tokenLogCap at most.
	tokenLog []TokenRequest
	// tokenExpiresAt, when set, is the moment every token issued before tokenSharedUntil expires
	// (SetTokenExpiry).
	tokenExpiresAt, tokenSharedUntil time.Time
	// nextPrune is the size of tokens at which expired tokens are next forgotten.
	nextPrune int
}

type issuedToken struct {
	tenant  string
	expires time.Time
}

type throttleKey struct {
	tenant string
	ep     Endpoint
}

// New validates cfg, fills in defaults and returns a ready simulator. It reports every configuration
// problem at once.
func New(cfg Config) (*Simulator, error) {
	if cfg.TenantID == "" {
		cfg.TenantID = DefaultTenantID
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultClientID
	}
	if cfg.ClientSecret == "" {
		cfg.ClientSecret = DefaultClientSecret
	}
	if cfg.LinkLimits == "" {
		cfg.LinkLimits = DefaultLimits
	}
	if cfg.ActionLimits == "" {
		cfg.ActionLimits = DefaultLimits
	}
	if cfg.LinkTTL == 0 {
		cfg.LinkTTL = DefaultLinkTTL
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.IdentityHeader == "" {
		cfg.IdentityHeader = DefaultIdentityHeader
	}
	var problems []error
	linkWin, err := ParseWindows(cfg.LinkLimits)
	if err != nil {
		problems = append(problems, fmt.Errorf("link limits: %w", err))
	}
	actionWin, err := ParseWindows(cfg.ActionLimits)
	if err != nil {
		problems = append(problems, fmt.Errorf("action limits: %w", err))
	}
	if cfg.LinkTTL < 0 {
		problems = append(problems, fmt.Errorf("link TTL %s must not be negative", cfg.LinkTTL))
	}
	if cfg.TokenTTL < 0 {
		problems = append(problems, fmt.Errorf("token TTL %s must not be negative", cfg.TokenTTL))
	}
	if err := cfg.Faults.Validate(); err != nil {
		problems = append(problems, fmt.Errorf("faults: %w", err))
	}
	creds := map[string]Credentials{}
	first := Credentials{TenantID: cfg.TenantID, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
		Certificates: cfg.Certificates, Federated: cfg.Federated}
	for _, c := range append([]Credentials{first}, cfg.ExtraTenants...) {
		if c.TenantID == "" || c.ClientID == "" || (c.ClientSecret == "" && len(c.Certificates) == 0 && len(c.Federated) == 0) {
			problems = append(problems, fmt.Errorf("tenant %q: tenant id, client id and a secret, certificate or federated credential are required", c.TenantID))
			continue
		}
		if _, dup := creds[strings.ToLower(c.TenantID)]; dup {
			problems = append(problems, fmt.Errorf("tenant %q is configured twice", c.TenantID))
			continue
		}
		creds[strings.ToLower(c.TenantID)] = c
	}
	issuers := map[string]Issuer{}
	for _, is := range cfg.Issuers {
		if is.URL == "" || len(is.Keys) == 0 {
			problems = append(problems, fmt.Errorf("issuer %q: a URL and at least one key are required", is.URL))
			continue
		}
		issuers[is.URL] = is
	}
	for _, mi := range cfg.ManagedIdentities {
		if mi.TenantID == "" || (mi.ClientID == "" && !mi.SystemAssigned) {
			problems = append(problems, fmt.Errorf("managed identity %q: a tenant id and a client id (or SystemAssigned) are required", mi.ClientID))
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("simulator: invalid config: %w", errors.Join(problems...))
	}
	s := &Simulator{
		now:       cfg.Clock,
		issuers:   issuers,
		mis:       append([]ManagedIdentity(nil), cfg.ManagedIdentities...),
		idHeader:  cfg.IdentityHeader,
		log:       cfg.Log.With().Str("component", "simulator").Logger(),
		linkTTL:   cfg.LinkTTL,
		tokenTTL:  cfg.TokenTTL,
		creds:     creds,
		windows:   map[Endpoint][]Window{EndpointLinks: linkWin, EndpointActions: actionWin},
		key:       make([]byte, 32),
		done:      make(chan struct{}),
		rng:       mrand.New(mrand.NewPCG(uint64(cfg.Seed), 0x6c722d72656c6179)),
		faults:    cfg.Faults,
		tokens:    map[string]issuedToken{},
		actions:   map[string]Action{},
		throttles: map[throttleKey]*slidingLog{},
		stats:     Stats{FaultsInjected: map[string]int{}},
		perTenant: map[string]*TenantCounts{},
	}
	// The signing key only has to be unguessable by the client; crypto/rand keeps it out of the seeded
	// fault sequence.
	_, _ = rand.Read(s.key)
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", s.handleToken)
	s.mux.HandleFunc("GET /common/discovery/instance", s.handleInstanceDiscovery)
	s.mux.HandleFunc("GET /msi/token", s.handleManagedIdentity)
	s.mux.HandleFunc("GET /api/machineactions/{id}", s.handleAction)
	s.mux.HandleFunc("GET /api/machineactions/{id}/{fn}", s.handleLink)
	s.mux.HandleFunc("GET /blob/{id}/{index}/{name}", s.handleBlob)
	s.mux.HandleFunc("/", s.handleUnknown)
	return s, nil
}

// Handler returns the handler that serves the token endpoint, the API and the blobs.
func (s *Simulator) Handler() http.Handler { return s.mux }

// Serve serves the simulator on ln until ctx ends, then shuts down gracefully: requests in flight (hung
// requests included, since their contexts derive from ctx) are given up to five seconds.
func (s *Simulator) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          log.New(s.log, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("simulator: serve: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	<-errc
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("simulator: shutdown: %w", err)
	}
	s.log.Debug().Msg("simulator stopped")
	return nil
}

// Close releases every request that a timeout fault holds, for callers that serve Handler themselves (an
// httptest.Server waits for its handlers on Close). It is idempotent; the simulator keeps answering, but
// later timeout faults no longer hang.
func (s *Simulator) Close() {
	s.closeMu.Do(func() { close(s.done) })
}

// AddAction adds a, or replaces the action with the same id (to move an action from Created to Completed,
// for example). The simulator keeps its own copy.
func (s *Simulator) AddAction(a Action) {
	ma := a.MachineAction
	ma.Commands = append([]action.Command(nil), ma.Commands...)
	for i := range ma.Commands {
		c := &ma.Commands[i]
		c.Errors = append([]string(nil), c.Errors...)
		c.Command.Params = append([]action.Param(nil), c.Command.Params...)
	}
	results := make(map[int]Content, len(a.Results))
	for k, v := range a.Results {
		results[k] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.actions[strings.ToLower(ma.ID)] = Action{MachineAction: ma, Forbidden: a.Forbidden, Results: results}
}

// SetFaults replaces the fault settings at run time. A 5xx burst in progress runs to its end, since a burst
// is "the next k calls" whatever happens meanwhile.
func (s *Simulator) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return fmt.Errorf("simulator: set faults: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
	return nil
}

// Stats returns a snapshot of the counters.
func (s *Simulator) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.FaultsInjected = make(map[string]int, len(s.stats.FaultsInjected))
	for k, v := range s.stats.FaultsInjected {
		st.FaultsInjected[k] = v
	}
	return st
}

// Admitted returns the arrival times of the calls that the throttle admitted for the tenant and endpoint,
// oldest first (the newest 65536 at most). With MaxInWindow a test can prove that a client never exceeded
// the quota.
func (s *Simulator) Admitted(tenantID string, ep Endpoint) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.throttles[throttleKey{strings.ToLower(tenantID), ep}]
	if l == nil {
		return nil
	}
	return append([]time.Time(nil), l.history...)
}
