// Package app wires lr-relay together: NATS connection, streams, tenants, limiter, Defender clients,
// downloader, object store, relay and the operational HTTP endpoints. It never touches OS signals: the caller
// owns the context.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/command"
	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/download"
	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/internal/quota"
	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/tenant"
	"github.com/lr-relay/lr-relay/schemas"
)

// errNATSClosed ends a run whose NATS connection closed for good (the server kept refusing lr-relay).
var errNATSClosed = errors.New("NATS connection closed for good")

// Version is set at build time.
var Version = "dev"

// Options configures an App.
type Options struct {
	Config   config.Config
	Logger   zerolog.Logger
	Registry *prometheus.Registry
	// NATSOptions are added to the connection options (the demo connects in-process with them).
	NATSOptions []nats.Option
	// OnResult and OnDeadLetter are called after each PubAck (the demo prints with them).
	OnResult     func(*result.Event)
	OnDeadLetter func(*relay.DeadLetter)
	// Listener, when set, is used for the HTTP endpoints instead of listening on Config.HTTPAddr.
	Listener net.Listener
}

// App is one lr-relay process.
type App struct {
	o   Options
	cfg config.Config
	log zerolog.Logger

	mu       sync.Mutex
	nc       *nats.Conn
	relay    *relay.Relay
	degraded []func() bool
	auth     []*mde.Client // every tenant's client, for the per-tenant auth detail of Ready
	authStop func()        // stops the auth checks and the background token refreshes of the clients in auth
	// violation is the first NATS permissions violation seen (readiness stays false once there is one);
	// violations holds every distinct one, so that each is logged once.
	violation  string
	violations map[string]struct{}

	ops      *opsMetrics
	limiters map[string]budget // by windows; built by tenants (one goroutine), see limiterFor
}

// New checks the configuration; it does not touch the network.
func New(o Options) (*App, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Registry == nil {
		o.Registry = NewRegistry()
	}
	a := &App{o: o, cfg: o.Config, log: o.Logger}
	a.ops = registerOpsMetrics(o.Registry, func() bool { ok, _ := a.Ready(); return ok })
	return a, nil
}

