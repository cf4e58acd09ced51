package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/shared/cli"
)

func testCompletion() cli.Completion {
	root := pflag.NewFlagSet("prog", pflag.ContinueOnError)
	root.String("server_mapper_config_path", "", "mapper file; reloaded")
	root.Bool("debug_mode", false, "debug logging")
	root.String("old", "", "")
	_ = root.MarkHidden("old")
	login := pflag.NewFlagSet("prog login", pflag.ContinueOnError)
	login.String("state_dir", "", "where tokens are kept")
	login.Bool("no_browser", false, "print the URL, open no browser")
	return cli.Completion{Program: "my-prog", Flags: root, Commands: []cli.CompletionCommand{
		{Name: "login", Summary: "log in to a source", Flags: login},
		{Name: "completion", Summary: "print a completion script", Args: cli.Shells()},
	}}
}

// TestCompletionBash sources the script in a real bash and asks it for completions as bash would.
func TestCompletionBash(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed to test the bash completion: %v", err)
	}
	var b strings.Builder
	if err := cli.WriteCompletion(&b, "bash", testCompletion()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "completion.bash")
	if err := os.WriteFile(script, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mapper.yaml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// complete WORDS...: COMP_WORDS as bash splits the line (COMP_WORDBREAKS splits "--flag=value" around "=").
	prog := `source "$1" || exit 9
complete -p my-prog
c() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _my_prog_completion; echo "$*: ${COMPREPLY[*]}"; }
c my-prog ""
c my-prog --s
c my-prog --d
c my-prog login --
c my-prog completion ""
c my-prog --server_mapper_config_path ma
c my-prog --server_mapper_config_path = ma
`
	cmd := exec.Command(bash, "--norc", "--noprofile", "-c", prog, "bash", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	want := []string{
		"complete -F _my_prog_completion my-prog",
		"my-prog : login completion",
		"my-prog --s: --server_mapper_config_path",
		"my-prog --d: --debug_mode",
		"my-prog login --: --help --no_browser --state_dir",
		"my-prog completion : bash zsh fish",
		"my-prog --server_mapper_config_path ma: mapper.yaml",
		"my-prog --server_mapper_config_path = ma: mapper.yaml",
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("bash completions:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
}

func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		shell string
		want  []string
	}{
		{"zsh", []string{"#compdef my-prog", "compdef _my_prog my-prog", "login)", "flags=('--help' '--no_browser' '--state_dir')", "args=('bash' 'zsh' 'fish')"}},
		{"fish", []string{"complete -c my-prog -f -n '__fish_use_subcommand' -a login -d 'log in to a source'",
			"complete -c my-prog -n 'not __fish_seen_subcommand_from login completion' -l server_mapper_config_path -r -F -d 'mapper file'",
			"complete -c my-prog -n '__fish_seen_subcommand_from login' -l no_browser -d 'print the URL, open no browser'",
			"complete -c my-prog -f -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'"}},
	}
	for _, tt := range tests {
		var b strings.Builder
		if err := cli.WriteCompletion(&b, tt.shell, testCompletion()); err != nil {
			t.Fatal(err)
		}
		for _, w := range tt.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s script lacks %q:\n%s", tt.shell, w, b.String())
			}
		}
		if strings.Contains(b.String(), "--old") {
			t.Errorf("%s script offers a hidden flag", tt.shell)
		}
	}
	if err := cli.WriteCompletion(&strings.Builder{}, "tcsh", testCompletion()); err == nil || !strings.Contains(err.Error(), "bash, zsh, fish") {
		t.Errorf("unknown shell: %v", err)
	}
}
