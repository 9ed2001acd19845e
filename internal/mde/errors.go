package mde

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// ErrBadResponse marks a 2xx answer the client could not use (invalid JSON, a missing link, a body over the
// size limit). It is permanent: asking again is unlikely to produce a different document.
var ErrBadResponse = errors.New("mde: unusable response")

// ErrInvalidArgument marks a call rejected before anything was sent (an id that is not a GUID, a negative
// index). It is permanent.
var ErrInvalidArgument = errors.New("mde: invalid argument")

// APIError is a non-2xx answer from the Defender API. Callers decide on Status and Code; Message is free text
// that Microsoft may change at any time, and Target is the support correlation id worth logging.
type APIError struct {
	// Op names the call: "get action" or "get result link".
	Op string
	// Status is the HTTP status code.
	Status int
	// Code is error.code from the body, or "" when the body was not the documented JSON.
	Code string
	// Message is error.message from the body, or a short sanitised snippet of a non-JSON body.
	Message string
	// Target is error.target, the request id Microsoft support asks for.
	Target string
	// RetryAfter is the parsed Retry-After of a 429 (the default when the header was missing or invalid).
	RetryAfter time.Duration
}

// Error describes the failure without any credential: the request never carries the token in the URL and the
// message is sanitised and stripped of the client's secrets before it gets here.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mde: %s: status %d", e.Op, e.Status)
	if e.Code != "" {
		fmt.Fprintf(&b, " code %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Target != "" {
		fmt.Fprintf(&b, " (target %s)", e.Target)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Retryable reports whether the same call may succeed later: server errors, request timeouts and throttling.
// A 429 reaches the caller only once the client's own throttle retries are used up, and the tenant's limiter
// is already paused by then. Everything else (400, 401 after one refresh, 403, 404) is permanent.
func (e *APIError) Retryable() bool {
	return e.Status >= 500 || e.Status == http.StatusRequestTimeout || e.Status == http.StatusTooManyRequests
}

// TokenError is a failure to obtain an access token. It carries only the HTTP status and the OAuth2 `error`
// code (plus an AADSTS number when Entra sent one), never the token endpoint's body: that body is free text
// that could echo request parameters, and the request carries the client secret.
type TokenError struct {
	// Status is the token endpoint's HTTP status, or 0 when no answer arrived (network failure).
	Status int
	// Code is the OAuth2 error code, such as "invalid_client", or "". A credential file that cannot be
	// used (missing, not a certificate, wrong password) has the code "credential_file_unusable".
	Code string
	// AADSTS is Entra ID's error number (7000215 for a wrong secret), or 0.
	AADSTS int
	// Err is the sanitised cause.
	Err error
	// rejected marks a refusal recognised by its source rather than by code (a managed identity endpoint
	// that does not know the identity).
	rejected bool
}

// Error describes the failure; see the type comment for why it never includes the endpoint's body.
func (e *TokenError) Error() string {
	var b strings.Builder
	b.WriteString("mde: get token")
	if e.Status != 0 {
		fmt.Fprintf(&b, ": status %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " code %s", e.Code)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap returns the sanitised cause.
func (e *TokenError) Unwrap() error { return e.Err }

// Retryable reports whether a later attempt may succeed: no answer at all (network), 5xx, 408 and 429 are
// transient; 400 and 401 mean wrong tenant, client id or secret, which only the operator can fix.
func (e *TokenError) Retryable() bool {
	if e.CredentialsRejected() {
		return false
	}
	switch {
	case e.Status == 0:
		return isTransient(e.Err)
	case e.Status >= 500, e.Status == http.StatusRequestTimeout, e.Status == http.StatusTooManyRequests:
		return true
	}
	return false
}

// CredentialsRejected reports whether the error means the tenant's credentials are refused: the secret,
// certificate, federated token or managed identity is wrong, expired, revoked or unknown, or a credential
// file cannot be used. Only the operator can fix that, so such errors are never Retryable; the relay holds
// the tenant's events back instead of dead-lettering them, and the client paces further token requests.
func (e *TokenError) CredentialsRejected() bool {
	if e.rejected || e.Code == codeCredentialFile {
		return true
	}
	switch e.Code {
	case "invalid_client", "unauthorized_client":
		return true
	}
	return rejectedAADSTS(e.AADSTS)
}

// rejectedAADSTS lists the Entra ID error numbers that mean the credentials themselves are refused, whatever
// OAuth2 error code comes with them.
func rejectedAADSTS(n int) bool {
	switch n {
	case 7000215, // invalid client secret
		7000222, // client secret expired
		7000112, // application disabled
		700016,  // application not found in the tenant
		90002,   // tenant not found
		700027,  // assertion signature invalid, or certificate not registered or expired
		700024,  // assertion not within its valid time range
		700021,  // assertion issuer or subject is not the client id
		700023,  // assertion audience is not the token endpoint
		50027,   // malformed JWT
		50013,   // federated token signature invalid
		70021,   // no matching federated identity record
		700211,  // federated: issuer does not match
		700212,  // federated: audience does not match
		700213:  // federated: subject does not match
		return true
	}
	return false
}

// timeoutError marks a request that ran out of the client's own per-request timeout while the caller's
// context was still alive. That is a transient failure, unlike the caller giving up.
type timeoutError struct {
	op      string
	timeout time.Duration
	err     error
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("mde: %s: no answer within %s: %v", e.op, e.timeout, e.err)
}

func (e *timeoutError) Unwrap() error { return e.err }

// isTransient classifies transport-level failures.
func isTransient(err error) bool {
	if err == nil {
		return false
	}
	var te *timeoutError
	if errors.As(err, &te) {
		return true
	}
	// Checked before net.Error: a context deadline also satisfies net.Error's Timeout().
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var dns *net.DNSError
	if errors.As(err, &dns) && (dns.IsTimeout || dns.IsTemporary) {
		return true
	}
	// A server that closes a kept-alive connection without answering surfaces as io.EOF inside *url.Error.
	var ue *url.Error
	if errors.As(err, &ue) && errors.Is(err, io.EOF) {
		return true
	}
	return false
}

// isTimeout reports whether err is some kind of timeout (a context deadline or a network timeout). Callers
// check that their own context is still alive before treating it as the client's timeout.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
