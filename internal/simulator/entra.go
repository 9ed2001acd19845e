package simulator

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// handleOpenIDConfiguration serves GET /{tenant}/v2.0/.well-known/openid-configuration, the tenant
// discovery document that MSAL (inside azidentity) reads before its first token request to learn the token
// endpoint. The issuer is on the host the client called, as MSAL checks.
func (s *Simulator) handleOpenIDConfiguration(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	s.mu.Lock()
	s.stats.MetadataCalls++
	s.mu.Unlock()
	tenantID := r.PathValue("tenant")
	if _, ok := s.creds[strings.ToLower(tenantID)]; !ok {
		writeOAuthError(w, http.StatusBadRequest, "invalid_tenant", 90002, "AADSTS90002: Tenant '"+tenantID+"' not found.", now)
		return
	}
	base := baseURL(r) + "/" + url.PathEscape(tenantID)
	body, _ := json.Marshal(map[string]any{
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"device_authorization_endpoint":         base + "/oauth2/v2.0/devicecode",
		"issuer":                                base + "/v2.0",
		"jwks_uri":                              baseURL(r) + "/" + url.PathEscape(tenantID) + "/discovery/v2.0/keys",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"scopes_supported":                      []string{"openid", "profile", "email", "offline_access"},
		"tenant_region_scope":                   "NA",
		"cloud_instance_name":                   r.Host,
	})
	writeJSON(w, http.StatusOK, body)
}

// handleInstanceDiscovery serves GET /common/discovery/instance, which MSAL asks the authority host for
// when instance discovery is enabled and the host is one it trusts (the public and sovereign login hosts).
// The answer names the tenant discovery document of the authorization_endpoint's host and tenant.
func (s *Simulator) handleInstanceDiscovery(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	s.mu.Lock()
	s.stats.MetadataCalls++
	s.mu.Unlock()
	ae, err := url.Parse(r.URL.Query().Get("authorization_endpoint"))
	if err != nil || ae.Host == "" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_instance", 50049, "AADSTS50049: Unknown or invalid instance.", now)
		return
	}
	tenantID, _, _ := strings.Cut(strings.TrimPrefix(ae.Path, "/"), "/")
	body, _ := json.Marshal(map[string]any{
		"tenant_discovery_endpoint": "https://" + ae.Host + "/" + tenantID + "/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata": []map[string]any{{
			"preferred_network": ae.Host, "preferred_cache": ae.Host, "aliases": []string{ae.Host},
		}},
	})
	writeJSON(w, http.StatusOK, body)
}

// handleManagedIdentity serves GET /msi/token like App Service's managed identity endpoint (api-version
// 2019-08-01): the X-IDENTITY-HEADER secret, a resource (not a scope), an optional client_id for a
// user-assigned identity; the answer carries expires_on as Unix seconds.
func (s *Simulator) handleManagedIdentity(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	s.mu.Lock()
	s.stats.IdentityCalls++
	s.mu.Unlock()
	q := r.URL.Query()
	fail := func(status int, msg string) {
		body, _ := json.Marshal(map[string]any{"statusCode": status, "message": msg, "correlationId": newRequestID()})
		writeJSON(w, status, body)
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-IDENTITY-HEADER")), []byte(s.idHeader)) != 1 {
		fail(http.StatusUnauthorized, "The X-IDENTITY-HEADER header is missing or wrong.")
		return
	}
	resource := q.Get("resource")
	if resource == "" || strings.HasSuffix(resource, "/.default") {
		fail(http.StatusBadRequest, "A resource (not a scope) is required.")
		return
	}
	clientID := q.Get("client_id")
	var mi *ManagedIdentity
	for i := range s.mis {
		if (clientID == "" && s.mis[i].SystemAssigned) || (clientID != "" && strings.EqualFold(clientID, s.mis[i].ClientID)) {
			mi = &s.mis[i]
			break
		}
	}
	if mi == nil {
		fail(http.StatusBadRequest, "Unable to load the proper Managed Identity.")
		return
	}
	token := randomHex(32)
	s.mu.Lock()
	s.tokens[token] = issuedToken{tenant: strings.ToLower(mi.TenantID), expires: now.Add(s.tokenTTL)}
	s.stats.TokensIssued++
	s.mu.Unlock()
	body, _ := json.Marshal(map[string]string{
		"access_token": token,
		"expires_on":   strconv.FormatInt(now.Add(s.tokenTTL).Unix(), 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    mi.ClientID,
	})
	writeJSON(w, http.StatusOK, body)
}
