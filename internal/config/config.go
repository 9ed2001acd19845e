// Package config holds lr-relay's configuration: one struct, loaded from LR_* environment variables by
// envconfig in main, then checked by Validate, which reports every problem at once.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Prefix is the environment variable prefix.
const Prefix = "LR"

// Config is every setting of lr-relay. The envconfig names are a contract with operators: keep them.
type Config struct {
	NATSURL       string `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222" desc:"NATS server URL(s), comma separated."`
	NATSCredsFile string `envconfig:"NATS_CREDS_FILE" desc:"NATS credentials (.creds) file, if the server requires one."`
	// NATS security
	NATSTLSCAFile    string `envconfig:"NATS_TLS_CA_FILE" desc:"PEM file of the CA certificates that NATS servers are verified against; setting it turns TLS on."`
	NATSTLSCertFile  string `envconfig:"NATS_TLS_CERT_FILE" desc:"PEM client certificate for mutual TLS, with LR_NATS_TLS_KEY_FILE; setting it turns TLS on."`
	NATSTLSKeyFile   string `envconfig:"NATS_TLS_KEY_FILE" desc:"PEM private key of LR_NATS_TLS_CERT_FILE."`
	NATSNkeySeedFile string `envconfig:"NATS_NKEY_SEED_FILE" desc:"File holding the nkey seed (SU...) of the NATS user."`
	NATSUser         string `envconfig:"NATS_USER" desc:"NATS user name, with LR_NATS_PASSWORD_FILE."`
	NATSPasswordFile string `envconfig:"NATS_PASSWORD_FILE" desc:"File holding the password of LR_NATS_USER."`
	NATSTokenFile    string `envconfig:"NATS_TOKEN_FILE" desc:"File holding a NATS authentication token."`
	NATSInboxPrefix  string `envconfig:"NATS_INBOX_PREFIX" default:"_INBOX" desc:"Prefix of the reply subjects lr-relay subscribes to (match it in the NATS permissions)."`
	NATSJSDomain     string `envconfig:"NATS_JS_DOMAIN" desc:"JetStream domain to use, for JetStream behind a leaf node (empty: the local one)."`

	SourceStream  string `envconfig:"SOURCE_STREAM" default:"LIVE_RESPONSE" desc:"Stream that holds the \"live response finished\" events."`
	SourceSubject string `envconfig:"SOURCE_SUBJECT" default:"mde.liveresponse.finished" desc:"Subject of the \"live response finished\" events."`
	Consumer      string `envconfig:"CONSUMER" default:"lr-relay" desc:"Durable pull consumer shared by every replica."`
	Workers       int    `envconfig:"WORKERS" default:"8" desc:"Events processed at once by this process; only this many are pulled."`

	ResultStream        string        `envconfig:"RESULT_STREAM" default:"LIVE_RESPONSE_RESULTS" desc:"Stream the result events are stored in."`
	ResultSubjectPrefix string        `envconfig:"RESULT_SUBJECT_PREFIX" default:"mde.liveresponse.results" desc:"Results go to <prefix>.<tenant>.<actionId>.<index>."`
	ResultDuplicates    time.Duration `envconfig:"RESULT_DUPLICATE_WINDOW" default:"1h" desc:"Duplicate window of a provisioned results stream (Nats-Msg-Id dedupe)."`
	DeadLetterStream    string        `envconfig:"DEADLETTER_STREAM" default:"LIVE_RESPONSE_DEADLETTER" desc:"Stream the dead-letter records are stored in."`
	DeadLetterSubject   string        `envconfig:"DEADLETTER_SUBJECT" default:"mde.liveresponse.deadletter" desc:"Subject of the dead-letter records."`
	Provision           bool          `envconfig:"PROVISION" default:"true" desc:"Create missing streams, consumer and buckets; existing ones are used as they are."`
	StreamReplicas      int           `envconfig:"STREAM_REPLICAS" default:"1" desc:"Replicas of the streams and buckets lr-relay provisions (3 on a cluster)."`

	MDECloud            string        `envconfig:"MDE_CLOUD" default:"commercial" desc:"Defender cloud: commercial, us, eu, uk, au, swa, ina, gcc, gcc-high or dod."`
	MDEAPIURL           string        `envconfig:"MDE_API_URL" desc:"Overrides the cloud's API base URL."`
	MDETokenURL         string        `envconfig:"MDE_TOKEN_URL" desc:"Overrides the cloud's OAuth2 token URL."`
	MDEScope            string        `envconfig:"MDE_SCOPE" desc:"Overrides the cloud's OAuth2 scope."`
	MDETenantID         string        `envconfig:"MDE_TENANT_ID" desc:"Entra ID tenant of the default tenant."`
	MDEClientID         string        `envconfig:"MDE_CLIENT_ID" desc:"Application (client) id with Machine.LiveResponse permission."`
	MDEClientSecret     string        `envconfig:"MDE_CLIENT_SECRET" desc:"Client secret (prefer LR_MDE_CLIENT_SECRET_FILE)."`
	MDEClientSecretFile string        `envconfig:"MDE_CLIENT_SECRET_FILE" desc:"File holding the client secret."`
	MDERequestTimeout   time.Duration `envconfig:"MDE_REQUEST_TIMEOUT" default:"30s" desc:"Timeout of one Defender API request."`
	// MDE client defaults (h12): mde.New requires these filled; checked in mde.go.
	MDEMaxThrottleRetries int `envconfig:"MDE_MAX_THROTTLE_RETRIES" default:"5" desc:"How many 429 answers one Defender call absorbs, pausing the tenant each time, before it fails; 0 means none."`
	// Entra authentication
	MDEAuth                   string `envconfig:"MDE_AUTH" desc:"How the default tenant authenticates: secret, certificate, workload-identity or managed-identity; empty means secret, or certificate when only LR_MDE_CLIENT_CERT_FILE is set."`
	MDEClientCertFile         string `envconfig:"MDE_CLIENT_CERT_FILE" desc:"Certificate with its private key (PEM, or PFX) for LR_MDE_AUTH=certificate; re-read when it changes."`
	MDEClientCertPasswordFile string `envconfig:"MDE_CLIENT_CERT_PASSWORD_FILE" desc:"File holding the password of an encrypted PFX in LR_MDE_CLIENT_CERT_FILE."`

	RateLimits       string `envconfig:"RATE_LIMITS" default:"100/1m,1500/1h" desc:"Sliding windows of GetLiveResponseResultDownloadLink calls, per tenant."`
	ActionRateLimits string `envconfig:"ACTION_RATE_LIMITS" default:"100/1m,1500/1h" desc:"Sliding windows of GET machineactions/{id} calls, per tenant."`
	QuotaShared      bool   `envconfig:"QUOTA_SHARED" default:"true" desc:"Share the call budget between replicas through a JetStream KV bucket."`
	QuotaBucket      string `envconfig:"QUOTA_BUCKET" default:"lr-quota" desc:"KV bucket of the shared call budget."`
	// Quota (h6): QuotaProcesses is how many processes share the budget (not LR_STREAM_REPLICAS, the KV replicas);
	// QuotaMargin is the one margin of the limiters. Checked in quota.go.
	QuotaProcesses     int           `envconfig:"QUOTA_REPLICAS" default:"3" desc:"Processes expected to share the budget; while the KV is unreachable each takes 1/N of every window."`
	QuotaMargin        time.Duration `envconfig:"QUOTA_SKEW_MARGIN" default:"250ms" desc:"Clock skew and latency margin added to every window."`
	QuotaOpTimeout     time.Duration `envconfig:"QUOTA_OP_TIMEOUT" default:"2s" desc:"Timeout of one request to the shared quota bucket; a slower answer counts as the bucket being unreachable."`
	QuotaProbeInterval time.Duration `envconfig:"QUOTA_PROBE_INTERVAL" default:"5s" desc:"How often a process using its fallback share tries the shared quota bucket again."`

	DownloadAllowHTTP    bool          `envconfig:"DOWNLOAD_ALLOW_HTTP" default:"false" desc:"Allow plain-http result links (tests and the demo only)."`
	DownloadAllowedHosts []string      `envconfig:"DOWNLOAD_ALLOWED_HOSTS" default:".blob.core.windows.net,.blob.core.usgovcloudapi.net" desc:"Hosts result links may point to: .suffix (port 443 only, unless written .suffix:port), or a literal host, host:port or IP."`
	DownloadMaxBytes     int64         `envconfig:"DOWNLOAD_MAX_BYTES" default:"4294967296" desc:"Largest result file downloaded, in bytes (compressed size)."`
	DownloadTimeout      time.Duration `envconfig:"DOWNLOAD_TIMEOUT" default:"30s" desc:"Connect and response-header timeout of a download."`
	DownloadIdleTimeout  time.Duration `envconfig:"DOWNLOAD_IDLE_TIMEOUT" default:"60s" desc:"A download that sends no byte for this long is abandoned."`
	LinkRetries          int           `envconfig:"LINK_RETRIES" default:"3" desc:"How many fresh links are requested when a link has expired."`

	// Download bounds and proxy (hostile links)
	DownloadMinRate      int64         `envconfig:"DOWNLOAD_MIN_RATE" default:"32768" desc:"Slowest accepted download, in bytes per second averaged over the last 30 s spent waiting for the link; a slower body fails and the event is retried (0 disables)."`
	DownloadTotalTimeout time.Duration `envconfig:"DOWNLOAD_TOTAL_TIMEOUT" default:"2h" desc:"Longest one download may take, from the request to the last byte; the event is then retried."`
	DownloadProxy        string        `envconfig:"DOWNLOAD_PROXY" desc:"Egress proxy for result downloads (http:// or https:// URL, used by CONNECT); overrides HTTPS_PROXY and NO_PROXY, which apply otherwise."`

	InlineMaxBytes  int           `envconfig:"INLINE_MAX_BYTES" default:"65536" desc:"Script output or file content above this size is stored in the object store; 0 keeps no content in the event at all, only the object reference, sizes and digests."`
	PreviewBytes    int           `envconfig:"PREVIEW_BYTES" default:"4096" desc:"Head and tail of a large script output kept in the event; at most half of LR_INLINE_MAX_BYTES (so 0 when that is 0)."`
	RawMaxBytes     int           `envconfig:"RAW_MAX_BYTES" default:"16384" desc:"Leading bytes of an unparseable result file kept (base64) in its result event."`
	ObjectBucket    string        `envconfig:"OBJECT_BUCKET" default:"lr-results" desc:"Object Store bucket for large results."`
	ObjectTTL       time.Duration `envconfig:"OBJECT_TTL" default:"720h" desc:"Age after which stored artifacts expire (0 keeps them)."`
	ObjectMaxBytes  int64         `envconfig:"OBJECT_MAX_BYTES" default:"-1" desc:"Size cap of the object bucket (-1 for none)."`
	GetFileMaxBytes int64         `envconfig:"GETFILE_MAX_BYTES" default:"4294967296" desc:"Largest decompressed GetFile accepted."`
	GetFileMaxRatio float64       `envconfig:"GETFILE_MAX_RATIO" default:"200" desc:"Largest decompressed/compressed ratio accepted (decompression bomb guard)."`

	MaxDeliver      int             `envconfig:"MAX_DELIVER" default:"10" desc:"Deliveries after which a failing event is dead-lettered with its last error."`
	AckWait         time.Duration   `envconfig:"ACK_WAIT" default:"60s" desc:"AckWait of a provisioned consumer; work in progress is kept alive with InProgress."`
	RetryBackoff    []time.Duration `envconfig:"RETRY_BACKOFF" default:"5s,15s,30s,1m,2m,5m,10m" desc:"Delays before retrying a transiently failed event (with jitter); the last repeats."`
	ShutdownTimeout time.Duration   `envconfig:"SHUTDOWN_TIMEOUT" default:"25s" desc:"Time given to in-flight work on SIGTERM before it is handed back."`

	// Input bounds (hostile events): an event over one is dead-lettered with input_too_large before any API call.
	MaxEventBytes          int           `envconfig:"MAX_EVENT_BYTES" default:"262144" desc:"Largest event accepted, in bytes."`
	MaxCommands            int           `envconfig:"MAX_COMMANDS" default:"100" desc:"Most commands one event (or the action fetched for it) may hold."`
	MaxResultBytesPerEvent int           `envconfig:"MAX_RESULT_BYTES_PER_EVENT" default:"8388608" desc:"Most bytes of event fields that one event's results may repeat in all (the action's fields are copied into every command's result)."`
	TenantAuthRetry        time.Duration `envconfig:"TENANT_AUTH_RETRY" default:"1m" desc:"How long events wait while their tenant's credentials are rejected; such waits do not count toward LR_MAX_DELIVER."`

	TenantsFile      string        `envconfig:"TENANTS_FILE" desc:"YAML or JSON file of tenants (credentials and limits); the LR_MDE_* tenant stays the default."`
	TenantMaxWorkers int           `envconfig:"TENANT_MAX_WORKERS" default:"0" desc:"Workers one tenant may hold at once; 0 means half of LR_WORKERS when several tenants are configured, no cap otherwise."`
	TenantParked     int           `envconfig:"TENANT_PARKED" default:"0" desc:"Events per tenant held back in this process while the tenant is at its cap or has no call budget now; 0 means LR_WORKERS."`
	TenantDeferDelay time.Duration `envconfig:"TENANT_DEFER_DELAY" default:"10s" desc:"Delay before an event deferred by the tenant cap is redelivered; one deferred for budget comes back when the budget frees (deferrals do not count toward LR_MAX_DELIVER)."`
	DeferralsBucket  string        `envconfig:"DEFERRALS_BUCKET" default:"lr-deferrals" desc:"KV bucket recording deliveries deferred by the tenant gate (cap or budget)."`

	HTTPAddr string `envconfig:"HTTP_ADDR" default:":9090" desc:"Address of /metrics, /-/healthy and /-/ready (empty disables)."`
	// Profiling (issue 12).
	Pprof     bool   `envconfig:"PPROF" default:"false" desc:"Serve the Go profiler (net/http/pprof) under /debug/pprof/ on LR_HTTP_ADDR; keep that address private."`
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error."`
	LogFormat string `envconfig:"LOG_FORMAT" default:"json" desc:"json, or console for people."`
}

