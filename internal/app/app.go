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
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/artifact"
	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/download"
	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/internal/quota"
	"github.com/lr-relay/lr-relay/internal/relay"
	"github.com/lr-relay/lr-relay/internal/result"
	"github.com/lr-relay/lr-relay/internal/tenant"
	"github.com/lr-relay/lr-relay/schemas"
)

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
}

// New checks the configuration; it does not touch the network.
func New(o Options) (*App, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	return &App{o: o, cfg: o.Config, log: o.Logger}, nil
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

	nc, err := a.connect()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.nc = nc
	a.mu.Unlock()
	cleanup = append(cleanup, func() { a.drain(nc) })

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
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
		tenants int
	)
	if err := a.untilJetStream(ctx, "binding the quota buckets", func() (err error) {
		a.mu.Lock()
		a.degraded = nil // a failed attempt may have left the limiters it had built
		a.mu.Unlock()
		router, tenants, err = a.tenants(ctx, js)
		return err
	}); err != nil {
		return err
	}
	tenantWorkers := a.cfg.TenantMaxWorkers
	if tenantWorkers == 0 && tenants > 1 {
		tenantWorkers = max(1, (a.cfg.Workers+1)/2)
	}
	var deferrals *relay.Deferrals
	// Only the tenant gate defers events, so the bucket is needed only when the gate is on.
	if tenantWorkers > 0 {
		if err := a.untilJetStream(ctx, "binding the deferrals bucket", func() (err error) {
			deferrals, err = relay.EnsureDeferrals(ctx, js, a.cfg.DeferralsBucket, a.cfg.StreamReplicas, a.cfg.Provision)
			return err
		}); err != nil {
			return err
		}
	}
	dl, err := download.New(download.Config{
		AllowHTTP: a.cfg.DownloadAllowHTTP, AllowedHosts: a.cfg.DownloadAllowedHosts, MaxBytes: a.cfg.DownloadMaxBytes,
		Timeout: a.cfg.DownloadTimeout, IdleTimeout: a.cfg.DownloadIdleTimeout, Concurrency: a.cfg.Workers,
	}, a.log.With().Str("component", "download").Logger())
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

	proc := relay.NewProcessor(dl, store, relay.ProcessOptions{
		InlineMax: a.cfg.InlineMaxBytes, PreviewBytes: a.cfg.PreviewBytes,
		GetFileMaxBytes: a.cfg.GetFileMaxBytes, GetFileMaxRatio: a.cfg.GetFileMaxRatio, LinkRetries: a.cfg.LinkRetries,
	}, a.log.With().Str("component", "processor").Logger())

	r, err := relay.New(relay.Options{
		JS: js, Streams: streams, Workers: a.cfg.Workers, MaxDeliver: a.cfg.MaxDeliver, Backoff: a.cfg.RetryBackoff,
		ShutdownTimeout: a.cfg.ShutdownTimeout, Processor: proc, Router: router, Validator: validator,
		Logger: a.log.With().Str("component", "relay").Logger(), Registerer: a.o.Registry,
		OnResult: a.o.OnResult, OnDeadLetter: a.o.OnDeadLetter,
		TenantWorkers: tenantWorkers, TenantParked: a.cfg.TenantParked, DeferDelay: a.cfg.TenantDeferDelay,
		Deferrals: deferrals,
	})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.relay = r
	a.mu.Unlock()
	a.log.Info().Str("consumer", a.cfg.Consumer).Str("stream", a.cfg.SourceStream).Int("workers", a.cfg.Workers).
		Str("version", Version).Msg("relaying")
	// Run fails only while binding the consumer, before any work started, so it can simply be run again.
	return a.untilJetStream(ctx, "binding the consumer", func() error { return r.Run(ctx) })
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
		a.log.Warn().Err(err).Str("step", step).Dur("retry_in", delay).Msg("JetStream did not answer; retrying")
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
// it never ends it.
func (a *App) connect() (*nats.Conn, error) {
	log := a.log.With().Str("component", "nats").Logger()
	opts := []nats.Option{
		nats.Name("lr-relay " + Version),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil when we closed the connection ourselves
				log.Warn().Err(err).Msg("disconnected from NATS; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn().Err(err).Msg("NATS error")
		}),
	}
	if a.cfg.NATSCredsFile != "" {
		opts = append(opts, nats.UserCredentials(a.cfg.NATSCredsFile))
	}
	opts = append(opts, a.o.NATSOptions...)
	nc, err := nats.Connect(a.cfg.NATSURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS at LR_NATS_URL: %w", err)
	}
	return nc, nil
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
func (a *App) tenants(ctx context.Context, js jetstream.JetStream) (relay.Router, int, error) {
	var specs []tenant.Spec
	if a.cfg.MDETenantID != "" || a.cfg.MDEClientID != "" {
		secret, err := a.cfg.ClientSecret()
		if err != nil {
			return nil, 0, err
		}
		specs = append(specs, tenant.Spec{
			Name: tenant.DefaultName, TenantID: a.cfg.MDETenantID, ClientID: a.cfg.MDEClientID, ClientSecret: secret,
			Cloud: a.cfg.MDECloud, APIURL: a.cfg.MDEAPIURL, TokenURL: a.cfg.MDETokenURL, Scope: a.cfg.MDEScope,
		})
	}
	if a.cfg.TenantsFile != "" {
		more, err := tenant.Load(a.cfg.TenantsFile)
		if err != nil {
			return nil, 0, err
		}
		specs = append(specs, more...)
	}
	if len(specs) == 0 {
		return nil, 0, errors.New("no tenant configured: set LR_MDE_TENANT_ID, LR_MDE_CLIENT_ID and LR_MDE_CLIENT_SECRET(_FILE), or LR_TENANTS_FILE")
	}
	if err := tenant.Validate(specs); err != nil {
		return nil, 0, err
	}
	httpClient := &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: max(16, a.cfg.Workers), IdleConnTimeout: 90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: a.cfg.MDERequestTimeout,
	}}
	byID := map[string]*relay.Tenant{}
	var def *relay.Tenant
	for _, s := range specs {
		limiter, err := a.limiter(ctx, js, s)
		if err != nil {
			return nil, 0, err
		}
		mc, err := s.MDEConfig(userAgent())
		if err != nil {
			return nil, 0, err
		}
		mc.RequestTimeout = a.cfg.MDERequestTimeout
		client, err := mde.New(mc, httpClient, limiter, a.log.With().Str("component", "mde").Str("tenant", s.Name).Logger(),
			mde.WithRegisterer(a.o.Registry))
		if err != nil {
			return nil, 0, fmt.Errorf("tenant %q: %w", s.Name, err)
		}
		t := &relay.Tenant{Name: s.Name, API: client}
		byID[s.TenantID] = t
		if s.Name == tenant.DefaultName {
			def = t
		}
	}
	rt := tenant.NewRouter(byID, def, def != nil)
	return rt.Route, len(specs), nil
}

