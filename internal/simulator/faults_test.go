package simulator

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lr-relay/lr-relay/internal/action"
	"github.com/lr-relay/lr-relay/internal/testutil"
)

func TestParseFaults(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Faults
		wantErr []string
	}{
		{name: "empty", in: "", want: Faults{}},
		{name: "all probabilities", in: "5xx=0.05,reset=0.02,timeout=0.02,slowdrip=0.05,expire=0.1,token=0.05,storm=0.01",
			want: Faults{ServerError: 0.05, Reset: 0.02, Timeout: 0.02, SlowDrip: 0.05, Expire: 0.1, Token: 0.05, Storm: 0.01}},
		{name: "parameters", in: " timeout=1, timeout_after=35s,storm_retry_after=2s,slowdrip_delay=200ms,slowdrip_chunk=64,5xx_burst=4,expire_ttl=-1m ",
			want: Faults{Timeout: 1, TimeoutAfter: 35 * time.Second, StormRetryAfter: 2 * time.Second, SlowDripDelay: 200 * time.Millisecond,
				SlowDripChunk: 64, ServerErrorBurst: 4, ExpireTTL: -time.Minute}},
		{name: "every problem reported", in: "5xx=2,reset=x,bogus=1,timeout_after=-1s,5xx_burst=z,storm",
			wantErr: []string{"5xx=2", "reset=x", `unknown fault "bogus"`, "timeout_after=-1s", "5xx_burst=z", `"storm"`}},
		{name: "duplicate", in: "reset=0.1,reset=0.2", wantErr: []string{"reset is given twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFaults(tt.in)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ParseFaults(%q) = %+v, want an error", tt.in, got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFaults(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			back, err := ParseFaults(got.String())
			if err != nil || back != got {
				t.Errorf("round trip through %q = %+v (%v), want %+v", got.String(), back, err, got)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	_, err := New(Config{LinkLimits: "x", ActionLimits: "1/0s", Faults: Faults{Reset: 3}, LinkTTL: -time.Second,
		ExtraTenants: []Credentials{{TenantID: DefaultTenantID, ClientID: "a", ClientSecret: "b"}}})
	if err == nil {
		t.Fatal("New accepted a bad config")
	}
	for _, want := range []string{"link limits", "action limits", "reset=3", "link TTL", "configured twice"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// faultEnv is an env with a test action whose GetFile result is generated (index 1).
func faultEnv(t *testing.T, cfg Config) (*env, string) {
	return loadFaults(newEnv(t, cfg))
}

// loadFaults adds the action the fault tests fetch and returns the env with a token.
func loadFaults(e *env) (*env, string) {
	a := simpleAction(testID, TranscriptJSON("test.ps1", 0, testID, strings.Repeat("output line\n", 2000), nil), nil)
	a.Results[1] = Content{Size: 1 << 20, Seed: 3}
	e.sim.AddAction(a)
	return e, e.token()
}

func setFaults(t *testing.T, sim *Simulator, f Faults) {
	t.Helper()
	if err := sim.SetFaults(f); err != nil {
		t.Fatal(err)
	}
}

func TestFaultServerErrorBurst(t *testing.T) {
	e, tok := faultEnv(t, Config{})
	setFaults(t, e.sim, Faults{ServerError: 1, ServerErrorBurst: 3})
	status, _, body := e.get(e.actionURL(testID), tok)
	if status != http.StatusInternalServerError || apiErrorCode(t, body) != "InternalServerError" {
		t.Fatalf("status %d body %s, want 500 InternalServerError", status, body)
	}
	setFaults(t, e.sim, Faults{})
	// The burst covers the next two calls, whatever endpoint; a blob 5xx is Azure's XML.
	if status, _, _ := e.get(e.linkURL(testID, 0), tok); status != http.StatusInternalServerError {
		t.Errorf("second call of the burst: status %d, want 500", status)
	}
	if status, _, _ := e.get(e.actionURL(testID), tok); status != http.StatusInternalServerError {
		t.Errorf("third call of the burst: status %d, want 500", status)
	}
	if status, _, _ := e.get(e.actionURL(testID), tok); status != http.StatusOK {
		t.Errorf("after the burst: status %d, want 200", status)
	}
	link := e.link(testID, 0, tok)
	setFaults(t, e.sim, Faults{ServerError: 1, ServerErrorBurst: 1})
	status, _, body = e.get(link, "")
	if status != http.StatusInternalServerError || !strings.Contains(string(body), "<Code>InternalError</Code>") {
		t.Errorf("blob: status %d body %s, want 500 InternalError XML", status, body)
	}
	if got := e.sim.Stats().FaultsInjected[FaultServerError]; got != 4 {
		t.Errorf("FaultsInjected[5xx] = %d, want 4", got)
	}
}

func TestFaultReset(t *testing.T) {
	e, tok := faultEnv(t, Config{})
	link := e.link(testID, 0, tok)
	fileLink := e.link(testID, 1, tok)
	setFaults(t, e.sim, Faults{Reset: 1})
	t.Run("API call", func(t *testing.T) {
		resp, err := e.do(e.actionURL(testID), tok)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got status %d, want a transport error", resp.StatusCode)
		}
	})
	t.Run("RunScript body cut half way", func(t *testing.T) {
		resp, err := e.do(link, "")
		if err != nil {
			return // reset before the headers is acceptable too
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err == nil {
			t.Errorf("read %d bytes without error, want a truncated body", len(got))
		}
	})
	t.Run("GetFile stream cut", func(t *testing.T) {
		resp, err := e.do(fileLink, "")
		if err != nil {
			t.Fatalf("headers should arrive before the cut: %v", err)
		}
		defer resp.Body.Close()
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatalf("gzip header: %v", err)
		}
		n, err := io.Copy(io.Discard, zr)
		if err == nil || n >= 1<<20 {
			t.Errorf("read %d bytes, err %v; want a truncated stream", n, err)
		}
	})
	// net/http retries an idempotent GET once when a reused connection dies before any response byte, so
	// the API call may have met the fault twice.
	if got := e.sim.Stats().FaultsInjected[FaultReset]; got < 3 || got > 4 {
		t.Errorf("FaultsInjected[reset] = %d, want 3 or 4", got)
	}
}

func TestFaultTimeout(t *testing.T) {
	e, tok := faultEnv(t, Config{})
	t.Run("hangs until the client gives up", func(t *testing.T) {
		setFaults(t, e.sim, Faults{Timeout: 1})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.linkURL(testID, 0), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := e.srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("got status %d, want the client's deadline", resp.StatusCode)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("gives up after timeout_after", func(t *testing.T) {
		setFaults(t, e.sim, Faults{Timeout: 1, TimeoutAfter: 20 * time.Millisecond})
		status, _, body := e.get(e.actionURL(testID), tok)
		if status != http.StatusGatewayTimeout || apiErrorCode(t, body) != "GatewayTimeout" {
			t.Errorf("status %d body %s, want 504 GatewayTimeout", status, body)
		}
	})
	t.Run("Close releases a hung request", func(t *testing.T) {
		setFaults(t, e.sim, Faults{Timeout: 1})
		done := make(chan error, 1)
		go func() {
			resp, err := e.do(e.actionURL(testID), tok)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		testutil.Eventually(t, 5*time.Second, func() error {
			if n := e.sim.Stats().FaultsInjected[FaultTimeout]; n < 3 {
				return fmt.Errorf("%d requests hung, want 3", n)
			}
			return nil
		})
		e.sim.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("hung request not released by Close")
		}
	})
}

func TestFaultSlowDrip(t *testing.T) {
	e, tok := faultEnv(t, Config{})
	data := []byte(strings.Repeat("x", 1000))
	e.sim.AddAction(Action{MachineAction: action.MachineAction{ID: "22222222-2222-4222-8222-222222222222",
		Commands: []action.Command{runScript(action.StatusCompleted, "s.ps1", "")}}, Results: map[int]Content{0: {Data: data}}})
	link := e.link("22222222-2222-4222-8222-222222222222", 0, tok)
	setFaults(t, e.sim, Faults{SlowDrip: 1, SlowDripChunk: 100, SlowDripDelay: 10 * time.Millisecond})
	start := time.Now()
	status, _, body := e.get(link, "")
	elapsed := time.Since(start)
	if status != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("status %d, %d bytes; want 200 and the %d stored bytes", status, len(body), len(data))
	}
	if elapsed < 90*time.Millisecond {
		t.Errorf("download took %s, want at least 10 chunks x 10ms", elapsed)
	}
	if got := e.sim.Stats().FaultsInjected[FaultSlowDrip]; got != 1 {
		t.Errorf("FaultsInjected[slowdrip] = %d, want 1", got)
	}
}

func TestFaultExpire(t *testing.T) {
	e, tok := faultEnv(t, Config{})
	setFaults(t, e.sim, Faults{Expire: 1, ExpireTTL: -time.Minute})
	link := e.link(testID, 0, tok)
	u, _ := url.Parse(link)
	se, err := time.Parse(time.RFC3339, u.Query().Get("se"))
	if err != nil || !se.Before(time.Now()) {
		t.Errorf("se = %v (%v), want a time in the past", se, err)
	}
	status, h, body := e.get(link, "")
	checkAuthFailed(t, status, h, body, "Signature not valid in the specified time frame")
	st := e.sim.Stats()
	if st.FaultsInjected[FaultExpire] != 1 || st.Expired403 != 1 {
		t.Errorf("stats = %+v, want one expire fault and one Expired403", st)
	}
}

func TestFaultToken(t *testing.T) {
	e := newEnv(t, Config{Faults: Faults{Token: 1}})
	seen := map[int]bool{}
	for range 20 {
		resp, err := http.PostForm(e.srv.URL+"/"+DefaultTenantID+"/oauth2/v2.0/token", url.Values{
			"grant_type": {"client_credentials"}, "client_id": {DefaultClientID},
			"client_secret": {DefaultClientSecret}, "scope": {"x/.default"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		seen[resp.StatusCode] = true
	}
	if len(seen) != 2 || !seen[http.StatusInternalServerError] || !seen[http.StatusServiceUnavailable] {
		t.Errorf("statuses seen = %v, want only 500 and 503", seen)
	}
	if st := e.sim.Stats(); st.FaultsInjected[FaultToken] != 20 || st.TokensIssued != 0 {
		t.Errorf("stats = %+v, want 20 token faults and no token issued", st)
	}
}

func TestFaultStorm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) { // time.Sleep moves the bubble's fake clock
		e, tok := loadFaults(newPipeEnv(t, Config{}))
		setFaults(t, e.sim, Faults{Storm: 1, StormRetryAfter: 3 * time.Second})
		status, h, _ := e.get(e.linkURL(testID, 0), tok)
		if status != http.StatusTooManyRequests || h.Get("Retry-After") != "3" {
			t.Fatalf("status %d Retry-After %q, want 429 and 3", status, h.Get("Retry-After"))
		}
		setFaults(t, e.sim, Faults{})
		time.Sleep(2 * time.Second)
		if status, h, _ := e.get(e.linkURL(testID, 0), tok); status != http.StatusTooManyRequests || h.Get("Retry-After") != "1" {
			t.Errorf("during the storm: status %d Retry-After %q, want 429 and 1", status, h.Get("Retry-After"))
		}
		if status, _, _ := e.get(e.actionURL(testID), tok); status != http.StatusOK {
			t.Errorf("other endpoint during the storm: status %d, want 200", status)
		}
		time.Sleep(time.Second)
		if status, _, _ := e.get(e.linkURL(testID, 0), tok); status != http.StatusOK {
			t.Errorf("after the storm: status %d, want 200", status)
		}
		st := e.sim.Stats()
		if st.FaultsInjected[FaultStorm] != 1 || st.Throttled != 2 || st.CallsDuringRetryAfter != 1 {
			t.Errorf("stats = %+v, want 1 storm, 2 throttled, 1 call during Retry-After", st)
		}
		if got := len(e.sim.Admitted(DefaultTenantID, EndpointLinks)); got != 1 {
			t.Errorf("admitted link calls = %d, want 1 (storm 429s do not count)", got)
		}
	})
}

// TestFaultsReproducible checks that the same seed gives the same fault sequence.
func TestFaultsReproducible(t *testing.T) {
	run := func(seed int64) string {
		e, tok := faultEnv(t, Config{Seed: seed, Faults: Faults{ServerError: 0.2, ServerErrorBurst: 1, Timeout: 0.2, TimeoutAfter: time.Millisecond}})
		var b strings.Builder
		for range 40 {
			status, _, _ := e.get(e.actionURL(testID), tok)
			b.WriteString(http.StatusText(status)[:1])
		}
		return b.String()
	}
	a, b, c := run(7), run(7), run(8)
	if a != b {
		t.Errorf("seed 7 gave %s then %s", a, b)
	}
	if a == c {
		t.Errorf("seeds 7 and 8 gave the same sequence %s", a)
	}
	if !strings.Contains(a, "I") || !strings.Contains(a, "G") || !strings.Contains(a, "O") {
		t.Errorf("sequence %s lacks 500s, 504s or 200s", a)
	}
}
