package relay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/download"
	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/internal/result"
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
			MaxDeliver: 3,
			Backoff:    []time.Duration{time.Second, 10 * time.Second},
			Validator:  v,
			Router: func(id string) (*Tenant, bool) {
				if id == "" {
					return &Tenant{Name: "default"}, true
				}
				return nil, false
			},
		},
		log:     zerolog.Nop(),
		metrics: newMetrics(nil),
		gate:    newTenantGate(0, 1, 1),
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
	a := &action.MachineAction{ID: "0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name       string
		ctx        context.Context
		err        error
		wantFate   fate
		wantReason string
	}{
		{name: "404 action", ctx: context.Background(), err: &mde.APIError{Status: 404, Code: "ResourceNotFound", Target: "t1"}, wantFate: fateDeadLetter, wantReason: ReasonActionNotFound},
		{name: "403 permission", ctx: context.Background(), err: &mde.APIError{Status: 403, Code: "Forbidden"}, wantFate: fateDeadLetter, wantReason: ReasonForbidden},
		{name: "400 bad request", ctx: context.Background(), err: &mde.APIError{Status: 400, Code: "BadRequest"}, wantFate: fateDeadLetter, wantReason: ReasonPermanentAPIError},
		{name: "500 retried", ctx: context.Background(), err: &mde.APIError{Status: 500}, wantFate: fateRetry},
		{name: "429 after retries", ctx: context.Background(), err: &mde.APIError{Status: 429}, wantFate: fateRetry},
		{name: "token outage retried", ctx: context.Background(), err: &mde.TokenError{Status: 503}, wantFate: fateRetry},
		{name: "network error retried", ctx: context.Background(), err: errors.New("connection reset"), wantFate: fateRetry},
		{name: "shutdown hands back", ctx: canceled, err: context.Canceled, wantFate: fateHandBack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := r.failure(tt.ctx, tt.err, a, nil)
			if d.fate != tt.wantFate || d.reason != tt.wantReason {
				t.Errorf("got fate %d reason %q, want %d %q", d.fate, d.reason, tt.wantFate, tt.wantReason)
			}
		})
	}
}

func TestProblemResult(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		wantHandled bool
		wantOutcome string
		wantCode    string
	}{
		{name: "too large", err: &download.Error{Kind: download.KindTooLarge}, wantHandled: true, wantOutcome: result.OutcomeTooLarge, wantCode: "too_large"},
		{name: "disallowed host", err: &download.Error{Kind: download.KindDisallowed}, wantHandled: true, wantOutcome: result.OutcomeError, wantCode: "download_refused"},
		{name: "still expired", err: &download.Error{Kind: download.KindExpired}, wantHandled: true, wantOutcome: result.OutcomeError, wantCode: "link_expired"},
		{name: "blob 404", err: &download.Error{Kind: download.KindStatus, Status: 404}, wantHandled: true, wantOutcome: result.OutcomeError, wantCode: "download_failed"},
		{name: "blob 503 is transient", err: &download.Error{Kind: download.KindStatus, Status: 503}},
		{name: "timeout is transient", err: &download.Error{Kind: download.KindTimeout}},
		{name: "no link for index", err: &mde.APIError{Status: 404}, wantHandled: true, wantOutcome: result.OutcomeError, wantCode: "no_result_link"},
		{name: "403 is for the action", err: &mde.APIError{Status: 403}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := &result.Event{}
			if got := problemResult(ev, tt.err); got != tt.wantHandled {
				t.Fatalf("handled = %v, want %v", got, tt.wantHandled)
			}
			if !tt.wantHandled {
				return
			}
			if ev.Outcome != tt.wantOutcome || ev.Problem == nil || ev.Problem.Code != tt.wantCode {
				t.Errorf("outcome %q problem %+v, want %q with code %q", ev.Outcome, ev.Problem, tt.wantOutcome, tt.wantCode)
			}
		})
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
