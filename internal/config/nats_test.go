package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidateNATS(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "present")
	if err := os.WriteFile(file, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(dir, "unreadable")
	if err := os.WriteFile(unreadable, []byte("x"), 0o000); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")

	for _, tc := range []struct {
		name string
		vars map[string]string
		// want: each must appear in the error; nil means valid.
		want []string
		// secret must not appear in the error.
		secret string
	}{
		{name: "mutual tls", vars: map[string]string{"LR_NATS_TLS_CA_FILE": file, "LR_NATS_TLS_CERT_FILE": file,
			"LR_NATS_TLS_KEY_FILE": file, "LR_NATS_USER": "relay", "LR_NATS_PASSWORD_FILE": file}},
		{name: "token and tls:// URL", vars: map[string]string{"LR_NATS_URL": "tls://a:4222,tls://b:4222",
			"LR_NATS_TOKEN_FILE": file}},
		{name: "URL without scheme", vars: map[string]string{"LR_NATS_URL": "127.0.0.1:4222"}},
		{name: "missing CA", vars: map[string]string{"LR_NATS_TLS_CA_FILE": missing},
			want: []string{"LR_NATS_TLS_CA_FILE", "no such file"}},
		{name: "empty token file", vars: map[string]string{"LR_NATS_TOKEN_FILE": empty},
			want: []string{"LR_NATS_TOKEN_FILE", "is empty"}},
		{name: "directory as seed", vars: map[string]string{"LR_NATS_NKEY_SEED_FILE": dir},
			want: []string{"LR_NATS_NKEY_SEED_FILE", "is a directory"}},
		{name: "missing creds", vars: map[string]string{"LR_NATS_CREDS_FILE": missing},
			want: []string{"LR_NATS_CREDS_FILE"}},
		{name: "certificate without key", vars: map[string]string{"LR_NATS_TLS_CERT_FILE": file},
			want: []string{"LR_NATS_TLS_KEY_FILE", "LR_NATS_TLS_CERT_FILE"}},
		{name: "user without password", vars: map[string]string{"LR_NATS_USER": "relay"},
			want: []string{"LR_NATS_PASSWORD_FILE"}},
		{name: "two methods", vars: map[string]string{"LR_NATS_CREDS_FILE": file, "LR_NATS_TOKEN_FILE": file},
			want: []string{"one NATS authentication method", "LR_NATS_CREDS_FILE and LR_NATS_TOKEN_FILE"}},
		{name: "URL credentials and a seed", vars: map[string]string{"LR_NATS_URL": "nats://relay:hunter2@a:4222",
			"LR_NATS_NKEY_SEED_FILE": file},
			want: []string{"LR_NATS_NKEY_SEED_FILE and credentials in LR_NATS_URL"}, secret: "hunter2"},
		{name: "bad scheme", vars: map[string]string{"LR_NATS_URL": "http://tok3n@a:4222"},
			want: []string{"LR_NATS_URL", `scheme must be nats, tls, ws or wss, got "http"`}, secret: "tok3n"},
		{name: "unparsable URL with credentials", vars: map[string]string{"LR_NATS_URL": "nats://a,nats://u:pa%zz@b:4222"},
			want: []string{"LR_NATS_URL: entry 2 of 2 is not a URL"}, secret: "pa%zz"},
		{name: "bad inbox prefix", vars: map[string]string{"LR_NATS_INBOX_PREFIX": "_INBOX.>"},
			want: []string{"LR_NATS_INBOX_PREFIX"}},
		{name: "bad domain", vars: map[string]string{"LR_NATS_JS_DOMAIN": "a.b"},
			want: []string{"LR_NATS_JS_DOMAIN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			setAll(t, tc.vars)
			c, err := Load()
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error naming %v, got none", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q holds the secret %q", err, tc.secret)
			}
		})
	}

	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads any file")
		}
		setAll(t, map[string]string{"LR_NATS_PASSWORD_FILE": unreadable, "LR_NATS_USER": "relay"})
		c, err := Load()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "LR_NATS_PASSWORD_FILE") {
			t.Errorf("want an error naming LR_NATS_PASSWORD_FILE, got %v", err)
		}
	})
}
