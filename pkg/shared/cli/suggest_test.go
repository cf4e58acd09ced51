package cli_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/shared/cli"
)

func TestSuggestFlag(t *testing.T) {
	t.Parallel()
	newFS := func() *pflag.FlagSet {
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		fs.SetOutput(&strings.Builder{})
		fs.String("server_mapper_config_path", "", "")
		fs.String("server_mapper_config", "", "")
		fs.String("server_auth_config_path", "", "")
		fs.Int("server_http_port", 0, "")
		fs.Int("server_grpc_port", 0, "")
		fs.Bool("debug_mode", false, "")
		fs.String("old_name", "", "")
		_ = fs.MarkHidden("old_name")
		fs.SetNormalizeFunc(func(_ *pflag.FlagSet, n string) pflag.NormalizedName {
			return pflag.NormalizedName(strings.ReplaceAll(n, "-", "_"))
		})
		return fs
	}
	tests := []struct {
		arg, want string // want "" means no suggestion
	}{
		{"--server_http_prot=1", "server_http_port"},
		{"--server-mapper-config-pth=x", "server_mapper_config_path"},
		{"--debugmode", "debug_mode"},
		{"--auth_config_path=x", "server_auth_config_path"}, // a part of exactly one name
		{"--mapper_config=x", "server_mapper_config"},       // close enough to one, though part of two
		{"--port=1", ""},    // short and part of two names: no guess
		{"--old_nme=x", ""}, // hidden flags are never suggested
		{"--completely_different=1", ""},
	}
	for _, tt := range tests {
		fs := newFS()
		perr := fs.Parse([]string{tt.arg})
		if perr == nil {
			t.Fatalf("%s parsed", tt.arg)
		}
		err := cli.SuggestFlag(fs, perr)
		if !errors.Is(err, perr) {
			t.Errorf("%s: SuggestFlag's error does not wrap the parse error", tt.arg)
		}
		suffix := "; did you mean --" + tt.want + "?"
		switch {
		case tt.want == "" && strings.Contains(err.Error(), "did you mean"):
			t.Errorf("%s: %v; want no suggestion", tt.arg, err)
		case tt.want != "" && !strings.HasSuffix(err.Error(), suffix):
			t.Errorf("%s: %v; want it to end in %q", tt.arg, err, suffix)
		}
	}
	other := errors.New(`invalid argument "x" for "--server_http_port" flag`)
	if got := cli.SuggestFlag(newFS(), other); got != other {
		t.Errorf("SuggestFlag changed an error that is not about an unknown flag: %v", got)
	}
}

func TestSuggestFlagRemovedFlags(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--logstash_host=x", "--logstash-hostport=x", "--logstash_write_timeout=1s"} {
		fs := pflag.NewFlagSet("kedge", pflag.ContinueOnError)
		fs.SetOutput(&strings.Builder{})
		fs.String("log_format", "text", "")
		perr := fs.Parse([]string{arg})
		if perr == nil {
			t.Fatalf("%s parsed", arg)
		}
		err := cli.SuggestFlag(fs, perr)
		if !errors.Is(err, perr) || !strings.Contains(err.Error(), "logstash_* flags are not supported") || !strings.Contains(err.Error(), "--log_format=json") {
			t.Errorf("%s: %v; want the logstash hint", arg, err)
		}
	}
}

func TestPrintDeprecations(t *testing.T) {
	t.Parallel()
	fs := pflag.NewFlagSet("kedge", pflag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	fs.Duration("discovery_resync_timeout", 0, "")
	fs.Duration("k8sclient_auth_timeout", 0, "")
	fs.Int("port", 0, "")
	_ = fs.MarkDeprecated("discovery_resync_timeout", "it has no effect")
	_ = fs.MarkDeprecated("k8sclient_auth_timeout", "it has no effect")
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, n string) pflag.NormalizedName {
		return pflag.NormalizedName(strings.Replace(n, "timouet", "timeout", 1))
	})
	if err := fs.Parse([]string{"--discovery_resync_timouet=1m", "--port=1"}); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	cli.PrintDeprecations(&b, "kedge", fs)
	if want := "kedge: warning: --discovery_resync_timeout is deprecated: it has no effect\n"; b.String() != want {
		t.Errorf("got %q, want %q", b.String(), want)
	}
}
