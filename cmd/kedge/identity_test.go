package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestIdentityJWKS(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "identity.pem")
	testutil.WriteKeyFile(t, keyFile, testutil.NewECKey(t))
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"prints the key set", []string{"identity", "jwks", "--server-identity-signing-key-file", keyFile}, 0, ""},
		{"no key file", []string{"identity", "jwks"}, 2, "give exactly --server_identity_signing_key_file"},
		{"unknown subcommand", []string{"identity", "sign"}, 2, "want the subcommand jwks"},
		{"missing file", []string{"identity", "jwks", "--server_identity_signing_key_file=" + keyFile + ".nope"}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
				t.Fatalf("kedge %v = %d, stderr %q; want %d, stderr containing %q", tt.args, code, stderr.String(), tt.code, tt.stderr)
			}
			if tt.code != 0 {
				return
			}
			var set struct {
				Keys []map[string]any `json:"keys"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &set); err != nil {
				t.Fatalf("output %q: %v", stdout.String(), err)
			}
			if len(set.Keys) != 1 || set.Keys[0]["alg"] != "ES256" || set.Keys[0]["kty"] != "EC" || set.Keys[0]["kid"] == "" {
				t.Errorf("key set %v: want one EC ES256 key with a kid", set.Keys)
			}
			if _, ok := set.Keys[0]["d"]; ok {
				t.Error("the key set holds the private key")
			}
		})
	}
}
