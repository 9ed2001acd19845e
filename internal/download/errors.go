package download

import (
	"net/http"
	"strconv"
	"strings"
)

// Kind classifies a download failure so that callers decide what to do (fetch a fresh link, retry later,
// give up) without looking at message text.
type Kind int

// The kinds of download failure. The zero Kind is not used by this package.
const (
	// KindExpired means the SAS link is no longer valid: Azure answered 403 AuthenticationFailed, or the
	// link's `se` expiry was already past before any call was made. Ask the MDE API for a fresh link; the
	// live response does not need to run again. Not Retryable with the same link.
	KindExpired Kind = iota + 1
	// KindDisallowed means the link (or a redirect) broke a rule: wrong scheme, host not allowed, user
	// info in the URL, too many redirects, or a host matched by a suffix rule that dialled a private
	// address. Permanent.
	KindDisallowed
	// KindTooLarge means the body is larger than Config.MaxBytes (announced or counted). Permanent.
	KindTooLarge
	// KindTimeout means a connect, response-header, idle-body or overall timeout (including the caller's
	// context deadline) fired. Retryable.
	KindTimeout
	// KindStatus means the storage service answered an unexpected HTTP status; Status and Code say which.
	// 5xx, 429 and 408 are Retryable, other 4xx are not.
	KindStatus
	// KindNetwork means the connection failed or broke (refused, reset, TLS failure, truncated body).
	// Retryable.
	KindNetwork
	// KindCanceled means the caller's context was canceled: normally shutdown. Not Retryable; errors.Is
	// the error with context.Canceled holds.
	KindCanceled
	// KindTooSlow means the body arrived slower than Config.MinRate, averaged over the last
	// Config.RateWindow spent waiting for the link (a slow drip). Retryable: the link may be fine later,
	// and a link that stays this slow is retried until the event is dead-lettered.
	KindTooSlow
)

// String returns a short lowercase name for the kind, suitable for logs and metric labels.
func (k Kind) String() string {
	switch k {
	case KindExpired:
		return "expired"
	case KindDisallowed:
		return "disallowed"
	case KindTooLarge:
		return "too_large"
	case KindTimeout:
		return "timeout"
	case KindStatus:
		return "status"
	case KindNetwork:
		return "network"
	case KindCanceled:
		return "canceled"
	case KindTooSlow:
		return "too_slow"
	default:
		return "unknown"
	}
}

// Error is every error this package returns from Open and from Body reads (except io.EOF). Its text
// never contains the SAS signature: URL is always Redact()ed and wrapped errors that would echo the link
// are rewritten.
type Error struct {
	// Kind is what the caller decides on.
	Kind Kind
	// Status is the HTTP status code, when the failure came from a response.
	Status int
	// Code is the Azure Storage error code from the XML error body (for example AuthenticationFailed,
	// BlobNotFound), when there was one.
	Code string
	// URL is the redacted link (or redirect target) the error is about.
	URL string
	// Err is the underlying cause, if any.
	Err error
}

// Error renders the failure as one lowercase line for logs.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("download ")
	b.WriteString(e.URL)
	b.WriteString(": ")
	b.WriteString(e.Kind.String())
	if e.Status != 0 {
		b.WriteString(" (status ")
		b.WriteString(strconv.Itoa(e.Status))
		if e.Code != "" {
			b.WriteString(" ")
			b.WriteString(e.Code)
		}
		b.WriteString(")")
	} else if e.Code != "" {
		b.WriteString(" (")
		b.WriteString(e.Code)
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap exposes the cause to errors.Is and errors.As.
func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether trying the same link again later may succeed. An expired link is not
// retryable as such: the caller must first obtain a fresh link.
func (e *Error) Retryable() bool {
	switch e.Kind {
	case KindTimeout, KindNetwork, KindTooSlow:
		return true
	case KindStatus:
		return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
	default:
		return false
	}
}

// redactedError stands in for an error whose text echoed a secret. It keeps no reference to the original,
// so neither Error() nor errors.Unwrap can lead back to the secret.
type redactedError struct{ msg string }

func (e *redactedError) Error() string { return e.msg }