// Run connects, provisions, and relays until ctx ends; then it shuts down in order: stop intake, finish or
// hand back in-flight work within LR_SHUTDOWN_TIMEOUT, drain the NATS connection, stop the HTTP server.
// Every resource is released in reverse order of creation.
func (a *App) Run(ctx context.Context) (err error) {
	var cleanup []func()
	defer func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}()

	// The HTTP endpoints come up first, so /-/healthy answers while the rest starts.
	if srv, err := a.serveHTTP(); err != nil {
		return err
	} else if srv != nil {
		cleanup = append(cleanup, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		})
	}

	// A connection that closes for good ends the run, with the reason.
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	defer func() {
		if cause := context.Cause(ctx); err == nil || errors.Is(err, context.Canceled) {
			if errors.Is(cause, errNATSClosed) {
				err = cause
			}
		}
	}()
	nc, err := a.connect(func(err error) { stop(fmt.Errorf("%w: %w", errNATSClosed, err)) })
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.nc = nc
	a.mu.Unlock()
	cleanup = append(cleanup, func() { a.drain(nc) })

	js, err := newJetStream(nc, a.cfg)
	if err != nil {
		return err
	}
	streams := a.streamConfig()
	if err := a.untilJetStream(ctx, "provisioning streams", func() error {
		return relay.EnsureStreams(ctx, js, streams)
	}); err != nil {
		return err
	}
	if max := nc.MaxPayload(); int64(a.cfg.InlineMaxBytes)*4+64<<10 > max {
		return fmt.Errorf("LR_INLINE_MAX_BYTES=%d is too large for the server's max payload of %d bytes: keep it under %d",
			a.cfg.InlineMaxBytes, max, (max-64<<10)/4)
	}

	validator, err := schemas.New()
	if err != nil {
		return fmt.Errorf("loading schemas: %w", err)
	}
	var (
		router  relay.Router
		tenants []string
	)
	if err := a.untilJetStream(ctx, "binding the quota buckets", func() (err error) {
		a.mu.Lock()
		a.degraded = nil // a failed attempt may have left the limiters it had built
		a.mu.Unlock()
		a.limiters = nil
		router, tenants, err = a.tenants(ctx, js)
		return err
	}); err != nil {
		return err
	}
	cleanup = append(cleanup, func() {
		a.mu.Lock()
		stop := a.authStop
		a.mu.Unlock()
		if stop != nil {
			stop()
		}
	})
	tenantWorkers := a.cfg.TenantMaxWorkers
	if tenantWorkers == 0 && len(tenants) > 1 {
		tenantWorkers = max(1, (a.cfg.Workers+1)/2)
	}
	// Deliveries that wait on purpose (the tenant gate, rejected credentials) are recorded here so that they
	// do not count toward LR_MAX_DELIVER.
	var deferrals *relay.Deferrals
	if err := a.untilJetStream(ctx, "binding the deferrals bucket", func() (err error) {
		deferrals, err = relay.EnsureDeferrals(ctx, js, a.cfg.DeferralsBucket, a.cfg.StreamReplicas, a.cfg.Provision)
		return err
	}); err != nil {
		return err
	}
	dl, err := download.New(a.downloadConfig(), a.log.With().Str("component", "download").Logger())
	if err != nil {
		return fmt.Errorf("LR_DOWNLOAD_*: %w", err)
	}
	var store *artifact.Store
	if err := a.untilJetStream(ctx, "binding the object store", func() (err error) {
		store, err = artifact.NewStore(ctx, js, artifact.StoreConfig{
			Bucket: a.cfg.ObjectBucket, TTL: a.cfg.ObjectTTL, MaxBytes: a.cfg.ObjectMaxBytes,
			Replicas: a.cfg.StreamReplicas, Provision: a.cfg.Provision,
		}, a.log.With().Str("component", "artifact").Logger())
		if err != nil {
			return fmt.Errorf("object store %q: %w", a.cfg.ObjectBucket, err)
		}
		return nil
	}); err != nil {
		return err
	}
	janitorDone := make(chan struct{})
	go func() { defer close(janitorDone); a.cleanOrphans(ctx, store) }()
	cleanup = append(cleanup, func() { <-janitorDone })

	proc := command.New(dl, store, a.commandOptions(), a.log.With().Str("component", "command").Logger())
	tenantParked := a.cfg.TenantParked
	if tenantParked == 0 {
		tenantParked = a.cfg.Workers
	}
	r, err := relay.New(relay.Options{
		JS: js, Streams: streams, Workers: a.cfg.Workers, MaxDeliver: a.cfg.MaxDeliver, Backoff: a.cfg.RetryBackoff,
		ShutdownTimeout: a.cfg.ShutdownTimeout, Commands: proc, Router: router, Validator: validator,
		Logger: a.log.With().Str("component", "relay").Logger(), Registerer: a.o.Registry,
		OnResult: a.o.OnResult, OnDeadLetter: a.o.OnDeadLetter,
		TenantWorkers: tenantWorkers, TenantParked: tenantParked, DeferDelay: a.cfg.TenantDeferDelay,
		Deferrals: deferrals, Payloads: store, MaxPayload: int(nc.MaxPayload()),
		MaxEventBytes: a.cfg.MaxEventBytes, MaxCommands: a.cfg.MaxCommands, MaxResultBytesPerEvent: a.cfg.MaxResultBytesPerEvent,
		AuthRetryDelay: a.cfg.TenantAuthRetry, MaxThrottleRetries: a.cfg.MDEMaxThrottleRetries, Version: Version,
		TenantNames: tenants,
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.relay = r
	a.mu.Unlock()
	// Consumer lag and bucket fill for the on-call metrics. The sampler skips its samples until r.Run below has
	// bound (or created) the consumer.
	lagCtx, stopLag := context.WithCancel(ctx)
	lagDone := make(chan struct{})
	go func() {
		defer close(lagDone)
		(&lagSampler{js: js, stream: a.cfg.SourceStream, consumer: a.cfg.Consumer, bucket: store.Bucket(),
			every: lagSampleEvery, now: time.Now, m: a.ops, log: a.log.With().Str("component", "lag").Logger()}).run(lagCtx)
	}()
	cleanup = append(cleanup, func() { stopLag(); <-lagDone })
	a.log.Info().Str("consumer", a.cfg.Consumer).Str("stream", a.cfg.SourceStream).Int("workers", a.cfg.Workers).
		Str("version", Version).Msg("relaying")
	// Run fails only while binding the consumer, before any work started, so it can simply be run again.
	return a.untilJetStream(ctx, "binding the consumer", func() error { return r.Run(ctx) })
}

// downloadConfig is the downloader's configuration: the allow-list and every bound.
func (a *App) downloadConfig() download.Config {
	return download.Config{
		AllowHTTP: a.cfg.DownloadAllowHTTP, AllowedHosts: a.cfg.DownloadAllowedHosts, MaxBytes: a.cfg.DownloadMaxBytes,
		Timeout: a.cfg.DownloadTimeout, IdleTimeout: a.cfg.DownloadIdleTimeout, Concurrency: a.cfg.Workers,
		MinRate: a.cfg.DownloadMinRate, RateWindow: download.MinRateWindow, TotalTimeout: a.cfg.DownloadTotalTimeout,
		ProxyURL: a.cfg.DownloadProxy,
	}
}

// commandOptions are the caps of the work on one command.
func (a *App) commandOptions() command.Options {
	return command.Options{
		InlineMax: a.cfg.InlineMaxBytes, PreviewBytes: a.cfg.PreviewBytes, RawMax: a.cfg.RawMaxBytes,
		GetFileMaxBytes: a.cfg.GetFileMaxBytes, GetFileMaxRatio: a.cfg.GetFileMaxRatio, LinkRetries: a.cfg.LinkRetries,
		Version: Version,
	}
}

// untilJetStream runs a start-up step until it succeeds, fails for a reason that waiting cannot cure, or ctx
// ends. JetStream that does not answer in time or is briefly unavailable (a cluster electing its leaders,
// several replicas provisioning the same R3 streams at once, where the server may leave a create request
// unanswered) pauses the start, as a NATS outage pauses the relay: it never ends the process.
func (a *App) untilJetStream(ctx context.Context, step string, fn func() error) error {
	delay := 500 * time.Millisecond
	for {
		err := fn()
		if err == nil || !jetStreamUnavailable(err) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.log.Warn().Err(err).Str("step", step).Float64("retry_in_seconds", delay.Seconds()).Msg("JetStream did not answer; retrying")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// jetStreamUnavailable reports whether err means JetStream did not answer (timeout, no responders, no
// connection yet) or answered that it is temporarily unavailable (503), rather than refusing the request.
func jetStreamUnavailable(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return false // a server or account without JetStream: a configuration problem
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == 503
	}
	return false
}

func (a *App) streamConfig() relay.StreamConfig {
	return relay.StreamConfig{
		SourceStream: a.cfg.SourceStream, SourceSubject: a.cfg.SourceSubject, Consumer: a.cfg.Consumer,
		ResultStream: a.cfg.ResultStream, ResultSubjectPrefix: a.cfg.ResultSubjectPrefix,
		DeadLetterStream: a.cfg.DeadLetterStream, DeadLetterSubject: a.cfg.DeadLetterSubject,
		Provision: a.cfg.Provision, Replicas: a.cfg.StreamReplicas, ResultDuplicates: a.cfg.ResultDuplicates,
		AckWait: a.cfg.AckWait,
	}
}

// connect dials NATS and keeps reconnecting forever, with jittered backoff: a NATS outage pauses the relay,
// it never ends it. A server that refuses lr-relay (credentials, TLS) is another matter: waiting does not cure
// it, so the first connect fails with the reason. Credentials inside LR_NATS_URL never reach a log line or an
// error.
func (a *App) connect(closed func(error)) (*nats.Conn, error) {
	log := a.log.With().Str("component", "nats").Logger()
	red := newRedactor(a.cfg.NATSURL)
	security, err := natsSecurityOptions(a.cfg, log)
	if err != nil {
		return nil, red.err(err)
	}
	opts := []nats.Option{
		nats.Name("lr-relay " + Version),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil when we closed the connection ourselves
				log.Warn().Err(red.err(err)).Msg("disconnected from NATS; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			a.natsError(log, red.err(err))
		}),
	}
	opts = append(opts, security...)
	opts = append(opts, a.o.NATSOptions...)
	servers := redactNATSURLs(a.cfg.NATSURL)
	log.Info().Str("servers", servers).Msg("connecting to NATS")

	// One plain attempt first, to tell a refusal from an outage.
	nc, err := nats.Connect(a.cfg.NATSURL, append(opts, nats.RetryOnFailedConnect(false))...)
	switch {
	case err == nil:
	case natsRefused(err):
		hint := ""
		if (errors.Is(err, nats.ErrTLS) || tlsAlert(err)) && a.cfg.NATSTLSCertFile == "" {
			hint = " (a server that requires mutual TLS refuses a client without a certificate: set LR_NATS_TLS_CERT_FILE and LR_NATS_TLS_KEY_FILE)"
		}
		return nil, fmt.Errorf("NATS at %s (LR_NATS_URL) refused lr-relay; check the LR_NATS_TLS_* and authentication settings: %w%s",
			servers, red.err(err), hint)
	default:
		log.Warn().Err(red.err(err)).Str("servers", servers).Msg("NATS is not reachable yet; retrying in the background")
		nc, err = nats.Connect(a.cfg.NATSURL, append(opts, nats.RetryOnFailedConnect(true))...)
		if err != nil {
			return nil, fmt.Errorf("connecting to NATS at %s (LR_NATS_URL): %w", servers, red.err(err))
		}
	}
	// The client gives up for good only when the server keeps refusing it (the same authentication error
	// twice): end the run then, rather than wait on a connection that will not come back. drain replaces this
	// handler when lr-relay closes the connection itself.
	nc.SetClosedHandler(func(nc *nats.Conn) {
		err := red.err(nc.LastError())
		if err == nil {
			err = errors.New("closed by the client")
		}
		log.Error().Err(err).Msg("NATS connection closed for good; stopping")
		closed(err)
	})
	return nc, nil
}

// maxLoggedViolations bounds the distinct permissions violations logged at error level.
const maxLoggedViolations = 20

// natsError logs an asynchronous NATS error. A permissions violation means the server's permissions for
// lr-relay's user lack a subject it needs: it is logged at error level once per subject, and readiness stays
// false until the process restarts, so that a missing permission is seen rather than retried in silence.
func (a *App) natsError(log zerolog.Logger, err error) {
	switch {
	case errors.Is(err, nats.ErrPermissionViolation):
		a.mu.Lock()
		msg := err.Error()
		if a.violation == "" {
			a.violation = msg
		}
		// Subjects hold ids, so distinct violations are bounded: past the bound they are all "seen".
		_, seen := a.violations[msg]
		seen = seen || len(a.violations) >= maxLoggedViolations
		if !seen {
			if a.violations == nil {
				a.violations = map[string]struct{}{}
			}
			a.violations[msg] = struct{}{}
		}
		a.mu.Unlock()
		if !seen {
			log.Error().Err(err).Msg("NATS permission missing: grant it to lr-relay's NATS user (deploy/nats/permissions.conf); readiness stays false until restart")
		} else {
			log.Debug().Err(err).Msg("NATS permission missing (again)")
		}
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked),
		errors.Is(err, nats.ErrAccountAuthExpired):
		log.Error().Err(err).Msg("NATS refused lr-relay's credentials")
	default:
		log.Warn().Err(err).Msg("NATS error")
	}
}

