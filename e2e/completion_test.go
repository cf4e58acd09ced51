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
// TestShellCompletionZshFish does the same in zsh and fish.
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

// TestShellCompletionZshFish sources winch's zsh script in a real zsh (compadd, _files and compdef stubbed to print
// what they are given: the completion system itself needs a terminal) and asks fish for completions of winch's fish
// script with complete -C.
func TestShellCompletionZshFish(t *testing.T) {
	t.Parallel()
	script := func(shell string) string {
		out, err := exec.Command(filepath.Join(binDir, "winch"), "completion", shell).Output()
		if err != nil {
			t.Fatalf("winch completion %s: %v", shell, err)
		}
		path := filepath.Join(t.TempDir(), "winch."+shell)
		if err := os.WriteFile(path, out, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	t.Run("zsh", func(t *testing.T) {
		zsh := lookClient(t, "zsh")
		prog := `compdef() { print "compdef $*" }
compadd() { if [[ $1 == -a ]]; then print -r -- "${(P)2}"; else print -r -- "$*"; fi }
_files() { print FILES }
compset() { return 0 }
source "$1" || exit 9
t() { words=("$@"); CURRENT=$#; _winch }
t winch ''
t winch login --no
t winch completion ''
t winch --server_mapper_config_path ''
`
		out, err := exec.Command(zsh, "-f", "-c", prog, "zsh", script("zsh")).CombinedOutput()
		want := "compdef _winch winch\nlogin logout route ca completion\n" +
			"--debug_mode --help --log_format --log_level --no_browser --oidc_device_flow --server_auth_config --server_auth_config_path --server_bind_address --server_http_port --state_dir\n" +
			"bash zsh fish\nFILES\n"
		if err != nil || string(out) != want {
			t.Errorf("zsh: %v\n%s\nwant:\n%s", err, out, want)
		}
	})
	t.Run("fish", func(t *testing.T) {
		fish := lookClient(t, "fish")
		prog := `source $argv[1]; or exit 9
complete -C "winch login --no_b"
complete -C "winch completion "
complete -C "winch ca --"`
		out, err := exec.Command(fish, "--no-config", "-c", prog, script("fish")).CombinedOutput()
		want := "--no_browser\tnever open a browser for OIDC logins\nbash\nfish\nzsh\n--help\tshow help\n--state_dir\tdirectory for cached tokens and the MITM CA\n"
		if err != nil || string(out) != want {
			t.Errorf("fish: %v\n%q\nwant:\n%q", err, out, want)
		}
	})
}
