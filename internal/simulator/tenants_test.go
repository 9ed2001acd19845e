package simulator

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// TestCrossTenantIsNotFound checks that an action belongs to its tenant: another tenant's token gets 404 from
// both the action and the link endpoint (as from the real API, which never says the action exists elsewhere),
// the owner gets 200, and an action without tenant is visible to everyone.
func TestCrossTenantIsNotFound(t *testing.T) {
	tenants := GenerateTenants(3, 1)
	e := newEnv(t, Config{ExtraTenants: tenants})
	owner, other := tenants[0], tenants[1]
	owned := GenerateTenantActions(owner.TenantID, 1, 2, 16, 5)[0]
	shared := GenerateActions(1, 1, 16, 6)[0]
	e.sim.AddActions(owned, shared)
	tokOwner := e.tokenFor(owner.TenantID, owner.ClientID, owner.ClientSecret)
	tokOther := e.tokenFor(other.TenantID, other.ClientID, other.ClientSecret)
	// A tenant id in another case is the same tenant.
	tokOwnerUpper := e.tokenFor(strings.ToUpper(owner.TenantID), owner.ClientID, owner.ClientSecret)

	id, sharedID := owned.MachineAction.ID, shared.MachineAction.ID
	tests := []struct {
		name       string
		url, token string
		wantStatus int
	}{
		{"owner reads the action", e.actionURL(id), tokOwner, http.StatusOK},
		{"owner gets a link", e.linkURL(id, 1), tokOwner, http.StatusOK},
		{"owner with upper-case tenant id gets a link", e.linkURL(id, 0), tokOwnerUpper, http.StatusOK},
		{"other tenant reads the action", e.actionURL(id), tokOther, http.StatusNotFound},
		{"other tenant asks for a link", e.linkURL(id, 0), tokOther, http.StatusNotFound},
		{"other tenant asks for another index", e.linkURL(id, 1), tokOther, http.StatusNotFound},
		{"untagged action: any tenant reads it", e.actionURL(sharedID), tokOther, http.StatusOK},
		{"untagged action: any tenant gets a link", e.linkURL(sharedID, 0), tokOther, http.StatusOK},
		{"default tenant asks for a link of a generated tenant's action", e.linkURL(id, 0), e.token(), http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := e.get(tt.url, tt.token)
			if status != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", status, tt.wantStatus, body)
			}
			if status == http.StatusNotFound {
				if code := apiErrorCode(t, body); code != "ResourceNotFound" {
					t.Errorf("code = %q, want ResourceNotFound", code)
				}
				if strings.Contains(string(body), owner.TenantID) {
					t.Errorf("the 404 names the owning tenant: %s", body)
				}
			}
		})
	}
	// The 404s were admitted by the throttle (they are calls the real API counts) and charged to the caller.
	if got := e.sim.TenantCounts(other.TenantID); got.LinksAdmitted != 3 || got.ActionsAdmitted != 2 {
		t.Errorf("other tenant's counts = %+v, want 3 link and 2 action calls admitted", got)
	}
	if got := e.sim.TenantCounts(owner.TenantID); got.LinksAdmitted != 2 || got.ActionsAdmitted != 1 {
		t.Errorf("owner's counts = %+v, want 2 link and 1 action calls admitted", got)
	}
}

