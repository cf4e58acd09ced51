package winch_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/shared/cli"
	"github.com/kedge-proxy/kedge/pkg/winch"
)

// TestSecretFlags pins winch's secret flags: the inline auth document may hold tokens and client secrets. Its file
// form is --server_auth_config_path.
func TestSecretFlags(t *testing.T) {
	t.Parallel()
	var c winch.Config
	fs := pflag.NewFlagSet("winch", pflag.ContinueOnError)
	c.RegisterFlags(fs)
	if got, want := cli.SecretFlags(fs), []string{"server_auth_config"}; !slices.Equal(got, want) {
		t.Errorf("secret flags = %q, want %q", got, want)
	}
	const auth = `{"auth_sources": [{"name": "a", "token": {"token": "s3cr3t"}}]}`
	args := []string{"winch", "--server-auth-config", auth, "--server_auth_config=" + auth, "--server_auth_config_path=/home/u/auth.yaml"}
	want := []string{"winch", "--server-auth-config", "<redacted>", "--server_auth_config=<redacted>", "--server_auth_config_path=/home/u/auth.yaml"}
	if got := winch.RedactArgs(args); !slices.Equal(got, want) || strings.Contains(strings.Join(got, " "), "s3cr3t") {
		t.Errorf("RedactArgs = %d args, want %q", len(got), want)
	}
}
