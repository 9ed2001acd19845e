package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/config"
)

// TestDemoRelaysEverything runs the newcomer's first command and checks its verdict and its counts.
func TestDemoRelaysEverything(t *testing.T) {
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr = ""
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	sum, err := Run(ctx, Options{Config: cfg, Logger: zerolog.Nop(), Out: &out})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if !sum.OK() {
		t.Fatalf("demo not OK: %+v\n%s", sum, out.String())
	}
	if sum.Commands < 10 || sum.ExpectedDeadLetters != 5 {
		t.Errorf("demo covers %d commands and %d bad events, want at least 10 and 5", sum.Commands, sum.ExpectedDeadLetters)
	}
	for _, want := range []string{"OK: every command relayed exactly once", "nuls-stripped=", "json", "invalid_json", "forbidden", "GetFile"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
