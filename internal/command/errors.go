package command

import (
	"errors"

	"github.com/lr-relay/lr-relay/internal/download"
	"github.com/lr-relay/lr-relay/internal/mde"
	"github.com/lr-relay/lr-relay/internal/result"
)

// The errors of Result and Complete say what they mean by their type, so that the relay decides a
// message's fate in one place without knowing the API, the downloader or the parsers:
//   - *ProblemError: this command has no content to relay, for good (a refused link, a file over the caps, a
//     link that kept expiring, no result for this index). A result event describing it is published.
//   - *ActionError: the whole action cannot be relayed, for good (it does not exist, access is forbidden, the
//     API answered something unusable). The event is dead-lettered with Reason.
//   - errors with CredentialsRejected() == true (*mde.TokenError): the tenant's credentials are wrong; the
//     tenant's events wait for the operator, they are not dead-lettered.
//   - anything else says for itself whether it is worth a retry with Retryable() (API 5xx and 429,
//     timeouts, broken connections, the object store).

// ProblemError is a command-level failure that a result event describes instead of content.
type ProblemError struct {
	// Outcome is the result's outcome (result.OutcomeError or result.OutcomeTooLarge).
	Outcome string
	// Code is the result's problem code.
	Code string
	Err  error
}

func (e *ProblemError) Error() string   { return e.Err.Error() }
func (e *ProblemError) Unwrap() error   { return e.Err }
func (e *ProblemError) Retryable() bool { return false }

// Dead-letter reasons of ActionError (schemas/deadletter.schema.json).
const (
	ReasonActionNotFound    = "action_not_found"
	ReasonForbidden         = "forbidden"
	ReasonPermanentAPIError = "permanent_api_error"
)

// ActionError is a permanent failure of the whole action.
type ActionError struct {
	// Reason is the dead-letter reason.
	Reason string
	// Target is the MDE error target (the support correlation id), when the API gave one.
	Target string
	Err    error
}

func (e *ActionError) Error() string   { return e.Err.Error() }
func (e *ActionError) Unwrap() error   { return e.Err }
func (e *ActionError) Retryable() bool { return false }

// apiFailure types an error of the Defender API client. Retryable API answers and credential failures pass
// through as they are; permanent answers become an *ActionError.
func apiFailure(err error) error {
	var ae *mde.APIError
	switch {
	case errors.As(err, &ae) && ae.Retryable():
		return err
	case errors.As(err, &ae):
		reason := ReasonPermanentAPIError
		switch ae.Status {
		case 404:
			reason = ReasonActionNotFound
		case 403:
			reason = ReasonForbidden
		}
		return &ActionError{Reason: reason, Target: ae.Target, Err: err}
	case errors.Is(err, mde.ErrBadResponse), errors.Is(err, mde.ErrInvalidArgument):
		return &ActionError{Reason: ReasonPermanentAPIError, Err: err}
	}
	return err
}

// downloadFailure types an error of a download (or of reading its body while parsing). Retryable ones pass
// through; the rest become a problem that the result describes.
func downloadFailure(err error) error {
	var de *download.Error
	if !errors.As(err, &de) {
		return err
	}
	switch {
	case de.Kind == download.KindCanceled:
		return err // the caller stopped (shutdown): not the command's problem
	case de.Kind == download.KindTooLarge:
		return &ProblemError{Outcome: result.OutcomeTooLarge, Code: "too_large", Err: err}
	case de.Kind == download.KindDisallowed:
		return &ProblemError{Outcome: result.OutcomeError, Code: "download_refused", Err: err}
	case de.Kind == download.KindExpired:
		return &ProblemError{Outcome: result.OutcomeError, Code: "link_expired", Err: err}
	case !de.Retryable():
		return &ProblemError{Outcome: result.OutcomeError, Code: "download_failed", Err: err}
	}
	return err
}
