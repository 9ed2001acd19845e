package simulator

import (
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"time"
)

// tokenLogCap bounds the token request log kept for TokenRequests: enough for 1,000 tenants refreshing a
// hundred times each.
const tokenLogCap = 1 << 18

// TenantCounts are what the simulator saw of one tenant.
type TenantCounts struct {
	// TokenRequests counts the token requests that named the tenant; TokensIssued the successful ones.
	TokenRequests, TokensIssued int
	// LinksAdmitted and ActionsAdmitted count the calls the throttle let through (whatever came after:
	// an injected fault or a 404 still counts); LinksThrottled and ActionsThrottled the 429 answers.
	LinksAdmitted, LinksThrottled     int
	ActionsAdmitted, ActionsThrottled int
}

// TokenRequest is one request to the token endpoint for a known tenant.
type TokenRequest struct {
	// Tenant is the tenant id, lowercase.
	Tenant string
	// At is when the request arrived.
	At time.Time
	// Issued says whether a token was issued (false for a wrong secret or an injected token fault).
	Issued bool
}

// TenantCounts returns the counters of one tenant (zero for a tenant that made no request).
func (s *Simulator) TenantCounts(tenantID string) TenantCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.perTenant[strings.ToLower(tenantID)]; c != nil {
		return *c
	}
	return TenantCounts{}
}

// AllTenantCounts returns the counters of every tenant that made a request, keyed by lowercase tenant id.
func (s *Simulator) AllTenantCounts() map[string]TenantCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]TenantCounts, len(s.perTenant))
	for k, v := range s.perTenant {
		out[k] = *v
	}
	return out
}

// TokenRequests returns the token requests for known tenants, oldest first (the newest 262,144 at most):
// with their times a test can count token refreshes per second around a shared expiry.
func (s *Simulator) TokenRequests() []TokenRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRequest(nil), s.tokenLog...)
}

// SetTokenExpiry makes every token issued before until expire exactly at at, whatever TokenTTL says; tokens
// issued from until on (refreshes) live TokenTTL, as fresh tokens from Entra do. With until a few seconds
// into a load test and at a little later, every tenant's first token (in every process) dies in the same
// second, like the tokens of a fleet that started together: that is how a token-refresh burst shows. until
// after at is taken as at; the zero at turns it off.
func (s *Simulator) SetTokenExpiry(at, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if until.After(at) {
		until = at
	}
	s.tokenExpiresAt, s.tokenSharedUntil = at, until
}

// tokenExpiryLocked returns when a token issued at now expires.
func (s *Simulator) tokenExpiryLocked(now time.Time) time.Time {
	if !s.tokenExpiresAt.IsZero() && now.Before(s.tokenSharedUntil) {
		return s.tokenExpiresAt
	}
	return now.Add(s.tokenTTL)
}

// tenantLocked returns the counters of a known tenant, creating them on first use. Only tenants that make
// requests get an entry, so configured but idle tenants cost only their credentials.
func (s *Simulator) tenantLocked(tenant string) *TenantCounts {
	c := s.perTenant[tenant]
	if c == nil {
		c = &TenantCounts{}
		s.perTenant[tenant] = c
	}
	return c
}

// logTokenLocked records one token request of a known tenant.
func (s *Simulator) logTokenLocked(tenant string, at time.Time, issued bool) {
	c := s.tenantLocked(tenant)
	c.TokenRequests++
	if issued {
		c.TokensIssued++
	}
	if len(s.tokenLog) >= tokenLogCap {
		n := copy(s.tokenLog, s.tokenLog[len(s.tokenLog)-tokenLogCap/2:])
		s.tokenLog = s.tokenLog[:n]
	}
	s.tokenLog = append(s.tokenLog, TokenRequest{Tenant: tenant, At: at, Issued: issued})
}

// pruneTokensLocked forgets expired tokens. It walks the map only when it has doubled since the last walk,
// so that with many tenants issuing tokens the cost per token stays constant.
func (s *Simulator) pruneTokensLocked(now time.Time) {
	if len(s.tokens) < s.nextPrune {
		return
	}
	for k, t := range s.tokens {
		if !now.Before(t.expires) {
			delete(s.tokens, k)
		}
	}
	s.nextPrune = max(64, 2*len(s.tokens))
}

// GenerateTenants returns n tenants' credentials, reproducible for a seed: GUID tenant and client ids and a
// 32-character hex secret each. They are test credentials, meant for Config.ExtraTenants and for the
// relay's tenants file in load tests.
func GenerateTenants(n int, seed int64) []Credentials {
	rng := rand.New(rand.NewPCG(uint64(seed), 3))
	out := make([]Credentials, 0, max(n, 0))
	for range max(n, 0) {
		var secret [16]byte
		for i := range secret {
			secret[i] = byte(rng.Uint32())
		}
		out = append(out, Credentials{TenantID: NewGUID(rng), ClientID: NewGUID(rng), ClientSecret: hex.EncodeToString(secret[:])})
	}
	return out
}

// GenerateTenantActions is GenerateActions for one tenant: the actions carry tenantID, so only that
// tenant's token can see them, and another tenant's call for them gets 404.
func GenerateTenantActions(tenantID string, n, commandsPerAction, outputBytes int, seed int64) []Action {
	out := GenerateActions(n, commandsPerAction, outputBytes, seed)
	for i := range out {
		out[i].MachineAction.TenantID = tenantID
	}
	return out
}

// AddActions adds (or replaces) many actions at once, as AddAction does for one.
func (s *Simulator) AddActions(actions ...Action) {
	for _, a := range actions {
		s.AddAction(a)
	}
}
