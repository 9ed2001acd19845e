package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lr-relay/lr-relay/internal/embedded"
	"github.com/lr-relay/lr-relay/internal/embedded/embeddedtest"
)

func TestHelpListsSubcommandsAndEveryVariable(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--help"}, &out, &errb); code != exitOK {
		t.Fatalf("--help exit %d", code)
	}
	for _, want := range []string{"lr-relay run", "lr-relay demo", "lr-relay simulate", "lr-relay fetch", "lr-relay deadletters replay",
		"LR_NATS_URL", "LR_RATE_LIMITS", "100/1m,1500/1h", "LR_DOWNLOAD_ALLOWED_HOSTS", "LR_MDE_CLIENT_SECRET_FILE",
		"LR_TENANTS_FILE", "LR_INLINE_MAX_BYTES", "LR_OBJECT_BUCKET", "LR_MAX_DELIVER", "LR_SIM_FAULTS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want int
		errs []string
	}{
		{name: "no command", args: nil, want: exitUsage},
		{name: "unknown command", args: []string{"frobnicate"}, want: exitUsage, errs: []string{`unknown command "frobnicate"`}},
		{name: "bad configuration names every variable", args: []string{"run"},
			env:  map[string]string{"LR_WORKERS": "0", "LR_LOG_LEVEL": "loud"},
			want: exitUsage, errs: []string{"LR_WORKERS", "LR_LOG_LEVEL"}},
		{name: "fetch needs an action", args: []string{"fetch"}, want: exitUsage, errs: []string{"--action is required"}},
		{name: "fetch refuses a non-GUID", args: []string{"fetch", "--action", "nope"},
			env:  map[string]string{"LR_MDE_TENANT_ID": "t", "LR_MDE_CLIENT_ID": "c", "LR_MDE_CLIENT_SECRET": "s"},
			want: exitFailure, errs: []string{"not a GUID"}},
		{name: "deadletters needs a subcommand", args: []string{"deadletters"}, want: exitUsage, errs: []string{"usage: lr-relay deadletters"}},
		{name: "deadletters show needs a sequence", args: []string{"deadletters", "show", "x"}, want: exitUsage,
			errs: []string{"one record sequence"}},
		{name: "deadletters list refuses a bad --since", args: []string{"deadletters", "list", "--since", "yesterday"},
			want: exitUsage, errs: []string{"--since"}},
		{name: "deadletters says when NATS is unreachable", args: []string{"deadletters", "list"},
			env: map[string]string{"LR_NATS_URL": "nats://127.0.0.1:1"}, want: exitFailure, errs: []string{"LR_NATS_URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			if got := run(tt.args, &out, &errb); got != tt.want {
				t.Errorf("exit %d, want %d; stderr: %s", got, tt.want, errb.String())
			}
			for _, e := range tt.errs {
				if !strings.Contains(errb.String(), e) {
					t.Errorf("stderr lacks %q: %s", e, errb.String())
				}
			}
		})
	}
}

// TestDeadLettersCommands runs list, show and replay as an operator would, against a real JetStream server
// configured only through LR_ variables.
func TestDeadLettersCommands(t *testing.T) {
	s := embeddedtest.Server(t, embedded.Options{})
	js := embeddedtest.Connect(t, s)
	ctx := context.Background()
	for _, sc := range []jetstream.StreamConfig{
		{Name: "DL", Subjects: []string{"x.deadletter"}},
		{Name: "SRC", Subjects: []string{"x.finished"}, Duplicates: time.Minute},
	} {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	payload := `{"id":"c0ffee00-0000-4000-8000-000000000001"}`
	for _, reason := range []string{"forbidden", "unknown_tenant"} {
		rec := `{"schemaVersion":1,"reason":"` + reason + `","message":"m","payloadBase64":"` +
			base64.StdEncoding.EncodeToString([]byte(payload)) + `","stream":"SRC","sequence":3,"deliveries":1,` +
			`"subject":"x.finished","tenant":"contoso","deadLetteredAt":"` + time.Now().UTC().Format(time.RFC3339) + `"}`
		if _, err := js.Publish(ctx, "x.deadletter", []byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{"LR_NATS_URL": s.ClientURL(), "LR_DEADLETTER_STREAM": "DL",
		"LR_DEADLETTER_SUBJECT": "x.deadletter", "LR_SOURCE_STREAM": "SRC", "LR_SOURCE_SUBJECT": "x.finished"} {
		t.Setenv(k, v)
	}
	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		return code, out.String(), errb.String()
	}
	if code, out, _ := cli("deadletters", "list", "--reason", "forbidden", "--since", "1h"); code != exitOK ||
		!strings.Contains(out, "forbidden") || strings.Contains(out, "unknown_tenant") {
		t.Errorf("list --reason forbidden: exit %d\n%s", code, out)
	}
	if code, out, _ := cli("deadletters", "show", "2"); code != exitOK || !strings.Contains(out, `"reason": "unknown_tenant"`) ||
		!strings.Contains(out, `"id": "c0ffee00-0000-4000-8000-000000000001"`) {
		t.Errorf("show 2: exit %d\n%s", code, out)
	}
	if code, _, errs := cli("deadletters", "replay", "--dry-run"); code != exitOK || !strings.Contains(errs, "2 selected, 2 replayed") {
		t.Errorf("replay --dry-run: exit %d\n%s", code, errs)
	}
	if code, _, errs := cli("deadletters", "replay", "--reason", "forbidden", "--rate", "100"); code != exitOK ||
		!strings.Contains(errs, "1 selected, 1 replayed") {
		t.Errorf("replay --reason forbidden: exit %d\n%s", code, errs)
	}
	if code, out, _ := cli("deadletters", "list"); code != exitOK || strings.Contains(out, "forbidden") || !strings.Contains(out, "unknown_tenant") {
		t.Errorf("list after the replay: exit %d\n%s", code, out)
	}
	if code, _, errs := cli("deadletters", "show", "1"); code != exitFailure || !strings.Contains(errs, "no record at sequence 1") {
		t.Errorf("show of the replayed record: exit %d\n%s", code, errs)
	}
	src, err := js.Stream(ctx, "SRC")
	if err != nil {
		t.Fatal(err)
	}
	m, err := src.GetMsg(ctx, 1)
	if err != nil || string(m.Data) != payload || m.Header.Get("Lr-Replay-Of") != "DL/1" {
		t.Errorf("replayed event: %+v, %v", m, err)
	}
}
