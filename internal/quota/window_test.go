package quota

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseWindows(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Window
		wantErr []string // substrings every one of which the error must contain
	}{
		{name: "mde defaults", in: "100/1m,1500/1h", want: []Window{{100, time.Minute}, {1500, time.Hour}}},
		{name: "scaled", in: "100/1s, 1500/15s", want: []Window{{100, time.Second}, {1500, 15 * time.Second}}},
		{name: "milliseconds", in: "10/500ms", want: []Window{{10, 500 * time.Millisecond}}},
		{name: "spaces", in: " 5 / 2s ", want: []Window{{5, 2 * time.Second}}},
		{name: "empty", in: "  ", wantErr: []string{"empty list"}},
		{name: "no slash", in: "100", wantErr: []string{`item 1 "100"`, "LIMIT/DURATION"}},
		{name: "bad limit", in: "x/1m", wantErr: []string{"not an integer"}},
		{name: "bad duration", in: "100/1minute", wantErr: []string{`duration "1minute"`}},
		{name: "zero limit", in: "0/1m", wantErr: []string{"limit 0 must be greater than 0"}},
		{name: "negative duration", in: "5/-1s", wantErr: []string{"must be greater than 0"}},
		{name: "every problem reported", in: "1/1s,,x/1m", wantErr: []string{"item 2", "item 3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseWindows(tt.in)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ParseWindows(%q) = %v, want an error", tt.in, got)
				}
				if !errors.Is(err, ErrInvalidWindow) {
					t.Errorf("error %v does not wrap ErrInvalidWindow", err)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseWindows(%q): %v", tt.in, err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("window %d: got %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestWindowString(t *testing.T) {
	tests := []struct {
		w    Window
		want string
	}{
		{Window{100, time.Minute}, "100/1m"},
		{Window{1500, time.Hour}, "1500/1h"},
		{Window{1500, 15 * time.Second}, "1500/15s"},
		{Window{10, 500 * time.Millisecond}, "10/500ms"},
		{Window{3, 90 * time.Minute}, "3/90m"},
		{Window{3, 1500 * time.Microsecond}, "3/1.5ms"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.w.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			back, err := ParseWindows(tt.w.String())
			if err != nil || len(back) != 1 || back[0] != tt.w {
				t.Errorf("round trip: got %v, %v; want %v", back, err, tt.w)
			}
		})
	}
}

func TestValidateWindows(t *testing.T) {
	if err := ValidateWindows(nil); !errors.Is(err, ErrInvalidWindow) {
		t.Errorf("ValidateWindows(nil) = %v, want ErrInvalidWindow", err)
	}
	err := ValidateWindows([]Window{{1, time.Second}, {0, time.Second}, {1, 0}})
	if err == nil || !strings.Contains(err.Error(), "window 2") || !strings.Contains(err.Error(), "window 3") {
		t.Errorf("got %v, want errors for windows 2 and 3", err)
	}
	if err := ValidateWindows([]Window{{1, time.Second}}); err != nil {
		t.Errorf("valid window: got %v", err)
	}
}
