package config

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func setAll(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "LR_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

func TestDefaultsAreValid(t *testing.T) {
	setAll(t, nil)
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	if c.RateLimits != "100/1m,1500/1h" || c.Consumer != "lr-relay" || c.ResultSubjectPrefix != "mde.liveresponse.results" {
		t.Errorf("contract defaults changed: %+v", c)
	}
}

// TestValidateReportsEveryProblem checks that one run names every bad variable, so an operator fixes them
// all at once.
func TestValidateReportsEveryProblem(t *testing.T) {
	setAll(t, map[string]string{
		"LR_WORKERS":                  "0",
		"LR_CONSUMER":                 "has space",
		"LR_MAX_DELIVER":              "0",
		"LR_LOG_LEVEL":                "loud",
		"LR_MDE_CLIENT_SECRET":        "x",
		"LR_MDE_CLIENT_SECRET_FILE":   "/tmp/x",
		"LR_INLINE_MAX_BYTES":         "10",
		"LR_RESULT_SUBJECT_PREFIX":    "a.*",
		"LR_MDE_REQUEST_TIMEOUT":      "0s",
		"LR_MDE_MAX_THROTTLE_RETRIES": "-1",
	})
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad configuration")
	}
	for _, name := range []string{"LR_WORKERS", "LR_CONSUMER", "LR_MAX_DELIVER", "LR_LOG_LEVEL",
		"LR_MDE_CLIENT_SECRET_FILE", "LR_INLINE_MAX_BYTES", "LR_RESULT_SUBJECT_PREFIX", "LR_MDE_REQUEST_TIMEOUT",
		"LR_MDE_MAX_THROTTLE_RETRIES"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s:\n%v", name, err)
		}
	}
}

func TestLoadRejectsMalformedValues(t *testing.T) {
	setAll(t, map[string]string{"LR_ACK_WAIT": "soon"})
	if _, err := Load(); err == nil || !strings.Contains(err.Error(), "ACK_WAIT") {
		t.Errorf("Load error = %v, want one naming ACK_WAIT", err)
	}
}

func TestClientSecretFile(t *testing.T) {
	path := t.TempDir() + "/secret"
	if err := os.WriteFile(path, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Config{MDEClientSecretFile: path}.ClientSecret()
	if err != nil || got != "s3cret" {
		t.Errorf("ClientSecret() = %q, %v; want s3cret", got, err)
	}
	if _, err := (Config{MDEClientSecretFile: path + ".missing"}).ClientSecret(); err == nil {
		t.Error("a missing secret file gave no error")
	}
}

// TestReadmeListsEveryVariable keeps the README's configuration table in step with the code: the table there
// must be exactly what MarkdownTable prints.
func TestReadmeListsEveryVariable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := MarkdownTable(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, b.Bytes()) {
		t.Errorf("README.md's configuration table is out of date; regenerate it with:\n  go run ./cmd/lr-relay help-markdown\nwant:\n%s", b.String())
	}
}
