package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/command"
	"github.com/lr-relay/lr-relay/internal/download"
	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/schemas"
)

func newTestRelay(t *testing.T) *Relay {
	t.Helper()
	v, err := schemas.New()
	if err != nil {
		t.Fatal(err)
	}
	return &Relay{
		o: Options{
			MaxDeliver:             3,
			MaxEventBytes:          4 << 10,
			MaxCommands:            3,
			MaxResultBytesPerEvent: 2 << 10,
			AuthRetryDelay:         time.Minute,
			Backoff:                []time.Duration{time.Second, 10 * time.Second},
			Validator:              v,
			Router: func(id string) (*Tenant, bool) {
				if id == "" {
					return &Tenant{Name: "default"}, true
				}
				return nil, false
			},
		},
		log:     zerolog.Nop(),
		metrics: newMetrics(nil),
		gate:    newTenantGate(0, 1, 1, 1<<20),
	}
}

func TestParseEventDecisions(t *testing.T) {
	r := newTestRelay(t)
	tests := []struct {
		name        string
		payload     string
		wantOK      bool
		wantReason  string
		hasCommands bool
	}{
		{name: "valid with commands", payload: `{"id":"0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b","commands":[{"index":0,"commandStatus":"Completed","command":{"type":"PutFile"}}],"extra":{"x":1}}`, wantOK: true, hasCommands: true},
		{name: "valid without commands", payload: `{"id":"0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"}`, wantOK: true},
		{name: "empty commands array", payload: `{"id":"0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b","commands":[]}`, wantOK: true, hasCommands: true},
		{name: "not JSON", payload: `{"id":`, wantReason: ReasonInvalidJSON},
		{name: "not an object", payload: `[1,2]`, wantReason: ReasonInvalidJSON},
		{name: "id not a GUID", payload: `{"id":"abc"}`, wantReason: ReasonInvalidID},
		{name: "missing id", payload: `{"commands":[]}`, wantReason: ReasonSchemaViolation},
		{name: "negative index", payload: `{"id":"0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b","commands":[{"index":-1,"command":{"type":"RunScript"}}]}`, wantReason: ReasonSchemaViolation},
		{name: "over LR_MAX_EVENT_BYTES", payload: `{"id":"0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b","pad":"` + strings.Repeat("x", 5000) + `"}`, wantReason: ReasonInputTooLarge},
		{name: "over LR_MAX_COMMANDS", payload: `{"id":"0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b","commands":[{"index":0},{"index":1},{"index":2},{"index":3}]}`, wantReason: ReasonInputTooLarge},
		{name: "string over its schema bound", payload: `{"id":"0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b","computerDnsName":"` + strings.Repeat("h", 256) + `"}`, wantReason: ReasonInputTooLarge},
		{name: "action fields repeated over LR_MAX_RESULT_BYTES_PER_EVENT", payload: `{"id":"0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b","requestorComment":"` + strings.Repeat("c", 1000) + `","commands":[{"index":0},{"index":1},{"index":2}]}`, wantReason: ReasonInputTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, d, ok := r.parseEvent([]byte(tt.payload))
			if ok != tt.wantOK {
				t.Fatalf("ok = %v, want %v (decision %+v)", ok, tt.wantOK, d)
			}
			if !ok {
				if d.fate != fateDeadLetter || d.reason != tt.wantReason || d.err == nil {
					t.Errorf("decision %+v, want dead letter %q with an error", d, tt.wantReason)
				}
				return
			}
			if a.HasCommands != tt.hasCommands {
				t.Errorf("HasCommands = %v, want %v", a.HasCommands, tt.hasCommands)
			}
		})
	}
}

func TestFailureDecisions(t *testing.T) {
	r := newTestRelay(t)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name       string
		ctx        context.Context
		err        error
		wantFate   fate
		wantReason string
	}{
		{name: "action not found", ctx: context.Background(), err: &command.ActionError{Reason: command.ReasonActionNotFound, Err: errors.New("404")}, wantFate: fateDeadLetter, wantReason: ReasonActionNotFound},
		{name: "wrapped action error", ctx: context.Background(), err: fmt.Errorf("command 1: %w", &command.ActionError{Reason: command.ReasonForbidden, Err: errors.New("403")}), wantFate: fateDeadLetter, wantReason: ReasonForbidden},
		{name: "500 retried", ctx: context.Background(), err: &mde.APIError{Status: 500}, wantFate: fateRetry},
		{name: "429 after retries", ctx: context.Background(), err: &mde.APIError{Status: 429}, wantFate: fateRetry},
		{name: "token outage retried", ctx: context.Background(), err: &mde.TokenError{Status: 503}, wantFate: fateRetry},
		{name: "permanent token error dead-lettered", ctx: context.Background(), err: &mde.TokenError{Status: 400, Code: "invalid_request"}, wantFate: fateDeadLetter, wantReason: ReasonPermanentAPIError},
		{name: "rejected credentials wait", ctx: context.Background(), err: fmt.Errorf("x: %w", rejected{}), wantFate: fateDefer},
		{name: "network error retried", ctx: context.Background(), err: errors.New("connection reset"), wantFate: fateRetry},
		{name: "transient download retried", ctx: context.Background(), err: &download.Error{Kind: download.KindTimeout}, wantFate: fateRetry},
		{name: "shutdown hands back", ctx: canceled, err: context.Canceled, wantFate: fateHandBack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := r.failure(tt.ctx, decision{}, tt.err)
			if d.fate != tt.wantFate || d.reason != tt.wantReason {
				t.Errorf("got fate %d reason %q, want %d %q", d.fate, d.reason, tt.wantFate, tt.wantReason)
			}
			if d.fate == fateDefer && d.delay != r.o.AuthRetryDelay {
				t.Errorf("deferral delay %s, want LR_TENANT_AUTH_RETRY %s", d.delay, r.o.AuthRetryDelay)
			}
		})
	}
}

// rejected stands for a token error whose credentials were refused.
type rejected struct{}

func (rejected) Error() string             { return "invalid_client" }
func (rejected) CredentialsRejected() bool { return true }
func (rejected) Retryable() bool           { return false }

func TestMetricLabelsAreClosed(t *testing.T) {
	for in, want := range map[string]string{"RunScript": "RunScript", "GetFile": "GetFile", "PutFile": "PutFile",
		"runscript": "other", "": "other", strings.Repeat("x", 600): "other"} {
		if got := commandLabel(in); got != want {
			t.Errorf("commandLabel(%.20q) = %q, want %q", in, got, want)
		}
	}
}

func TestBackoffStaysWithinJitter(t *testing.T) {
	r := newTestRelay(t)
	for delivered, base := range map[uint64]time.Duration{0: time.Second, 1: time.Second, 2: 10 * time.Second, 9: 10 * time.Second} {
		for range 200 {
			d := r.backoff(delivered)
			if d < base*8/10 || d > base*12/10 {
				t.Fatalf("backoff(%d) = %s, want within ±20%% of %s", delivered, d, base)
			}
		}
	}
}
