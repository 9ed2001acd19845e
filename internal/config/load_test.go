package config

import (
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kelseyhightower/envconfig"
)

// TestLoadReportsEveryTypeError checks that one Load names every variable that does not parse, with its value
// and the form expected, instead of envconfig's first error in Go terms.
func TestLoadReportsEveryTypeError(t *testing.T) {
	setAll(t, map[string]string{
		"LR_WORKERS":            "eight",
		"LR_ACK_WAIT":           "5",
		"LR_SHUTDOWN_TIMEOUT":   "soon",
		"LR_PROVISION":          "yes",
		"LR_GETFILE_MAX_RATIO":  "lots",
		"LR_RETRY_BACKOFF":      "5s, 1m",
		"LR_DOWNLOAD_MAX_BYTES": "99999999999999999999",
		"LR_MDE_CLIENT_SECRET":  "not-a-number-but-a-string",
	})
	_, err := Load()
	if err == nil {
		t.Fatal("Load accepted malformed values")
	}
	want := []string{
		`LR_WORKERS="eight": must be an integer`,
		`LR_ACK_WAIT="5": must be a duration such as 30s or 5m (a number needs a unit)`,
		`LR_SHUTDOWN_TIMEOUT="soon": must be a duration such as 30s or 5m`,
		`LR_PROVISION="yes": must be true or false`,
		`LR_GETFILE_MAX_RATIO="lots": must be a number`,
		`LR_RETRY_BACKOFF="5s, 1m": must be a comma-separated list of durations such as 5s,1m, without spaces: item 2 " 1m" must be a duration such as 30s or 5m`,
		`LR_DOWNLOAD_MAX_BYTES="99999999999999999999": is out of range`,
	}
	got := strings.Split(err.Error(), "\n")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Load error lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestCheckValuesAgreesWithEnvconfig feeds the same values to checkValues and to envconfig: a value that
// checkValues accepts must load, and one it refuses must fail in envconfig too, for every field type.
func TestCheckValuesAgreesWithEnvconfig(t *testing.T) {
	values := []string{"", "8", "0x10", "-3", "eight", "1.5", "30s", "5", "true", "1", "yes", "5s,1m", "5s, 1m",
		"a,b", "99999999999999999999", "-1s"}
	vars := []string{"LR_WORKERS", "LR_DOWNLOAD_MAX_BYTES", "LR_ACK_WAIT", "LR_PROVISION", "LR_GETFILE_MAX_RATIO",
		"LR_RETRY_BACKOFF", "LR_DOWNLOAD_ALLOWED_HOSTS", "LR_NATS_URL"}
	for _, name := range vars {
		for _, v := range values {
			setAll(t, map[string]string{name: v})
			ours := checkValues(os.LookupEnv)
			var c Config
			theirs := envconfig.Process(Prefix, &c)
			if (ours == nil) != (theirs == nil) {
				t.Errorf("%s=%q: checkValues says %v, envconfig says %v", name, v, ours, theirs)
			}
		}
	}
}

// TestDefaultsParse checks every default tag with checkValues, as if each default were set explicitly.
func TestDefaultsParse(t *testing.T) {
	defaults := map[string]string{}
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		if name := typ.Field(i).Tag.Get("envconfig"); name != "" {
			defaults[Prefix+"_"+name] = typ.Field(i).Tag.Get("default")
		}
	}
	if len(defaults) != len(fields()) || len(defaults) < 50 {
		t.Fatalf("found %d defaults and %d fields, want every envconfig field of Config", len(defaults), len(fields()))
	}
	lookup := func(k string) (string, bool) { v, ok := defaults[k]; return v, ok && v != "" }
	if err := checkValues(lookup); err != nil {
		t.Errorf("a default does not parse: %v", err)
	}
}

func TestUnknownVariables(t *testing.T) {
	environ := []string{
		"PATH=/usr/bin", "LR_WORKERS=2", "LR_WORKS=3", "lr_workers=4", "LR_NATS_CRED_FILE=/x",
		"LR_ZZZZZZZZZZZZ=1", "LR_SIM_FAULTS=5xx=0.1", "LR_RATE_LIMIT=100/1m", "LR_MDE_CLIENTSECRET=s3cret", "LRX=1",
	}
	want := []string{
		"LR_MDE_CLIENTSECRET is not a known variable; did you mean LR_MDE_CLIENT_SECRET?",
		"LR_NATS_CRED_FILE is not a known variable; did you mean LR_NATS_CREDS_FILE?",
		"LR_RATE_LIMIT is not a known variable; did you mean LR_RATE_LIMITS?",
		"LR_WORKS is not a known variable; did you mean LR_WORKERS?",
		"LR_ZZZZZZZZZZZZ is not a known variable (lr-relay --help lists every variable)",
		"lr_workers is not a known variable (names are case-sensitive); did you mean LR_WORKERS?",
	}
	got := UnknownVariables(environ)
	if !slices.Equal(got, want) {
		t.Errorf("UnknownVariables:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, w := range got {
		if strings.Contains(w, "s3cret") {
			t.Errorf("warning %q repeats a value", w)
		}
	}
}

func TestClosest(t *testing.T) {
	names := []string{"LR_WORKERS", "LR_ACK_WAIT", "LR_MAX_DELIVER", "LR_DOWNLOAD_MAX_BYTES", "LR_GETFILE_MAX_BYTES"}
	tests := []struct{ in, want string }{
		{"LR_WORKERS", "LR_WORKERS"},
		{"LR_WORKS", "LR_WORKERS"},
		{"LR_WORKER", "LR_WORKERS"},
		{"LR_ACKWAIT", "LR_ACK_WAIT"},
		{"LR_MAX_DELIVERY", "LR_MAX_DELIVER"},
		{"LR_DOWNLOAD_MAX_SIZE", "LR_DOWNLOAD_MAX_BYTES"},
		{"LR_FOO", ""},
		{"LR_SOMETHING_ELSE_ENTIRELY", ""},
	}
	for _, tt := range tests {
		if got := Closest(tt.in, names); got != tt.want {
			t.Errorf("Closest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if d := editDistance("kitten", "sitting"); d != 3 {
		t.Errorf("editDistance(kitten, sitting) = %d, want 3", d)
	}
}

// TestEveryVariableReadIsKnown scans the module for LR_ variables read with os.Getenv or os.LookupEnv: each
// must be a Config field or in otherVariables, or UnknownVariables would warn about a variable that is used.
func TestEveryVariableReadIsKnown(t *testing.T) {
	known := map[string]bool{}
	for _, f := range fields() {
		known[f.name] = true
	}
	for _, n := range otherVariables() {
		known[n] = true
	}
	read := regexp.MustCompile(`(?:Getenv|LookupEnv|envOr)\("(LR_[A-Z0-9_]+)"[,)]`)
	found := 0
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range read.FindAllSubmatch(b, -1) {
			found++
			if !known[string(m[1])] {
				t.Errorf("%s reads %s, which UnknownVariables does not know: add it to otherVariables", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("found no os.Getenv(\"LR_...\") in the module: the scan is broken")
	}
}
