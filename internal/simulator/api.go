package simulator

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/lr-relay/lr-relay/internal/action"
)

// The @odata.context values the real API sends; their host differs from the one called, as in production.
const (
	odataString = "https://api.securitycenter.microsoft.com/api/$metadata#Edm.String"
	odataAction = "https://api.securitycenter.microsoft.com/api/$metadata#MachineActions/$entity"
)

// handleAction serves GET /api/machineactions/{id}.
func (s *Simulator) handleAction(w http.ResponseWriter, r *http.Request) {
	tenant, ok := s.gate(w, r, EndpointActions)
	if !ok {
		return
	}
	id := r.PathValue("id")
	a, found := s.lookup(id, tenant)
	switch {
	case !found:
		s.writeAPIError(w, http.StatusNotFound, "ResourceNotFound", fmt.Sprintf("MachineAction with id %s was not found", id))
		return
	case a.Forbidden:
		s.writeAPIError(w, http.StatusForbidden, "Forbidden", "The application does not have the permission required for this operation.")
		return
	}
	body, err := actionJSON(a.MachineAction)
	if err != nil {
		s.log.Error().Err(err).Str("action_id", id).Msg("cannot encode machine action")
		s.writeAPIError(w, http.StatusInternalServerError, "InternalServerError", "An unexpected error occurred.")
		return
	}
	s.log.Debug().Str("action_id", id).Str("tenant", tenant).Msg("machine action served")
	writeJSON(w, http.StatusOK, body)
}

