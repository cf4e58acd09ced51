package cli

import (
	"slices"
	"testing"

	"github.com/spf13/pflag"
)

func TestJoinBoolValues(t *testing.T) {
	t.Parallel()
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Bool("server_tls_client_cert_required", true, "")
	fs.Bool("debug_mode", false, "")
	fs.String("name", "", "")
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, n string) pflag.NormalizedName {
		b := []byte(n)
		for i := range b {
			if b[i] == '-' {
				b[i] = '_'
			}
		}
		return pflag.NormalizedName(b)
	})
	tests := []struct{ in, want []string }{
		{[]string{"--server_tls_client_cert_required", "false"}, []string{"--server_tls_client_cert_required=false"}},
		{[]string{"--debug-mode", "TRUE", "route", "x"}, []string{"--debug-mode=true", "route", "x"}},
		{[]string{"--debug_mode", "--name", "true"}, []string{"--debug_mode", "--name", "true"}}, // a string flag's value
		{[]string{"--debug_mode", "yes"}, []string{"--debug_mode", "yes"}},
		{[]string{"--debug_mode=false", "true"}, []string{"--debug_mode=false", "true"}},
		{[]string{"--", "--debug_mode", "true"}, []string{"--", "--debug_mode", "true"}},
		{[]string{"--unknown", "true"}, []string{"--unknown", "true"}},
	}
	for _, tt := range tests {
		if got := JoinBoolValues(fs, tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("JoinBoolValues(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// And the result parses as the original's scripts meant it.
	if err := fs.Parse(JoinBoolValues(fs, []string{"--server_tls_client_cert_required", "false", "--debug_mode", "true"})); err != nil {
		t.Fatal(err)
	}
	if v, _ := fs.GetBool("server_tls_client_cert_required"); v {
		t.Error("server_tls_client_cert_required still true")
	}
	if v, _ := fs.GetBool("debug_mode"); !v || len(fs.Args()) != 0 {
		t.Errorf("debug_mode %v, stray args %q", v, fs.Args())
	}
}
