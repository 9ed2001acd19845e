package command

import (
	"context"
	"errors"
	"testing"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/download"
	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/internal/result"
)

func TestDownloadFailureTypes(t *testing.T) {
	tests := []struct {
		name        string
		err         error
		wantProblem bool
		wantOutcome string
		wantCode    string
	}{
		{name: "too large", err: &download.Error{Kind: download.KindTooLarge}, wantProblem: true, wantOutcome: result.OutcomeTooLarge, wantCode: "too_large"},
		{name: "disallowed host", err: &download.Error{Kind: download.KindDisallowed}, wantProblem: true, wantOutcome: result.OutcomeError, wantCode: "download_refused"},
		{name: "still expired", err: &download.Error{Kind: download.KindExpired}, wantProblem: true, wantOutcome: result.OutcomeError, wantCode: "link_expired"},
		{name: "blob 404", err: &download.Error{Kind: download.KindStatus, Status: 404}, wantProblem: true, wantOutcome: result.OutcomeError, wantCode: "download_failed"},
		{name: "blob 503 is transient", err: &download.Error{Kind: download.KindStatus, Status: 503}},
		{name: "timeout is transient", err: &download.Error{Kind: download.KindTimeout}},
		{name: "shutdown is not the command's problem", err: &download.Error{Kind: download.KindCanceled}},
		{name: "not a download error", err: errors.New("object store unavailable")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pe *ProblemError
			got := errors.As(downloadFailure(tt.err), &pe)
			if got != tt.wantProblem {
				t.Fatalf("problem = %v, want %v", got, tt.wantProblem)
			}
			if got && (pe.Outcome != tt.wantOutcome || pe.Code != tt.wantCode) {
				t.Errorf("problem %s/%s, want %s/%s", pe.Outcome, pe.Code, tt.wantOutcome, tt.wantCode)
			}
		})
	}
}

func TestAPIFailureTypes(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantReason string // "" when the error must pass through
	}{
		{name: "404", err: &mde.APIError{Status: 404, Target: "t1"}, wantReason: ReasonActionNotFound},
		{name: "403", err: &mde.APIError{Status: 403}, wantReason: ReasonForbidden},
		{name: "400", err: &mde.APIError{Status: 400}, wantReason: ReasonPermanentAPIError},
		{name: "malformed answer", err: errors.Join(mde.ErrBadResponse, errors.New("decoding")), wantReason: ReasonPermanentAPIError},
		{name: "500 passes", err: &mde.APIError{Status: 500}},
		{name: "429 passes", err: &mde.APIError{Status: 429}},
		{name: "token outage passes", err: &mde.TokenError{Status: 503}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := apiFailure(tt.err)
			var ae *ActionError
			if tt.wantReason == "" {
				if errors.As(got, &ae) || got != tt.err {
					t.Fatalf("got %v, want the error passed through", got)
				}
				return
			}
			if !errors.As(got, &ae) || ae.Reason != tt.wantReason {
				t.Fatalf("got %v, want an ActionError %q", got, tt.wantReason)
			}
		})
	}
}

// fakeAPI answers the link call with linkErr and the action call with actionErr.
type fakeAPI struct {
	linkErr, actionErr  error
	linkCalls, actCalls int
}

func (f *fakeAPI) GetAction(_ context.Context, id string) (*action.MachineAction, error) {
	f.actCalls++
	if f.actionErr != nil {
		return nil, f.actionErr
	}
	return &action.MachineAction{ID: id}, nil
}

func (f *fakeAPI) GetResultLink(context.Context, string, int) (string, error) {
	f.linkCalls++
	return "", f.linkErr
}

// A 404 on the link call is confirmed with the action call: an unknown action is dead-lettered, a known one
// gets a result that says there is no result link.
func TestLinkNotFoundIsConfirmed(t *testing.T) {
	a := &action.MachineAction{ID: "0b2f7a1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"}
	c := action.Command{Index: 0, CommandStatus: action.StatusCompleted, Command: action.CommandSpec{Type: action.TypeRunScript}}
	notFound := &mde.APIError{Status: 404, Code: "ResourceNotFound"}
	p := New(nil, nil, Options{PreviewBytes: 16, Version: "test"}, nopLog)

	unknown := &fakeAPI{linkErr: notFound, actionErr: notFound}
	_, err := p.Result(context.Background(), Tenant{Name: "t", API: unknown}, a, c)
	var ae *ActionError
	if !errors.As(err, &ae) || ae.Reason != ReasonActionNotFound {
		t.Errorf("unknown action: %v, want action_not_found", err)
	}
	if unknown.actCalls != 1 {
		t.Errorf("unknown action: %d action calls, want 1", unknown.actCalls)
	}

	known := &fakeAPI{linkErr: notFound}
	ev, err := p.Result(context.Background(), Tenant{Name: "t", API: known}, a, c)
	var pe *ProblemError
	if !errors.As(err, &pe) || pe.Code != "no_result_link" {
		t.Fatalf("known action: %v, want problem no_result_link", err)
	}
	if ev = p.Describe(ev, pe); ev.Outcome != result.OutcomeError || ev.Problem.Code != "no_result_link" {
		t.Errorf("described result: outcome %q problem %+v", ev.Outcome, ev.Problem)
	}

	outage := &fakeAPI{linkErr: notFound, actionErr: &mde.APIError{Status: 503}}
	_, err = p.Result(context.Background(), Tenant{Name: "t", API: outage}, a, c)
	if errors.As(err, &ae) || errors.As(err, &pe) {
		t.Errorf("action call failing transiently: %v, want the transient error", err)
	}
}