// limiter returns the call budget of one tenant: one limiter per endpoint, because each endpoint has its own
// windows. Shared (KV) limiters make the budget a property of the whole deployment.
func (a *App) limiter(ctx context.Context, js jetstream.JetStream, s tenant.Spec) (mde.Limiter, error) {
	links, actions := a.cfg.RateLimits, a.cfg.ActionRateLimits
	if s.RateLimits != "" {
		links = s.RateLimits
	}
	if s.ActionRateLimits != "" {
		actions = s.ActionRateLimits
	}
	lw, err := quota.ParseWindows(links)
	if err != nil {
		return nil, fmt.Errorf("tenant %q: LR_RATE_LIMITS: %w", s.Name, err)
	}
	aw, err := quota.ParseWindows(actions)
	if err != nil {
		return nil, fmt.Errorf("tenant %q: LR_ACTION_RATE_LIMITS: %w", s.Name, err)
	}
	mk := func(ws []quota.Window) (mde.Limiter, error) {
		return a.newLimiter(ctx, js, ws)
	}
	ll, err := mk(lw)
	if err != nil {
		return nil, err
	}
	al, err := mk(aw)
	if err != nil {
		return nil, err
	}
	return endpointLimiter{links: ll, actions: al}, nil
}

// endpointLimiter sends "<tenant>/links" keys to one limiter and every other key to the other.
type endpointLimiter struct{ links, actions mde.Limiter }

func (e endpointLimiter) pick(key string) mde.Limiter {
	if strings.HasSuffix(key, "/links") {
		return e.links
	}
	return e.actions
}

func (e endpointLimiter) Wait(ctx context.Context, key string) error {
	return e.pick(key).Wait(ctx, key)
}
func (e endpointLimiter) Pause(key string, until time.Time) { e.pick(key).Pause(key, until) }

// Ready reports whether the process is connected and bound to its consumer.
func (a *App) Ready() (bool, string) {
	a.mu.Lock()
	nc, r, degraded := a.nc, a.relay, a.degraded
	a.mu.Unlock()
	switch {
	case nc == nil || r == nil:
		return false, "starting"
	case !nc.IsConnected():
		return false, "disconnected from NATS"
	case !r.Ready():
		return false, "consumer not bound"
	}
	for _, d := range degraded {
		if d() {
			return true, "ready (quota degraded: KV unreachable, using the local fallback share)"
		}
	}
	return true, "ready"
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
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
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
