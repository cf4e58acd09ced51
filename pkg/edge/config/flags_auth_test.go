package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/shared/cli"
)

// parseFlags parses args into a Config the way cmd/kedge does, with the TLS files set so that Validate only looks
// at what the test is about.
func parseFlags(t *testing.T, args ...string) (*Config, *pflag.FlagSet) {
	t.Helper()
	c := &Config{}
	fs := pflag.NewFlagSet("kedge", pflag.ContinueOnError)
	var out bytes.Buffer
	fs.SetOutput(&out)
	c.RegisterFlags(fs)
	if err := fs.Parse(append([]string{"--server_tls_cert_file=c.pem", "--server_tls_key_file=k.pem"}, args...)); err != nil {
		t.Fatalf("parsing %q: %v", args, err)
	}
	return c, fs
}

func TestAuthFlags(t *testing.T) {
	t.Parallel()
	c, _ := parseFlags(t)
	if c.Auth.Authn().OIDC != nil || c.Auth.StaticToken != "" || c.TunnelIdleTimeout != DefaultTunnelIdleTimeout {
		t.Errorf("defaults: %+v, tunnel idle %v", c.Auth, c.TunnelIdleTimeout)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}

	c, _ = parseFlags(t, "--server_oidc_provider_url=https://issuer.example.com", "--server-oidc-client-id=kedge",
		"--server_oidc_perms_claim=perms", "--server_oidc_required_perm=a, b", "--server_oidc_whitelist_perms=c",
		"--server-oidc-whitelist-perms=d", "--server_enable_oidc_for_debug_endpoints", "--server_tunnel_idle_timeout=30s")
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	o := c.Auth.Authn().OIDC
	if o == nil || o.IssuerURL != "https://issuer.example.com" || o.ClientID != "kedge" || o.PermsClaim != "perms" ||
		!slices.Equal(o.RequiredPerms, []string{"a", "b", "c", "d"}) || !c.Auth.OIDCForDebugEndpoints ||
		c.TunnelIdleTimeout != 30*time.Second {
		t.Errorf("parsed %+v, OIDC %+v", c.Auth, o)
	}
	if err := c.Auth.Authn().Validate(); err != nil {
		t.Errorf("authn rejects what the flags accepted: %v", err)
	}
	if o.KeyRefreshInterval != 5*time.Minute || len(o.Audiences) != 0 {
		t.Errorf("JWKS refresh interval %v, audiences %q; want the 5m default and none beyond kedge", o.KeyRefreshInterval, o.Audiences)
	}

	// Several audiences, comma-separated and repeated; the refresh interval.
	c, _ = parseFlags(t, "--server_oidc_provider_url=https://issuer.example.com", "--server_oidc_client_id=kedge, winch",
		"--server-oidc-client-id=cli", "--server_oidc_jwks_refresh_interval=90s")
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	o = c.Auth.Authn().OIDC
	if o.ClientID != "kedge" || !slices.Equal(o.Audiences, []string{"winch", "cli"}) || o.KeyRefreshInterval != 90*time.Second {
		t.Errorf("client ID %q, audiences %q, refresh %v; want kedge, [winch cli], 90s", o.ClientID, o.Audiences, o.KeyRefreshInterval)
	}
}

func TestAuthFlagErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want []string // substrings of the joined error
	}{
		{"static token with OIDC", []string{"--unsafe_bearer_token_proxy_auth=tok", "--server_oidc_provider_url=https://i.example.com",
			"--server_oidc_client_id=k"}, []string{"--unsafe_bearer_token_proxy_auth cannot be combined with OIDC (--server_oidc_provider_url, --server_oidc_client_id)"}},
		{"static token with the debug flag", []string{"--unsafe_bearer_token_proxy_auth=tok", "--server_enable_oidc_for_debug_endpoints"},
			[]string{"cannot be combined with OIDC (--server_enable_oidc_for_debug_endpoints)"}},
		{"OIDC flags without provider", []string{"--server_oidc_client_id=k", "--server_oidc_whitelist_perms=x"},
			[]string{"--server_oidc_client_id, --server_oidc_required_perm need --server_oidc_provider_url"}},
		{"provider without client ID", []string{"--server_oidc_provider_url=https://i.example.com"},
			[]string{"--server_oidc_client_id is required"}},
		{"plain-HTTP provider", []string{"--server_oidc_provider_url=http://i.example.com", "--server_oidc_client_id=k"},
			[]string{"must use https"}},
		{"perms without claim", []string{"--server_oidc_provider_url=https://i.example.com", "--server_oidc_client_id=k",
			"--server_oidc_required_perm=x"}, []string{"needs --server_oidc_perms_claim"}},
		{"token with a space", []string{"--unsafe_bearer_token_proxy_auth=a b"}, []string{"visible ASCII"}},
		{"tunnel idle timeout", []string{"--server_tunnel_idle_timeout=0s"}, []string{"--server_tunnel_idle_timeout"}},
		{"every problem at once", []string{"--server_oidc_provider_url=ftp://x", "--server_oidc_required_perm=x",
			"--server_tunnel_idle_timeout=-1s"}, []string{"must use https", "--server_oidc_client_id is required",
			"needs --server_oidc_perms_claim", "--server_tunnel_idle_timeout"}},
		{"JWKS refresh interval zero", []string{"--server_oidc_provider_url=https://i.example.com", "--server_oidc_client_id=k",
			"--server_oidc_jwks_refresh_interval=0s"}, []string{"--server_oidc_jwks_refresh_interval: 0s must be positive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _ := parseFlags(t, tt.args...)
			err := c.Validate()
			if err == nil {
				t.Fatal("Validate accepted the flags")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestStaticTokenIsRedacted(t *testing.T) {
	t.Parallel()
	const token = "s3cret-token-value"
	c, fs := parseFlags(t, "--unsafe_bearer_token_proxy_auth="+token)
	if string(c.Auth.StaticToken) != token || c.Auth.Authn().StaticToken != token {
		t.Fatalf("token not parsed: %q", c.Auth.Authn().StaticToken)
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var usage bytes.Buffer
	fs.SetOutput(&usage)
	fs.PrintDefaults()
	for _, s := range []string{fmt.Sprintf("%v|%+v|%#v|%s", c, *c, c.Auth, c.Auth.StaticToken), string(js), usage.String(),
		fs.Lookup("unsafe_bearer_token_proxy_auth").Value.String()} {
		if strings.Contains(s, token) {
			t.Errorf("the static token leaks (%d bytes of output)", len(s)) // the output itself would show it
		}
	}
	if !strings.Contains(fmt.Sprintf("%+v", c.Auth), "<redacted>") {
		t.Errorf("%+v does not show that a token is set", c.Auth)
	}
}

// TestSecretFlags pins the list of kedge's secret flags (a new one must be marked in RegisterFlags, where this list
// comes from) and checks that each has a working _file form.
func TestSecretFlags(t *testing.T) {
	t.Parallel()
	_, fs := parseFlags(t)
	if got, want := cli.SecretFlags(fs), []string{"unsafe_bearer_token_proxy_auth"}; !slices.Equal(got, want) {
		t.Fatalf("secret flags = %q, want %q", got, want)
	}
	const token = "t0ken-from-a-file"
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range cli.SecretFlags(fs) {
		for _, spelling := range []string{"--" + name + "_file=", "--" + strings.ReplaceAll(name, "_", "-") + "-file="} {
			c, fs := parseFlags(t, spelling+file)
			if err := cli.ReadSecretFiles(fs); err != nil {
				t.Fatalf("%s: %v", spelling, err)
			}
			if !fs.Changed(name) || string(c.Auth.StaticToken) != token {
				t.Errorf("%s did not set --%s", spelling, name)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("%s: Validate: %v", spelling, err)
			}
		}
		_, fs = parseFlags(t, "--"+name+"=x", "--"+name+"_file="+file)
		if err := cli.ReadSecretFiles(fs); err == nil || !strings.Contains(err.Error(), "--"+name+" and --"+name+"_file both given") {
			t.Errorf("both forms of --%s: %v", name, err)
		}
	}
}

func TestRedactArgs(t *testing.T) {
	t.Parallel()
	const token = "s3cret-token-value"
	args := []string{"/bin/kedge", "--unsafe_bearer_token_proxy_auth=" + token, "--unsafe-bearer-token-proxy-auth", token,
		"--unsafe_bearer_token_proxy_auth_file=/run/secrets/token", "--log_level", "debug"}
	want := []string{"/bin/kedge", "--unsafe_bearer_token_proxy_auth=<redacted>", "--unsafe-bearer-token-proxy-auth", "<redacted>",
		"--unsafe_bearer_token_proxy_auth_file=/run/secrets/token", "--log_level", "debug"}
	if got := RedactArgs(args); !slices.Equal(got, want) || strings.Contains(strings.Join(got, " "), token) {
		t.Errorf("RedactArgs = %d args, want %q", len(got), want)
	}
}

func TestDebugRemoteAccessFlag(t *testing.T) {
	t.Parallel()
	if c, _ := parseFlags(t); c.DebugRemoteAccess {
		t.Error("debug pages are open to remote peers by default")
	}
	if c, _ := parseFlags(t, "--server-debug-remote-access"); !c.DebugRemoteAccess {
		t.Error("--server-debug-remote-access not parsed")
	}
}
