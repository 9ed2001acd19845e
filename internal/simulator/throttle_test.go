package simulator

import (
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestParseWindows(t *testing.T) {
	tests := []struct {
		spec    string
		want    string
		wantErr []string
	}{
		{spec: "100/1m,1500/1h", want: "100/1m,1500/1h"},
		{spec: " 100/1s , 1500/15s ", want: "100/1s,1500/15s"},
		{spec: "5/250ms", want: "5/250ms"},
		{spec: "", wantErr: []string{"no window"}},
		{spec: "100", wantErr: []string{`"100"`}},
		{spec: "0/1m,x/1h,5/-1s,5/1q", wantErr: []string{`"0/1m"`, `"x/1h"`, `"5/-1s"`, `"5/1q"`}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			ws, err := ParseWindows(tt.spec)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("ParseWindows(%q) = %v, want an error", tt.spec, ws)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWindows(%q): %v", tt.spec, err)
			}
			var parts []string
			for _, w := range ws {
				parts = append(parts, w.String())
			}
			if got := strings.Join(parts, ","); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

// TestSlidingLogExact drives the log with explicit arrival offsets and checks each verdict.
func TestSlidingLogExact(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	type call struct {
		at         time.Duration
		admitted   bool
		retryAfter time.Duration
		during     bool
	}
	tests := []struct {
		name    string
		windows string
		calls   []call
	}{
		{"limit then Retry-After rounded up", "2/1s", []call{
			{0, true, 0, false},
			{300 * time.Millisecond, true, 0, false},
			{400 * time.Millisecond, false, time.Second, false}, // frees at 1.0s: 0.6s -> 1s
			{900 * time.Millisecond, false, time.Second, true},  // still before 1.4s
			{1400 * time.Millisecond, true, 0, false},           // window (0.4s,1.4s] is empty again
		}},
		{"boundary is half-open", "1/1s", []call{
			{0, true, 0, false},
			{999 * time.Millisecond, false, time.Second, false},
			{2 * time.Second, true, 0, false},
			{3 * time.Second, true, 0, false}, // the call at 2s is exactly 1s old: out of the window
		}},
		{"boundary is half-open in a shorter window", "1/1s,10/1h", []call{
			{0, true, 0, false},
			{time.Second, true, 0, false},
			{2*time.Second - time.Nanosecond, false, time.Second, false},
			{3 * time.Second, true, 0, false},
		}},
		{"longer window decides", "3/1s,4/10s", []call{
			{0, true, 0, false},
			{0, true, 0, false},
			{0, true, 0, false},
			{0, false, time.Second, false},
			{time.Second, true, 0, false},
			{time.Second, false, 9 * time.Second, false},
			{5 * time.Second, false, 5 * time.Second, true},
			{10 * time.Second, true, 0, false},
		}},
		{"refused calls do not count", "1/1s", []call{
			{0, true, 0, false},
			{500 * time.Millisecond, false, time.Second, false},
			{1500 * time.Millisecond, true, 0, false},
			{2 * time.Second, false, time.Second, false}, // window holds only 1.5s: frees at 2.5s -> 1s
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws, err := ParseWindows(tt.windows)
			if err != nil {
				t.Fatal(err)
			}
			var l slidingLog
			for i, c := range tt.calls {
				got := l.admit(t0.Add(c.at), ws)
				want := verdict{admitted: c.admitted, retryAfter: c.retryAfter, duringRetry: c.during}
				if got != want {
					t.Errorf("call %d at %s: got %+v, want %+v", i, c.at, got, want)
				}
			}
		})
	}
}

func TestMaxInWindow(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms ...int) []time.Time {
		var ts []time.Time
		for _, m := range ms {
			ts = append(ts, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return ts
	}
	tests := []struct {
		name string
		ts   []time.Time
		want int
	}{
		{"empty", nil, 0},
		{"one", at(5), 1},
		{"exactly a window apart", at(0, 1000, 2000), 1},
		{"just inside", at(0, 999, 1998), 2},
		{"burst", at(0, 1, 2, 3, 1500), 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MaxInWindow(tt.ts, time.Second); got != tt.want {
				t.Errorf("MaxInWindow = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestThrottleOverHTTP checks the whole path: N admitted, the next 429 with Retry-After, calls during it
// counted, separate counters per endpoint, and the admitted log. It runs in a synctest bubble, where
// time.Sleep moves the fake clock at once.
func TestThrottleOverHTTP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newPipeEnv(t, Config{LinkLimits: "3/1s,5/10s", ActionLimits: "100/1s"})
		e.sim.AddAction(simpleAction(testID, []byte(`{}`), nil))
		tok := e.token()
		expect := func(url string, wantStatus int, wantRetryAfter string) {
			t.Helper()
			status, h, body := e.get(url, tok)
			if status != wantStatus {
				t.Fatalf("status = %d, want %d (body %s)", status, wantStatus, body)
			}
			if got := h.Get("Retry-After"); got != wantRetryAfter {
				t.Errorf("Retry-After = %q, want %q", got, wantRetryAfter)
			}
			if status == http.StatusTooManyRequests {
				if code := apiErrorCode(t, body); code != "TooManyRequests" {
					t.Errorf("code = %q, want TooManyRequests", code)
				}
			}
		}
		link := e.linkURL(testID, 0)
		for range 3 {
			expect(link, http.StatusOK, "")
		}
		expect(link, http.StatusTooManyRequests, "1")
		expect(e.actionURL(testID), http.StatusOK, "") // the action endpoint has its own counter
		time.Sleep(400 * time.Millisecond)
		expect(link, http.StatusTooManyRequests, "1") // during Retry-After
		time.Sleep(600 * time.Millisecond)
		expect(link, http.StatusOK, "")
		expect(link, http.StatusOK, "")
		expect(link, http.StatusTooManyRequests, "9") // the 10 s window is full until t0+10s
		time.Sleep(9 * time.Second)
		expect(link, http.StatusOK, "")

		st := e.sim.Stats()
		if st.Throttled != 3 || st.CallsDuringRetryAfter != 1 || st.LinkCalls != 9 || st.ActionCalls != 1 {
			t.Errorf("stats = %+v, want Throttled 3, CallsDuringRetryAfter 1, LinkCalls 9, ActionCalls 1", st)
		}
		admitted := e.sim.Admitted(DefaultTenantID, EndpointLinks)
		if len(admitted) != 6 {
			t.Fatalf("admitted %d link calls, want 6", len(admitted))
		}
		if got := MaxInWindow(admitted, 10*time.Second); got != 5 {
			t.Errorf("max in 10s = %d, want 5", got)
		}
		if got := MaxInWindow(admitted, time.Second); got != 3 {
			t.Errorf("max in 1s = %d, want 3", got)
		}
	})
}