func (a *App) drain(nc *nats.Conn) {
	done := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(done) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		nc.Close()
	}
}

// userAgent follows Microsoft's partner convention.
func userAgent() string { return "MdePartner-LrRelay-lr-relay/" + Version }

// tenants builds a Defender client per tenant, each with its own limiter keys, and the router.
func (a *App) tenants(ctx context.Context, js jetstream.JetStream) (relay.Router, []string, error) {
	var specs []tenant.Spec
	if a.cfg.HasDefaultTenant() {
		secret, err := a.cfg.ClientSecret()
		if err != nil {
			return nil, nil, err
		}
		specs = append(specs, tenant.Spec{
			Name: tenant.DefaultName, TenantID: a.cfg.TenantID(), ClientID: a.cfg.ClientID(), ClientSecret: secret,
			ClientSecretFile: a.cfg.MDEClientSecretFile, Auth: a.cfg.AuthMode(),
			ClientCertificateFile: a.cfg.MDEClientCertFile, ClientCertificatePasswordFile: a.cfg.MDEClientCertPasswordFile,
			Cloud: a.cfg.MDECloud, APIURL: a.cfg.MDEAPIURL, TokenURL: a.cfg.MDETokenURL, Scope: a.cfg.MDEScope,
		})
	}
	if a.cfg.TenantsFile != "" {
		more, err := tenant.Load(a.cfg.TenantsFile)
		if err != nil {
			return nil, nil, err
		}
		specs = append(specs, more...)
	}
	if len(specs) == 0 {
		return nil, nil, errors.New("no tenant configured: set LR_MDE_TENANT_ID, LR_MDE_CLIENT_ID and a credential (LR_MDE_CLIENT_SECRET_FILE, LR_MDE_CLIENT_CERT_FILE, or LR_MDE_AUTH=workload-identity or managed-identity), or LR_TENANTS_FILE")
	}
	if err := tenant.Validate(specs); err != nil {
		return nil, nil, err
	}
	httpClient := &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: max(16, a.cfg.Workers), IdleConnTimeout: 90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: a.cfg.MDERequestTimeout,
	}}
	byID := map[string]*relay.Tenant{}
	var def *relay.Tenant
	clients := make([]*mde.Client, 0, len(specs))
	for _, s := range specs {
		limiters, links, err := a.limitersOf(ctx, js, s)
		if err != nil {
			return nil, nil, err
		}
		quota.InitMetrics(a.o.Registry, quota.Key{Tenant: s.Name, Endpoint: quota.EndpointLinks}, quota.Key{Tenant: s.Name, Endpoint: quota.EndpointActions})
		mc, err := s.MDEConfig(userAgent())
		if err != nil {
			return nil, nil, err
		}
		mc.RequestTimeout, mc.MaxThrottleRetries = a.cfg.MDERequestTimeout, a.cfg.MDEMaxThrottleRetries
		client, err := mde.New(mc, httpClient, limiters, a.log, // mde adds component and tenant
			mde.WithRegisterer(a.o.Registry))
		if err != nil {
			return nil, nil, fmt.Errorf("tenant %q: %w", s.Name, err)
		}
		clients = append(clients, client)
		key := quota.Key{Tenant: s.Name, Endpoint: quota.EndpointLinks}
		t := &relay.Tenant{Name: s.Name, ID: s.TenantID, API: client, NextCall: func(n int) time.Time { return links.NextFree(key, n) }}
		byID[s.TenantID] = t
		if s.Name == tenant.DefaultName {
			def = t
		}
	}
	rt := tenant.NewRouter(byID, def, def != nil)
	checkCtx, stopChecks := context.WithCancel(ctx)
	stop := func() {
		stopChecks()
		for _, c := range clients {
			c.Close() // the timers of the background token refresh
		}
	}
	a.mu.Lock()
	if a.authStop != nil {
		a.authStop()
	}
	a.auth, a.authStop = clients, stop
	a.mu.Unlock()
	// Every tenant's first token is fetched now, a few tenants at a time, so that wrong credentials show in
	// lr_tenant_auth_ok, the log and /-/ready at start rather than at the tenant's first event; tenants
	// that are not ok are checked again every 30 s, so a fixed secret shows without waiting for an event.
	// It never stops the start: a tenant whose credentials are rejected only has its events wait. The
	// goroutine ends with ctx (each check is bounded by LR_MDE_REQUEST_TIMEOUT).
	go mde.CheckAuthAll(checkCtx, clients, 8, 30*time.Second)
	names := make([]string, len(specs))
	for i, sp := range specs {
		names[i] = sp.Name
	}
	return rt.Route, names, nil
}