// TestTenantCountsAndWindowsAreSeparate checks that each tenant has its own sliding windows and counters: one
// tenant exhausting its budget meets 429s while the next is still admitted.
func TestTenantCountsAndWindowsAreSeparate(t *testing.T) {
	tenants := GenerateTenants(2, 2)
	e := newEnv(t, Config{ExtraTenants: tenants, LinkLimits: "3/1h"})
	a, b := tenants[0], tenants[1]
	actA := GenerateTenantActions(a.TenantID, 1, 1, 16, 7)[0]
	actB := GenerateTenantActions(b.TenantID, 1, 1, 16, 8)[0]
	e.sim.AddActions(actA, actB)
	tokA := e.tokenFor(a.TenantID, a.ClientID, a.ClientSecret)
	tokB := e.tokenFor(b.TenantID, b.ClientID, b.ClientSecret)
	for i := range 5 {
		status, _, _ := e.get(e.linkURL(actA.MachineAction.ID, 0), tokA)
		want := http.StatusOK
		if i >= 3 {
			want = http.StatusTooManyRequests
		}
		if status != want {
			t.Fatalf("tenant A call %d: status %d, want %d", i+1, status, want)
		}
	}
	if status, _, _ := e.get(e.linkURL(actB.MachineAction.ID, 0), tokB); status != http.StatusOK {
		t.Fatalf("tenant B after A's budget ran out: status %d, want 200", status)
	}
	want := map[string]TenantCounts{
		strings.ToLower(a.TenantID): {TokenRequests: 1, TokensIssued: 1, LinksAdmitted: 3, LinksThrottled: 2},
		strings.ToLower(b.TenantID): {TokenRequests: 1, TokensIssued: 1, LinksAdmitted: 1},
	}
	got := e.sim.AllTenantCounts()
	if len(got) != len(want) {
		t.Errorf("AllTenantCounts has %d tenants, want %d (only tenants that made requests): %+v", len(got), len(want), got)
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("tenant %s: counts = %+v, want %+v", id, got[id], w)
		}
	}
	if got := len(e.sim.Admitted(a.TenantID, EndpointLinks)); got != 3 {
		t.Errorf("Admitted(A) holds %d calls, want 3", got)
	}
}

// TestSharedTokenExpiry checks SetTokenExpiry: tokens issued before "until" expire at the shared moment
// (expires_in says so, rounded down), later ones live TokenTTL, and every request is in the token log with its
// tenant and time.
func TestSharedTokenExpiry(t *testing.T) {
	clock := &stepClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	tenants := GenerateTenants(3, 3)
	e := newEnv(t, Config{ExtraTenants: tenants, TokenTTL: time.Hour, Clock: clock.Now})
	start := clock.Now()
	at := start.Add(30 * time.Second)
	e.sim.SetTokenExpiry(at, start.Add(20*time.Second))

	lifetime := func(c Credentials) (string, time.Duration) {
		t.Helper()
		cc := clientcredentials.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret,
			TokenURL: e.srv.URL + "/" + c.TenantID + "/oauth2/v2.0/token", Scopes: []string{"x/.default"}}
		tok, err := cc.Token(context.Background())
		if err != nil {
			t.Fatalf("token for %s: %v", c.TenantID, err)
		}
		v, _ := tok.Extra("expires_in").(float64)
		return tok.AccessToken, time.Duration(v) * time.Second
	}
	var toks []string
	for i, c := range tenants {
		clock.Advance(time.Duration(i)*5*time.Second + 300*time.Millisecond)
		tok, life := lifetime(c)
		if want := at.Sub(clock.Now()).Truncate(time.Second); life != want {
			t.Errorf("tenant %d: expires_in = %s, want %s (until the shared expiry, rounded down)", i, life, want)
		}
		toks = append(toks, tok)
	}
	// Every one of them dies at the shared moment. (The API's check of a token's expiry is tested elsewhere.)
	e.sim.mu.Lock()
	for i, tok := range toks {
		if got := e.sim.tokens[tok].expires; !got.Equal(at) {
			t.Errorf("tenant %d: token expires at %s, want the shared moment %s", i, got, at)
		}
	}
	e.sim.mu.Unlock()
	clock.Advance(at.Sub(clock.Now()))
	if _, life := lifetime(tenants[0]); life != time.Hour {
		t.Errorf("token issued after the shared expiry: expires_in = %s, want the TokenTTL of 1h", life)
	}
	// A refresh after "until" but before the moment gets a full lifetime.
	now := clock.Now()
	e.sim.SetTokenExpiry(now.Add(time.Minute), now.Add(10*time.Second))
	if _, life := lifetime(tenants[2]); life != time.Minute {
		t.Errorf("token before until: expires_in = %s, want 1m", life)
	}
	clock.Advance(10 * time.Second)
	if _, life := lifetime(tenants[2]); life != time.Hour {
		t.Errorf("refresh after until, before the shared expiry: expires_in = %s, want the TokenTTL of 1h", life)
	}
	// A refused request is logged too.
	bad := tenants[1]
	bad.ClientSecret = "wrong"
	// AuthStyleInParams: auto-detection would try a second time with the other style.
	cc := clientcredentials.Config{ClientID: bad.ClientID, ClientSecret: bad.ClientSecret, AuthStyle: oauth2.AuthStyleInParams,
		TokenURL: e.srv.URL + "/" + bad.TenantID + "/oauth2/v2.0/token", Scopes: []string{"x/.default"}}
	if _, err := cc.Token(context.Background()); err == nil {
		t.Fatal("a wrong secret got a token")
	}

	log := e.sim.TokenRequests()
	if len(log) != 7 {
		t.Fatalf("token log holds %d requests, want 7: %+v", len(log), log)
	}
	for i, want := range []struct {
		tenant string
		issued bool
	}{{tenants[0].TenantID, true}, {tenants[1].TenantID, true}, {tenants[2].TenantID, true}, {tenants[0].TenantID, true}, {tenants[2].TenantID, true}, {tenants[2].TenantID, true}, {tenants[1].TenantID, false}} {
		if log[i].Tenant != strings.ToLower(want.tenant) || log[i].Issued != want.issued {
			t.Errorf("token log[%d] = %+v, want tenant %s issued %v", i, log[i], want.tenant, want.issued)
		}
		if i > 0 && log[i].At.Before(log[i-1].At) {
			t.Errorf("token log[%d] at %s is before log[%d] at %s", i, log[i].At, i-1, log[i-1].At)
		}
	}
	if got := e.sim.TenantCounts(tenants[1].TenantID); got.TokenRequests != 2 || got.TokensIssued != 1 {
		t.Errorf("tenant 1 counts = %+v, want 2 token requests and 1 issued", got)
	}
}

