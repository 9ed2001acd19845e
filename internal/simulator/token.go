package simulator

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxTokenForm bounds the token request body.
const maxTokenForm = 64 << 10

// handleToken serves POST /{tenant}/oauth2/v2.0/token with the client credentials grant, answering errors
// the way Entra ID does (status, error, AADSTS code), so that golang.org/x/oauth2 and azidentity see what
// they would see in production. A client authenticates with a secret (in the form or as HTTP Basic
// authentication) or with a client_assertion: a JWT signed with a registered certificate, or a federated
// token from a trusted issuer (see checkAssertion).
func (s *Simulator) handleToken(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	// Every request for a known tenant goes into the tenant's counters and the token log, issued or not.
	tenantKey := strings.ToLower(r.PathValue("tenant"))
	issued := false
	if _, known := s.creds[tenantKey]; known {
		defer func() {
			s.mu.Lock()
			s.logTokenLocked(tenantKey, now, issued)
			s.mu.Unlock()
		}()
	}
	s.mu.Lock()
	s.stats.TokenCalls++
	f := s.faults.withDefaults()
	failed, unavailable := s.roll(f.Token), false
	if failed {
		unavailable = s.rng.IntN(2) == 1
		s.stats.FaultsInjected[FaultToken]++
	}
	s.mu.Unlock()
	if failed {
		s.log.Debug().Bool("unavailable", unavailable).Msg("token fault injected")
		if unavailable {
			writeOAuthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", 50196, "AADSTS50196: The server is temporarily unavailable. Try again later.", now)
		} else {
			writeOAuthError(w, http.StatusInternalServerError, "server_error", 90033, "AADSTS90033: A transient error has occurred. Please try again.", now)
		}
		return
	}

	r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", 900144, "AADSTS900144: The request body must contain the following parameter: 'grant_type'.", now)
		return
	}
	tenantID := r.PathValue("tenant")
	creds, ok := s.creds[strings.ToLower(tenantID)]
	if !ok {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", 90002, "AADSTS90002: Tenant '"+tenantID+"' not found.", now)
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "client_credentials" {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", 70003, "AADSTS70003: The app requested an unsupported grant type '"+gt+"'.", now)
		return
	}
	clientID, secret := r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	if u, p, basic := r.BasicAuth(); basic {
		// RFC 6749 2.3.1: Basic credentials are form-urlencoded before being joined.
		if uu, err := url.QueryUnescape(u); err == nil {
			u = uu
		}
		if pp, err := url.QueryUnescape(p); err == nil {
			p = pp
		}
		clientID, secret = u, p
	}
	scope := r.PostForm.Get("scope")
	assertion := r.PostForm.Get("client_assertion")
	switch {
	case clientID == "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", 900144, "AADSTS900144: The request body must contain the following parameter: 'client_id'.", now)
		return
	case scope == "":
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", 900144, "AADSTS900144: The request body must contain the following parameter: 'scope'.", now)
		return
	case !validScope(scope):
		writeOAuthError(w, http.StatusBadRequest, "invalid_scope", 1002012, "AADSTS1002012: The provided value for scope "+scope+" is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).", now)
		return
	case !strings.EqualFold(clientID, creds.ClientID):
		writeOAuthError(w, http.StatusBadRequest, "unauthorized_client", 700016, "AADSTS700016: Application with identifier '"+clientID+"' was not found in the directory '"+tenantID+"'.", now)
		return
	case assertion != "":
		if t := r.PostForm.Get("client_assertion_type"); t != assertionType {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", 90015, "AADSTS90015: Requested client_assertion_type '"+t+"' is not supported.", now)
			return
		}
		if secret != "" {
			writeOAuthError(w, http.StatusBadRequest, "invalid_request", 90025, "AADSTS90025: Only one client authentication method may be used.", now)
			return
		}
		if rej := s.checkAssertion(assertion, creds, tokenEndpoint(r), now); rej != nil {
			s.mu.Lock()
			s.stats.AssertionsRejected++
			s.mu.Unlock()
			s.log.Debug().Int("aadsts", rej.aadsts).Msg("client assertion rejected")
			writeOAuthError(w, rej.status, rej.code, rej.aadsts, fmt.Sprintf("AADSTS%d: %s", rej.aadsts, rej.msg), now)
			return
		}
	case creds.ClientSecret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(creds.ClientSecret)) != 1:
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", 7000215, "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.", now)
		return
	}

	s.issueToken(w, creds.TenantID, now)
	issued = true
}

// issueToken records and writes a new access token for tenantID.
func (s *Simulator) issueToken(w http.ResponseWriter, tenantID string, now time.Time) {
	token := randomHex(32)
	s.mu.Lock()
	s.pruneTokensLocked(now)
	expires := s.tokenExpiryLocked(now)
	s.tokens[token] = issuedToken{tenant: strings.ToLower(tenantID), expires: expires}
	s.stats.TokensIssued++
	s.mu.Unlock()
	// expires_in is whole seconds, rounded down (at least 1), so that the client never believes a token
	// lives longer than it does.
	ttl := max(expires.Sub(now)/time.Second*time.Second, time.Second)
	s.log.Debug().Str("tenant", tenantID).Float64("ttl_seconds", ttl.Seconds()).Msg("token issued")

	body, _ := json.Marshal(struct {
		TokenType    string `json:"token_type"`
		ExpiresIn    int64  `json:"expires_in"`
		ExtExpiresIn int64  `json:"ext_expires_in"`
		AccessToken  string `json:"access_token"`
	}{"Bearer", int64(ttl / time.Second), int64(ttl / time.Second), token})
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, body)
}

// writeOAuthError writes Entra ID's error body.
func writeOAuthError(w http.ResponseWriter, status int, code string, aadsts int, description string, now time.Time) {
	traceID := newRequestID()
	body, _ := json.Marshal(struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
		ErrorCodes       []int  `json:"error_codes"`
		Timestamp        string `json:"timestamp"`
		TraceID          string `json:"trace_id"`
		CorrelationID    string `json:"correlation_id"`
	}{code, description + "\r\nTrace ID: " + traceID + "\r\nTimestamp: " + now.UTC().Format("2006-01-02 15:04:05Z"),
		[]int{aadsts}, now.UTC().Format("2006-01-02 15:04:05Z"), traceID, newRequestID()})
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, body)
}

// validScope accepts what Entra ID accepts for the client credentials grant: exactly one resource scope
// ending in /.default, plus any of the OpenID Connect scopes MSAL adds (openid, profile, offline_access).
func validScope(scope string) bool {
	n := 0
	for _, sc := range strings.Fields(scope) {
		switch {
		case sc == "openid" || sc == "profile" || sc == "offline_access":
		case strings.HasSuffix(sc, "/.default"):
			n++
		default:
			return false
		}
	}
	return n == 1
}