// Load reads the configuration from the environment. Every value that does not parse is reported at once.
func Load() (Config, error) {
	var c Config
	if err := checkValues(os.LookupEnv); err != nil {
		return c, err
	}
	if err := envconfig.Process(Prefix, &c); err != nil {
		return c, fmt.Errorf("reading LR_ environment: %w", err)
	}
	return c, nil
}

// ClientSecret returns the client secret, reading LR_MDE_CLIENT_SECRET_FILE when it is set.
func (c Config) ClientSecret() (string, error) {
	if c.MDEClientSecretFile == "" {
		return c.MDEClientSecret, nil
	}
	b, err := os.ReadFile(c.MDEClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("LR_MDE_CLIENT_SECRET_FILE: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Validate reports every problem of the configuration at once, naming the variable.
func (c Config) Validate() error {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("LR_%s: %s", name, fmt.Sprintf(format, args...)))
	}
	errs = append(errs, c.validateAuth()...)
	if c.Workers < 1 || c.Workers > 1024 {
		bad("WORKERS", "must be between 1 and 1024, got %d", c.Workers)
	}
	for name, v := range map[string]string{
		"SOURCE_STREAM": c.SourceStream, "RESULT_STREAM": c.ResultStream, "DEADLETTER_STREAM": c.DeadLetterStream,
		"CONSUMER": c.Consumer, "OBJECT_BUCKET": c.ObjectBucket, "QUOTA_BUCKET": c.QuotaBucket,
		"DEFERRALS_BUCKET": c.DeferralsBucket,
	} {
		if v == "" || strings.ContainsAny(v, " .*>\t\n") {
			bad(name, "must be a non-empty name without spaces, '.', '*' or '>', got %q", v)
		}
	}
	for name, v := range map[string]string{
		"SOURCE_SUBJECT": c.SourceSubject, "RESULT_SUBJECT_PREFIX": c.ResultSubjectPrefix, "DEADLETTER_SUBJECT": c.DeadLetterSubject,
	} {
		if v == "" || strings.ContainsAny(v, " \t\n") || strings.HasPrefix(v, ".") || strings.HasSuffix(v, ".") {
			bad(name, "must be a NATS subject, got %q", v)
		}
	}
	if strings.ContainsAny(c.ResultSubjectPrefix, "*>") {
		bad("RESULT_SUBJECT_PREFIX", "must not hold wildcards, got %q", c.ResultSubjectPrefix)
	}
	errs = append(errs, c.validateNATS()...)
	if c.MDEClientSecret != "" && c.MDEClientSecretFile != "" {
		bad("MDE_CLIENT_SECRET_FILE", "set either LR_MDE_CLIENT_SECRET or LR_MDE_CLIENT_SECRET_FILE, not both")
	}
	if c.MaxDeliver < 1 {
		bad("MAX_DELIVER", "must be at least 1, got %d", c.MaxDeliver)
	}
	if c.AckWait < time.Second {
		bad("ACK_WAIT", "must be at least 1s, got %s", c.AckWait)
	}
	if len(c.RetryBackoff) == 0 {
		bad("RETRY_BACKOFF", "needs at least one delay")
	}
	for _, d := range c.RetryBackoff {
		if d <= 0 {
			bad("RETRY_BACKOFF", "delays must be positive, got %s", d)
			break
		}
	}
	c.validateBounds(bad)
	errs = append(errs, c.validateRateLimits()...)
	errs = append(errs, c.validateCloud()...)
	errs = append(errs, c.validateTenantsFile()...)
	if c.ShutdownTimeout <= 0 {
		bad("SHUTDOWN_TIMEOUT", "must be positive, got %s", c.ShutdownTimeout)
	}
	if c.DownloadMaxBytes <= 0 {
		bad("DOWNLOAD_MAX_BYTES", "must be positive, got %d", c.DownloadMaxBytes)
	}
	if c.DownloadTimeout <= 0 {
		bad("DOWNLOAD_TIMEOUT", "must be positive, got %s", c.DownloadTimeout)
	}
	if c.DownloadIdleTimeout <= 0 {
		bad("DOWNLOAD_IDLE_TIMEOUT", "must be positive, got %s", c.DownloadIdleTimeout)
	}
	if len(c.DownloadAllowedHosts) == 0 {
		bad("DOWNLOAD_ALLOWED_HOSTS", "needs at least one host")
	}
	if c.LinkRetries < 0 || c.LinkRetries > 20 {
		bad("LINK_RETRIES", "must be between 0 and 20, got %d", c.LinkRetries)
	}
	errs = append(errs, c.validateDownloadBounds()...)
	c.validateResults(bad)
	c.validateMDE(bad)
	if c.StreamReplicas < 1 || c.StreamReplicas > 5 {
		bad("STREAM_REPLICAS", "must be between 1 and 5, got %d", c.StreamReplicas)
	}
	if c.TenantMaxWorkers < 0 {
		bad("TENANT_MAX_WORKERS", "must not be negative, got %d", c.TenantMaxWorkers)
	}
	if c.TenantParked < 0 {
		bad("TENANT_PARKED", "must not be negative, got %d", c.TenantParked)
	}
	if c.TenantDeferDelay <= 0 {
		bad("TENANT_DEFER_DELAY", "must be positive, got %s", c.TenantDeferDelay)
	}
	errs = append(errs, c.validateQuota()...)
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "must be debug, info, warn or error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		bad("LOG_FORMAT", "must be json or console, got %q", c.LogFormat)
	}
	return errors.Join(errs...)
}

// PrintUsage writes every LR_ variable with its default and description.
func PrintUsage(w io.Writer) error {
	var c Config
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tDESCRIPTION")
	err := envconfig.Usagef(Prefix, &c, tw, "{{range .}}{{usage_key .}}\t{{usage_default .}}\t{{usage_description .}}\n{{end}}")
	if err != nil {
		return err
	}
	return tw.Flush()
}

// MarkdownTable writes every LR_ variable as a Markdown table row (the README's configuration table).
func MarkdownTable(w io.Writer) error {
	var c Config
	fmt.Fprintln(w, "| Variable | Default | Description |")
	fmt.Fprintln(w, "|---|---|---|")
	return envconfig.Usagef(Prefix, &c, w,
		"{{range .}}| `{{usage_key .}}` | {{with usage_default .}}`{{.}}`{{end}} | {{usage_description .}} |\n{{end}}")
}