// TestThousandTenants configures 1,000 generated tenants and lets each get a token and one link for its own
// action: the credentials are unique, every tenant is served, and the per-tenant counters add up.
func TestThousandTenants(t *testing.T) {
	const n = 1000
	tenants := GenerateTenants(n, 4)
	if again := GenerateTenants(n, 4)[n-1]; again.TenantID != tenants[n-1].TenantID || again.ClientSecret != tenants[n-1].ClientSecret {
		t.Errorf("GenerateTenants is not reproducible for a seed")
	}
	ids := map[string]bool{}
	for _, c := range tenants {
		if ids[c.TenantID] || len(c.ClientSecret) != 32 {
			t.Fatalf("tenant %+v: duplicate id or bad secret", c.TenantID)
		}
		ids[c.TenantID] = true
	}
	e := newEnv(t, Config{ExtraTenants: tenants})
	actions := make([]Action, 0, n)
	for i, c := range tenants {
		actions = append(actions, GenerateTenantActions(c.TenantID, 1, 1, 16, int64(i))...)
	}
	e.sim.AddActions(actions...)
	for i, c := range tenants {
		tok := e.tokenFor(c.TenantID, c.ClientID, c.ClientSecret)
		if status, _, body := e.get(e.linkURL(actions[i].MachineAction.ID, 0), tok); status != http.StatusOK {
			t.Fatalf("tenant %d: link status %d, body %s", i, status, body)
		}
	}
	counts := e.sim.AllTenantCounts()
	if len(counts) != n {
		t.Fatalf("AllTenantCounts has %d tenants, want %d", len(counts), n)
	}
	for id, c := range counts {
		if c != (TenantCounts{TokenRequests: 1, TokensIssued: 1, LinksAdmitted: 1}) {
			t.Fatalf("tenant %s: counts = %+v, want one token and one link", id, c)
		}
	}
	if got := len(e.sim.TokenRequests()); got != n {
		t.Errorf("token log holds %d requests, want %d", got, n)
	}
}

// stepClock is a clock the test moves by hand.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
