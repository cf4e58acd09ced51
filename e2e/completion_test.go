package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestShellCompletion runs "kedge completion bash" and "winch completion bash" (the real binaries), sources each
// script in a real bash, checks that it registered itself (complete -p) and asks it for completions as bash would;
// the zsh and fish scripts are checked for their registration lines.
func TestShellCompletion(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is needed: %v", err)
	}
	tests := []struct {
		bin   string
		lines []string // "WORDS...|want" pairs: the completions of the last word
		want  []string
	}{
		{"kedge", []string{"kedge |", "kedge --server_http_t|", "kedge discover --on|", "kedge completion |"},
			[]string{"complete -F _kedge_completion kedge", "discover identity completion", "--server_http_tls_port", "--once", "bash zsh fish"}},
		{"winch", []string{"winch |", "winch login --no_b|", "winch ca --|", "winch --server_mapper_config_p|"},
			[]string{"complete -F _winch_completion winch", "login logout route ca completion", "--no_browser", "--help --state_dir", "--server_mapper_config_path"}},
	}
	for _, tt := range tests {
		t.Run(tt.bin, func(t *testing.T) {
			t.Parallel()
			bin := filepath.Join(binDir, tt.bin)
			script := filepath.Join(t.TempDir(), tt.bin+".bash")
			out, err := exec.Command(bin, "completion", "bash").Output()
			if err != nil {
				t.Fatalf("%s completion bash: %v", tt.bin, err)
			}
			if err := os.WriteFile(script, out, 0o600); err != nil {
				t.Fatal(err)
			}
			prog := `source "$1" || exit 9
complete -p ` + tt.bin + `
c() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _` + tt.bin + `_completion; echo "${COMPREPLY[*]}"; }
`
			for _, l := range tt.lines {
				words := strings.Fields(strings.TrimSuffix(l, "|"))
				if strings.HasSuffix(l, " |") {
					words = append(words, "")
				}
				quoted := make([]string, len(words))
				for i, w := range words {
					quoted[i] = "'" + w + "'"
				}
				prog += "c " + strings.Join(quoted, " ") + "\n"
			}
			got, err := exec.Command(bash, "--norc", "--noprofile", "-c", prog, "bash", script).CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, got)
			}
			lines := strings.Split(strings.TrimSpace(string(got)), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("bash printed:\n%s\nwant %d lines", got, len(tt.want))
			}
			for i, w := range tt.want {
				if lines[i] != w {
					t.Errorf("line %d: %q, want %q", i, lines[i], w)
				}
			}
			for shell, want := range map[string]string{"zsh": "compdef _" + tt.bin + " " + tt.bin, "fish": "complete -c " + tt.bin + " -e"} {
				out, err := exec.Command(bin, "completion", shell).Output()
				if err != nil || !strings.Contains(string(out), want) {
					t.Errorf("%s completion %s: %v; output lacks %q", tt.bin, shell, err, want)
				}
			}
		})
	}
}
