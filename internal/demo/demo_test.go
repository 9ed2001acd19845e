package demo

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/lr-relay/lr-relay/internal/config"
	"github.com/lr-relay/lr-relay/internal/deadletters"
	"github.com/lr-relay/lr-relay/internal/testutil"
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
	if sum.Objects != 2 || sum.ObjectsVerified != 2 {
		t.Errorf("%d/%d large results verified in the object store, want 2/2", sum.ObjectsVerified, sum.Objects)
	}
	for _, want := range []string{"OK: every command relayed exactly once", "nuls-stripped=", "json", "invalid_json", "forbidden", "GetFile",
		"/0/output 204800 B", "/1/file 4194304 B", "matches its result and the content served"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestDemoServeKeepsRunning checks that --serve leaves JetStream up after the summary, with the results, the
// stored artifacts and the dead letters reachable at the printed address, until the context ends.
func TestDemoServeKeepsRunning(t *testing.T) {
	cfg, err := config.Load()
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPAddr = ""
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &testutil.SyncBuffer{}
	type ran struct {
		sum Summary
		err error
	}
	done := make(chan ran, 1)
	go func() {
		sum, err := Run(ctx, Options{Config: cfg, Logger: zerolog.Nop(), Out: out, Serve: true, Timeout: 2 * time.Minute})
		done <- ran{sum, err}
	}()
	testutil.Eventually(t, 2*time.Minute, func() error {
		if strings.Contains(out.String(), "deadletters replay --dry-run") {
			return nil
		}
		select {
		case r := <-done:
			t.Fatalf("demo --serve returned before ctx ended: %+v %v\n%s", r.sum, r.err, out.String())
		default:
		}
		return fmt.Errorf("no explore instructions yet:\n%s", out.String())
	})
	text := out.String()
	url := regexp.MustCompile(`export NATS_URL=(\S+)`).FindStringSubmatch(text)
	object := regexp.MustCompile(`nats object get (\S+) (\S+) -O`).FindStringSubmatch(text)
	if url == nil || object == nil {
		t.Fatalf("explore instructions lack the server URL or an object:\n%s", text)
	}
	for _, want := range []string{"nats stream view " + cfg.ResultStream, "nats stream view " + cfg.DeadLetterStream,
		"export LR_NATS_URL=" + url[1], "OK: every command relayed exactly once"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// The server is still there after the summary.
	nc, err := nats.Connect(url[1])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(ctx, object[1])
	if err != nil {
		t.Fatal(err)
	}
	if info, err := obs.GetInfo(ctx, object[2]); err != nil || info.Size != 4<<20 {
		t.Errorf("object %s/%s: %+v, %v; want the 4 MiB file", object[1], object[2], info, err)
	}
	dl, err := deadletters.New(js, deadletters.OptionsFrom(cfg)).List(ctx, deadletters.Filter{})
	if err != nil || len(dl) != 5 {
		t.Errorf("deadletters list against the served demo: %d records, %v; want 5", len(dl), err)
	}
	cancel()
	select {
	case r := <-done:
		if r.err != nil || !r.sum.OK() {
			t.Errorf("demo --serve after Ctrl-C: %+v, %v", r.sum, r.err)
		}
	case <-time.After(time.Minute):
		t.Fatal("demo --serve did not stop within a minute of ctx ending")
	}
}
