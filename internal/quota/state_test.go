package quota

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestStateRoundTrip(t *testing.T) {
	base := time.Unix(1_750_000_000, 123)
	tests := []struct {
		name string
		st   sharedState
	}{
		{name: "empty", st: sharedState{}},
		{name: "pause only", st: sharedState{pausedUntil: base.Add(time.Minute)}},
		{name: "grants", st: sharedState{log: []time.Time{base, base, base.Add(time.Nanosecond), base.Add(time.Hour)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeState(tt.st.encode())
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !got.pausedUntil.Equal(tt.st.pausedUntil) {
				t.Errorf("pausedUntil = %v, want %v", got.pausedUntil, tt.st.pausedUntil)
			}
			if len(got.log) != len(tt.st.log) {
				t.Fatalf("log has %d grants, want %d", len(got.log), len(tt.st.log))
			}
			for i := range got.log {
				if !got.log[i].Equal(tt.st.log[i]) {
					t.Errorf("grant %d = %v, want %v", i, got.log[i], tt.st.log[i])
				}
			}
		})
	}
}

func TestStateSize(t *testing.T) {
	st := sharedState{}
	at := time.Unix(1_750_000_000, 0)
	for range 1500 {
		at = at.Add(2400*time.Millisecond + 123457*time.Nanosecond)
		st.log = append(st.log, at)
	}
	if n := len(st.encode()); n > 8000 {
		t.Errorf("1500 grants encode to %d bytes, want at most 8000", n)
	}
}

func TestDecodeStateCorrupt(t *testing.T) {
	valid := sharedState{log: []time.Time{time.Unix(1, 0), time.Unix(2, 0)}}.encode()
	tests := []struct {
		name string
		in   []byte
	}{
		{name: "empty", in: nil},
		{name: "wrong version", in: []byte{9, 0, 0}},
		{name: "truncated", in: valid[:len(valid)-1]},
		{name: "trailing", in: append(append([]byte{}, valid...), 0)},
		{name: "huge count", in: []byte{stateVersion, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{name: "json", in: []byte(`{"grants":[1,2]}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeState(tt.in); !errors.Is(err, errCorruptState) {
				t.Errorf("decodeState(%x) = %v, want errCorruptState", tt.in, err)
			}
		})
	}
}

func TestKVKey(t *testing.T) {
	tests := []struct {
		in   Key
		want string
	}{
		{Key{"tenant", "links"}, "tenant/links"},
		{Key{"3fa85f64-5717-4562-b3fc-2c963f66afa6", "GetLiveResponseResultDownloadLink"}, "3fa85f64-5717-4562-b3fc-2c963f66afa6/GetLiveResponseResultDownloadLink"},
		{Key{"a.b", "links"}, "a=2Eb/links"},
		{Key{"a b*>", "x"}, "a=20b=2A=3E/x"},
		{Key{"a=b", "x"}, "a=3Db/x"},
		{Key{}, "/"},
		{Key{"é", "x"}, "=C3=A9/x"},
	}
	for _, tt := range tests {
		t.Run(tt.in.String(), func(t *testing.T) {
			got := kvKey(tt.in)
			if got != tt.want {
				t.Errorf("kvKey(%q) = %q, want %q", tt.in, got, tt.want)
			}
			if back, ok := parseKVKey(got); !ok || back != tt.in {
				t.Errorf("parseKVKey(%q) = %v, %v; want %v", got, back, ok, tt.in)
			}
			if strings.Trim(got, "-/_=abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") != "" {
				t.Errorf("kvKey(%q) = %q holds a byte KV keys do not allow", tt.in, got)
			}
		})
	}
}

func TestSharedConfigValidate(t *testing.T) {
	ok := []Window{{100, time.Minute}}
	tests := []struct {
		name    string
		cfg     SharedConfig
		wantErr []string
	}{
		{name: "valid", cfg: testConfig("lr-quota", ok, 3)},
		{name: "no windows", cfg: SharedConfig{}, wantErr: []string{"no windows", "bucket", "processes", "op timeout", "probe interval"}},
		{name: "bad bucket", cfg: SharedConfig{Windows: ok, Bucket: "lr.quota"}, wantErr: []string{`bucket "lr.quota"`}},
		{name: "unfilled", cfg: SharedConfig{Windows: ok, Bucket: "b", Processes: -1, Provision: true}, wantErr: []string{"processes must be at least 1", "bucket replicas must be at least 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func TestFIFOCancelHandsOver(t *testing.T) {
	f := newFIFO()
	unlockA, err := f.lock(t.Context(), Key{"k", "x"})
	if err != nil {
		t.Fatal(err)
	}
	ctxB, cancelB := context.WithCancel(t.Context())
	bDone := make(chan error, 1)
	go func() {
		_, err := f.lock(ctxB, Key{"k", "x"})
		bDone <- err
	}()
	cDone := make(chan func(), 1)
	go func() {
		for {
			f.mu.Lock()
			n := len(f.keys[Key{"k", "x"}])
			f.mu.Unlock()
			if n == 2 { // poll: B is queued before C
				break
			}
			time.Sleep(time.Millisecond)
		}
		unlock, err := f.lock(t.Context(), Key{"k", "x"})
		if err != nil {
			t.Error(err)
		}
		cDone <- unlock
	}()
	for {
		f.mu.Lock()
		n := len(f.keys[Key{"k", "x"}])
		f.mu.Unlock()
		if n == 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancelB()
	if err := <-bDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("B: got %v, want context.Canceled", err)
	}
	unlockA()
	unlockC := <-cDone
	unlockC()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.keys) != 0 {
		t.Errorf("queues left behind: %v", f.keys)
	}
}