// handleLink serves GET /api/machineactions/{id}/GetLiveResponseResultDownloadLink(index=N).
func (s *Simulator) handleLink(w http.ResponseWriter, r *http.Request) {
	tenant, ok := s.gate(w, r, EndpointLinks)
	if !ok {
		return
	}
	id := r.PathValue("id")
	index, err := parseLinkFunction(r.PathValue("fn"))
	if err != nil {
		s.writeAPIError(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	a, found := s.lookup(id, tenant)
	if !found {
		s.writeAPIError(w, http.StatusNotFound, "ResourceNotFound", fmt.Sprintf("MachineAction with id %s was not found", id))
		return
	}
	if a.Forbidden {
		s.writeAPIError(w, http.StatusForbidden, "Forbidden", "The application does not have the permission required for this operation.")
		return
	}
	cmd, found := findCommand(a.MachineAction, index)
	if !found {
		s.writeAPIError(w, http.StatusNotFound, "ResourceNotFound", fmt.Sprintf("Command with index %d was not found in machine action %s", index, id))
		return
	}
	if !cmd.NeedsResult() {
		s.writeAPIError(w, http.StatusBadRequest, "BadRequest",
			fmt.Sprintf("No live response result is available for command %d (type %s, status %s)", index, cmd.Command.Type, cmd.CommandStatus))
		return
	}
	if _, has := a.Results[index]; !has {
		s.writeAPIError(w, http.StatusNotFound, "ResourceNotFound", fmt.Sprintf("Live response result of command %d was not found", index))
		return
	}

	now := time.Now()
	expires := now.Add(s.linkTTL)
	s.mu.Lock()
	f := s.faults.withDefaults()
	early := s.roll(f.Expire)
	if early {
		expires = now.Add(f.ExpireTTL)
		s.stats.FaultsInjected[FaultExpire]++
	}
	s.mu.Unlock()

	link := s.signedLink(r, a.MachineAction.ID, index, expires)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct {
		Context string `json:"@odata.context"`
		Value   string `json:"value"`
	}{odataString, link})
	s.log.Debug().Str("action_id", id).Int("index", index).Str("tenant", tenant).Bool("expire_fault", early).
		Time("expires", expires).Msg("download link issued")
	writeJSON(w, http.StatusOK, buf.Bytes())
}

// handleUnknown answers every other path the way the API answers an unknown resource.
func (s *Simulator) handleUnknown(w http.ResponseWriter, r *http.Request) {
	// The tenant discovery document cannot be a mux pattern: "/{tenant}/v2.0/.well-known/..." overlaps the
	// blob paths with neither more specific.
	if tenant, ok := strings.CutSuffix(r.URL.Path, "/v2.0/.well-known/openid-configuration"); ok && r.Method == http.MethodGet &&
		strings.Count(tenant, "/") == 1 && len(tenant) > 1 {
		r.SetPathValue("tenant", tenant[1:])
		s.handleOpenIDConfiguration(w, r)
		return
	}
	s.writeAPIError(w, http.StatusNotFound, "ResourceNotFound", "The requested resource was not found: "+r.URL.Path)
}

// gate applies, in the real service's order, what every API call goes through: counting, authentication,
// the throttle (or a storm), and then the call faults. It answers the call itself and returns false when
// the call must go no further.
func (s *Simulator) gate(w http.ResponseWriter, r *http.Request, ep Endpoint) (string, bool) {
	now := time.Now()
	s.mu.Lock()
	if ep == EndpointLinks {
		s.stats.LinkCalls++
	} else {
		s.stats.ActionCalls++
	}
	tenant, authed := s.checkTokenLocked(r.Header.Get("Authorization"), now)
	if !authed {
		s.stats.Unauthorized++
		s.mu.Unlock()
		s.log.Debug().Str("endpoint", string(ep)).Msg("unauthorized call")
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		s.writeAPIError(w, http.StatusUnauthorized, "Unauthorized", "Authorization has been denied for this request.")
		return "", false
	}
	f := s.faults.withDefaults()
	l := s.throttles[throttleKey{tenant, ep}]
	if l == nil {
		l = &slidingLog{}
		s.throttles[throttleKey{tenant, ep}] = l
	}
	var v verdict
	storm := !now.Before(l.retryUntil) && s.roll(f.Storm)
	if storm {
		v = l.storm(now, f.StormRetryAfter)
		s.stats.FaultsInjected[FaultStorm]++
	} else {
		v = l.admit(now, s.windows[ep])
	}
	counts := s.tenantLocked(tenant)
	if !v.admitted {
		if ep == EndpointLinks {
			counts.LinksThrottled++
		} else {
			counts.ActionsThrottled++
		}
		s.stats.Throttled++
		if v.duringRetry {
			s.stats.CallsDuringRetryAfter++
		}
		s.mu.Unlock()
		s.log.Debug().Str("endpoint", string(ep)).Str("tenant", tenant).Bool("storm", storm).
			Bool("during_retry_after", v.duringRetry).Float64("retry_after_seconds", v.retryAfter.Seconds()).Msg("call throttled")
		w.Header().Set("Retry-After", strconv.FormatInt(int64(v.retryAfter/time.Second), 10))
		s.writeAPIError(w, http.StatusTooManyRequests, "TooManyRequests",
			"Rate limit is exceeded. Try again in "+strconv.FormatInt(int64(v.retryAfter/time.Second), 10)+" seconds.")
		return "", false
	}
	if ep == EndpointLinks {
		counts.LinksAdmitted++
	} else {
		counts.ActionsAdmitted++
	}
	fault := s.rollCallFaultLocked(f)
	s.mu.Unlock()
	if fault == "" {
		return tenant, true
	}
	s.log.Debug().Str("endpoint", string(ep)).Str("tenant", tenant).Str("fault", fault).Msg("fault injected")
	switch fault {
	case FaultServerError:
		s.writeAPIError(w, http.StatusInternalServerError, "InternalServerError", "An unexpected error occurred.")
	case FaultReset:
		resetConn(w)
	case FaultTimeout:
		if s.hang(r.Context(), f.TimeoutAfter) {
			s.writeAPIError(w, http.StatusGatewayTimeout, "GatewayTimeout", "The operation timed out.")
		} else {
			// Returning silently would send an empty 200; a client still waiting must see a failure.
			resetConn(w)
		}
	}
	return "", false
}

// checkTokenLocked returns the tenant of a valid, unexpired bearer token.
func (s *Simulator) checkTokenLocked(authorization string, now time.Time) (string, bool) {
	scheme, tok, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	t, ok := s.tokens[strings.TrimSpace(tok)]
	if !ok || !now.Before(t.expires) {
		return "", false
	}
	return t.tenant, true
}

// roll draws one fault decision. A zero probability draws nothing, so enabling one fault does not shift
// the sequence of another's decisions more than necessary.
func (s *Simulator) roll(p float64) bool {
	return p > 0 && s.rng.Float64() < p
}

// rollCallFaultLocked decides the 5xx/reset/timeout fault of one call, continuing a 5xx burst first.
func (s *Simulator) rollCallFaultLocked(f Faults) string {
	var fault string
	switch {
	case s.burstLeft > 0:
		s.burstLeft--
		fault = FaultServerError
	case s.roll(f.ServerError):
		s.burstLeft = f.ServerErrorBurst - 1
		fault = FaultServerError
	case s.roll(f.Reset):
		fault = FaultReset
	case s.roll(f.Timeout):
		fault = FaultTimeout
	default:
		return ""
	}
	s.stats.FaultsInjected[fault]++
	return fault
}

// hang blocks until the client gives up, the simulator closes, or after (when positive) passes; it
// reports whether after passed, in which case the caller still answers, and otherwise the caller drops
// the connection.
func (s *Simulator) hang(ctx context.Context, after time.Duration) bool {
	var timeout <-chan time.Time
	if after > 0 {
		t := time.NewTimer(after)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	case <-timeout:
		return true
	}
}

// resetConn closes the connection abruptly. With SO_LINGER 0 the peer sees a TCP RST, like a proxy or load
// balancer dropping the connection. Where hijacking is impossible (HTTP/2), net/http's documented
// ErrAbortHandler panic is the only way to abort the stream; the server recovers it silently.
func resetConn(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// lookup finds an action visible to tenant.
func (s *Simulator) lookup(id, tenant string) (Action, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.actions[strings.ToLower(id)]
	if !ok || (a.MachineAction.TenantID != "" && !strings.EqualFold(a.MachineAction.TenantID, tenant)) {
		return Action{}, false
	}
	return a, true
}

func findCommand(ma action.MachineAction, index int) (action.Command, bool) {
	for _, c := range ma.Commands {
		if c.Index == index {
			return c, true
		}
	}
	return action.Command{}, false
}

// parseLinkFunction parses "GetLiveResponseResultDownloadLink(index=N)".
func parseLinkFunction(fn string) (int, error) {
	const name = "GetLiveResponseResultDownloadLink("
	if len(fn) < len(name) || !strings.EqualFold(fn[:len(name)], name) || !strings.HasSuffix(fn, ")") {
		return 0, fmt.Errorf("unknown function %q", fn)
	}
	arg := strings.TrimSpace(fn[len(name) : len(fn)-1])
	key, value, ok := strings.Cut(arg, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(key), "index") {
		return 0, fmt.Errorf("parameter index is required")
	}
	index, err := strconv.Atoi(strings.TrimSpace(value))
	if err != nil || index < 0 {
		return 0, fmt.Errorf("parameter index must be a non-negative integer")
	}
	return index, nil
}

// actionJSON renders a machine action as the API does: without the SOAR's tenantId, with the fields the
// relay does not model (null or default) and with an errors array on every command.
func actionJSON(ma action.MachineAction) ([]byte, error) {
	raw, err := json.Marshal(ma)
	if err != nil {
		return nil, fmt.Errorf("encode machine action: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decode machine action: %w", err)
	}
	delete(m, "tenantId")
	defaults := map[string]any{
		"@odata.context": odataAction, "scope": nil, "externalId": nil, "requestSource": "PublicApi",
		"errorHResult": 0, "title": nil, "troubleshootInfo": nil, "relatedFileInfo": nil,
		"cancellationRequestor": nil, "cancellationComment": nil, "cancellationDateTimeUtc": nil,
		"commands": []any{},
	}
	for k, v := range defaults {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	if cmds, ok := m["commands"].([]any); ok {
		for _, c := range cmds {
			if cm, ok := c.(map[string]any); ok {
				if _, ok := cm["errors"]; !ok {
					cm["errors"] = []any{}
				}
			}
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, fmt.Errorf("encode machine action: %w", err)
	}
	return buf.Bytes(), nil
}

// writeAPIError writes the MDE error body; target is a fresh request id, as the service's correlation id.
func (s *Simulator) writeAPIError(w http.ResponseWriter, status int, code, message string) {
	type detail struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Target  string `json:"target"`
	}
	body, _ := json.Marshal(struct {
		Error detail `json:"error"`
	}{detail{code, message, newRequestID()}})
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// newRequestID returns a random GUID from crypto/rand, outside the seeded fault sequence.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return formatGUID(b)
}

// randomHex returns n random bytes as lowercase hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// signedLink builds the SAS-style link of one result, on the host the client called.
func (s *Simulator) signedLink(r *http.Request, id string, index int, expires time.Time) string {
	name := randomHex(16)
	se := expires.UTC().Truncate(time.Second).Format(time.RFC3339)
	sig := s.sign(id, strconv.Itoa(index), name, se, sasPermissions, sasVersion, sasResource)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: r.Host, Path: "/blob/" + id + "/" + strconv.Itoa(index) + "/" + name}
	return u.String() + "?se=" + url.QueryEscape(se) + "&sp=" + sasPermissions + "&sv=" + sasVersion +
		"&sr=" + sasResource + "&sig=" + url.QueryEscape(sig)
}
