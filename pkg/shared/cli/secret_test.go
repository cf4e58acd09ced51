package cli_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/shared/cli"
)

// testToken stands for a secret; no test prints it.
const testToken = "s3cr3t-t0ken"

// newFlagSet declares a secret flag "token" (with its _file form), a secret "inline" whose file form is "inline_path",
// a plain "name", and a kebab-case normalisation with an alias "old_token" for "token".
func newFlagSet() (*pflag.FlagSet, *string, *string) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	token := fs.String("token", "", "")
	inline := fs.String("inline", "", "")
	fs.String("inline_path", "", "")
	fs.String("name", "", "")
	fs.Bool("verbose", false, "")
	cli.SecretFileFlag(fs, "token")
	cli.MarkSecret(fs, "inline", "inline_path")
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, n string) pflag.NormalizedName {
		n = strings.ReplaceAll(n, "-", "_")
		if n == "old_token" {
			n = "token"
		}
		return pflag.NormalizedName(n)
	})
	return fs, token, inline
}

func TestSecretFlags(t *testing.T) {
	t.Parallel()
	fs, _, _ := newFlagSet()
	if got, want := cli.SecretFlags(fs), []string{"inline", "token"}; !slices.Equal(got, want) {
		t.Errorf("SecretFlags = %q, want %q", got, want)
	}
	for name, want := range map[string]bool{"token": true, "old-token": true, "inline": true, "token_file": false, "inline_path": false, "name": false, "nope": false} {
		if got := cli.IsSecret(fs, name); got != want {
			t.Errorf("IsSecret(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestRedactArgs(t *testing.T) {
	t.Parallel()
	fs, _, _ := newFlagSet()
	r := cli.Redacted
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"equals form", []string{"kedge", "--token=" + testToken, "--name=n"}, []string{"kedge", "--token=" + r, "--name=n"}},
		{"separate value", []string{"kedge", "--token", testToken, "--name", "n"}, []string{"kedge", "--token", r, "--name", "n"}},
		{"kebab-case", []string{"--tok-en=x", "--inline", "{\"t\": 1}"}, []string{"--tok-en=x", "--inline", r}},
		{"alias", []string{"--old-token=" + testToken, "--old_token", testToken}, []string{"--old-token=" + r, "--old_token", r}},
		{"single dash", []string{"-token=" + testToken}, []string{"-token=" + r}},
		{"value that looks like a flag", []string{"--token", "--name=" + testToken, "--verbose"}, []string{"--token", r, "--verbose"}},
		{"value with =", []string{"--token=a=b" + testToken}, []string{"--token=" + r}},
		{"empty value", []string{"--token="}, []string{"--token=" + r}},
		{"last argument", []string{"--name=n", "--token"}, []string{"--name=n", "--token"}},
		{"after --", []string{"--", "--token=" + testToken}, []string{"--", "--token=" + r}},
		{"file forms are paths", []string{"--token_file=/run/secrets/t", "--inline_path", "/etc/a.yaml"}, []string{"--token_file=/run/secrets/t", "--inline_path", "/etc/a.yaml"}},
		{"plain flags and values untouched", []string{"--name", "token", "token", "-", "--verbose"}, []string{"--name", "token", "token", "-", "--verbose"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in := slices.Clone(tt.args)
			got := cli.RedactArgs(fs, in)
			if !slices.Equal(got, tt.want) {
				t.Errorf("RedactArgs = %d args, want %q (the input must not leak into a failure message)", len(got), tt.want)
			}
			if !slices.Equal(in, tt.args) {
				t.Error("RedactArgs changed its input")
			}
		})
	}
}

func TestReadSecretFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tokenFile := write("token", testToken+"\n")
	crlfFile := write("crlf", testToken+"\r\n\n")
	emptyFile := write("empty", "\n")
	tests := []struct {
		name    string
		args    []string
		want    string   // the token flag's value after reading
		errHas  []string // "" = no error
		changed bool
	}{
		{name: "file read, newline dropped", args: []string{"--token_file=" + tokenFile}, want: testToken, changed: true},
		{name: "CRLF and blank lines dropped", args: []string{"--token-file", crlfFile}, want: testToken, changed: true},
		{name: "flag alone", args: []string{"--token=x"}, want: "x", changed: true},
		{name: "neither", args: nil, want: ""},
		{name: "both", args: []string{"--token=x", "--token_file=" + tokenFile}, want: "x", changed: true,
			errHas: []string{"--token and --token_file both given"}},
		{name: "missing file", args: []string{"--token_file=" + filepath.Join(dir, "nope")},
			errHas: []string{"--token_file", filepath.Join(dir, "nope"), "no such file"}},
		{name: "a directory", args: []string{"--token_file=" + dir}, errHas: []string{"--token_file", dir}},
		{name: "empty file", args: []string{"--token_file=" + emptyFile}, errHas: []string{"--token_file", emptyFile, "is empty"}},
		{name: "empty name", args: []string{"--token_file="}, errHas: []string{"--token_file: empty file name"}},
		{name: "a MarkSecret file form is not read here", args: []string{"--inline_path=" + tokenFile}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs, token, inline := newFlagSet()
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := cli.ReadSecretFiles(fs)
			if len(tt.errHas) == 0 && err != nil {
				t.Fatalf("ReadSecretFiles: %v", err)
			}
			if len(tt.errHas) > 0 {
				if err == nil {
					t.Fatalf("ReadSecretFiles succeeded, want an error naming %q", tt.errHas)
				}
				for _, want := range tt.errHas {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q lacks %q", err, want)
					}
				}
				if strings.Contains(err.Error(), testToken) {
					t.Error("the error shows the secret")
				}
			}
			if *token != tt.want {
				t.Errorf("token has %d bytes, want %d", len(*token), len(tt.want))
			}
			if *inline != "" {
				t.Error("the inline flag was set from its _path form")
			}
			if got := fs.Changed("token"); got != tt.changed {
				t.Errorf("token Changed = %v, want %v", got, tt.changed)
			}
		})
	}
}

func TestMarkSecretNeedsBothFlags(t *testing.T) {
	t.Parallel()
	for name, mark := range map[string]func(*pflag.FlagSet){
		"no file flag":   func(fs *pflag.FlagSet) { cli.MarkSecret(fs, "token", "token_path") },
		"no secret flag": func(fs *pflag.FlagSet) { cli.SecretFileFlag(fs, "nothing") },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			fs.String("token", "", "")
			defer func() {
				if recover() == nil {
					t.Error("no panic for an undeclared flag")
				}
			}()
			mark(fs)
		})
	}
}