// limitersOf returns the call budget of one tenant: one limiter per endpoint, because each endpoint has its own
// windows, and the links limiter (the relay looks at it to set aside events whose tenant has no budget now).
// Shared (KV) limiters make the budget a property of the whole deployment.
func (a *App) limitersOf(ctx context.Context, js jetstream.JetStream, s tenant.Spec) (mde.Limiters, budget, error) {
	links, actions := a.cfg.RateLimits, a.cfg.ActionRateLimits
	if s.RateLimits != "" {
		links = s.RateLimits
	}
	if s.ActionRateLimits != "" {
		actions = s.ActionRateLimits
	}
	lw, err := quota.ParseWindows(links)
	if err != nil {
		return mde.Limiters{}, nil, fmt.Errorf("tenant %q: LR_RATE_LIMITS: %w", s.Name, err)
	}
	aw, err := quota.ParseWindows(actions)
	if err != nil {
		return mde.Limiters{}, nil, fmt.Errorf("tenant %q: LR_ACTION_RATE_LIMITS: %w", s.Name, err)
	}
	ll, err := a.limiterFor(ctx, js, lw)
	if err != nil {
		return mde.Limiters{}, nil, err
	}
	al, err := a.limiterFor(ctx, js, aw)
	if err != nil {
		return mde.Limiters{}, nil, err
	}
	return mde.Limiters{Links: ll, Actions: al}, ll, nil
}

