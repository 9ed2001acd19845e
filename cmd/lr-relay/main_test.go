package main

import (
	"bytes"
	"strings"
	"testing"
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