// Ready reports whether the process is connected and bound to its consumer. The detail adds one line per
// tenant whose authentication is not ok (no token yet, or credentials rejected).
func (a *App) Ready() (bool, string) {
	a.mu.Lock()
	nc, r, degraded, auth, violation := a.nc, a.relay, a.degraded, a.auth, a.violation
	a.mu.Unlock()
	switch {
	case violation != "":
		return false, "NATS permission missing (fix it and restart): " + violation
	case nc == nil || r == nil:
		return false, "starting"
	case !nc.IsConnected():
		return false, "disconnected from NATS"
	case !r.Ready():
		return false, "consumer not bound"
	}
	msg := "ready"
	for _, d := range degraded {
		if d() {
			msg = "ready (quota degraded: KV unreachable, using the local fallback share)"
			break
		}
	}
	// A tenant whose credentials fail does not make the process unready: the other tenants' events still
	// flow, and restarting the pod would not fix a revoked secret. The body names each such tenant.
	for _, c := range auth {
		if ok, why := c.AuthHealthy(); !ok {
			msg += "\ntenant " + c.Tenant() + " auth: " + why
		}
	}
	return true, msg
}

func (a *App) serveHTTP() (*http.Server, error) {
	ln := a.o.Listener
	if ln == nil {
		if a.cfg.HTTPAddr == "" {
			return nil, nil
		}
		var err error
		ln, err = net.Listen("tcp", a.cfg.HTTPAddr)
		if err != nil {
			return nil, fmt.Errorf("LR_HTTP_ADDR %q: %w", a.cfg.HTTPAddr, err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.o.Registry, promhttp.HandlerOpts{}))
	if a.cfg.Pprof {
		registerPprof(mux)
	}
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("healthy\n"))
	})
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := a.Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	})
	// Fixed bounds: the endpoints answer small requests quickly, so a client that sends slowly, reads
	// slowly, idles or sends huge headers only holds a connection this long.
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error().Err(err).Msg("http server stopped")
		}
	}()
	return srv, nil
}

// cleanOrphans removes the chunks of uploads that never finished (a process killed mid-upload), at start and
// then every ten minutes, until ctx ends. Only chunks idle for longer than any pause of a live upload are
// touched: a live upload writes a chunk at least every LR_DOWNLOAD_IDLE_TIMEOUT.
func (a *App) cleanOrphans(ctx context.Context, store *artifact.Store) {
	olderThan := max(10*time.Minute, 2*a.cfg.DownloadIdleTimeout)
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		n, err := store.CleanOrphans(ctx, olderThan)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			a.log.Warn().Err(err).Msg("cleaning orphaned object chunks failed; will retry")
		case n > 0:
			a.log.Info().Int("uploads", n).Msg("removed chunks of unfinished uploads")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
