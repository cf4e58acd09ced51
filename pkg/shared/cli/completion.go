package cli

import (
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// Shells returns the shells WriteCompletion writes scripts for.
func Shells() []string { return []string{"bash", "zsh", "fish"} }

// Completion describes a binary's command line for shell completion: its flags and subcommands.
type Completion struct {
	// Program is the binary's name, as the user types it.
	Program string
	// Flags are the flags of the binary without a subcommand.
	Flags *pflag.FlagSet
	// Commands are the subcommands, in the order they are offered.
	Commands []CompletionCommand
}

// CompletionCommand is one subcommand.
type CompletionCommand struct {
	// Name is the subcommand ("login").
	Name string
	// Summary describes it in a few words (fish shows it).
	Summary string
	// Flags are the flags it takes; nil for none.
	Flags *pflag.FlagSet
	// Args are the words offered for its arguments ("bash", "zsh", "fish"); empty offers file names.
	Args []string
}

// WriteCompletion writes the completion script of c for shell (bash, zsh or fish). The scripts offer the
// subcommands as the first word, the flags of the binary or of the subcommand given (hidden flags excepted) for a
// word starting with "-", and file names for the value of a flag that takes one, after a space or "=".
func WriteCompletion(w io.Writer, shell string, c Completion) error {
	switch shell {
	case "bash":
		return writeBash(w, c)
	case "zsh":
		return writeZsh(w, c)
	case "fish":
		return writeFish(w, c)
	}
	return fmt.Errorf("unknown shell %q: want one of %s", shell, strings.Join(Shells(), ", "))
}

// completionFlag is a visible flag as the scripts know it.
type completionFlag struct {
	name, usage string
	value       bool // takes a value (not a bool flag)
}

func visibleFlags(fs *pflag.FlagSet) []completionFlag {
	var out []completionFlag
	if fs == nil {
		return nil
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" {
			return
		}
		out = append(out, completionFlag{name: "--" + f.Name, usage: f.Usage, value: f.Value.Type() != "bool"})
	})
	out = append(out, completionFlag{name: "--help", usage: "show help"})
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// words returns the names of flags (only those taking a value when valueOnly), space-separated.
func words(flags []completionFlag, valueOnly bool) string {
	var names []string
	for _, f := range flags {
		if !valueOnly || f.value {
			names = append(names, f.name)
		}
	}
	return strings.Join(names, " ")
}

func commandNames(c Completion) string {
	names := make([]string, 0, len(c.Commands))
	for _, cmd := range c.Commands {
		names = append(names, cmd.Name)
	}
	return strings.Join(names, " ")
}

// identifier turns a program name into a shell function name.
func identifier(program string) string {
	return "_" + regexp.MustCompile(`[^A-Za-z0-9_]`).ReplaceAllString(program, "_")
}

func writeBash(w io.Writer, c Completion) error {
	fn := identifier(c.Program) + "_completion"
	var b strings.Builder
	fmt.Fprintf(&b, "# bash completion for %s. Load it with: source <(%s completion bash)\n", c.Program, c.Program)
	fmt.Fprintf(&b, "%s() {\n", fn)
	b.WriteString(`    local cur="${COMP_WORDS[COMP_CWORD]}" flag="" cmd="" flags="" valueflags="" args=""
    # "--flag=value" arrives as "--flag" "=" "value": COMP_WORDBREAKS holds "=".
    if [[ "$cur" == "=" ]]; then
        flag="${COMP_WORDS[COMP_CWORD-1]}"; cur=""
    elif (( COMP_CWORD > 1 )) && [[ "${COMP_WORDS[COMP_CWORD-1]}" == "=" ]]; then
        flag="${COMP_WORDS[COMP_CWORD-2]}"
    elif (( COMP_CWORD > 0 )); then
        flag="${COMP_WORDS[COMP_CWORD-1]}"
    fi
    if (( COMP_CWORD > 1 )) && [[ "${COMP_WORDS[1]}" != -* ]]; then
        cmd="${COMP_WORDS[1]}"
    fi
    case "$cmd" in
`)
	for _, cmd := range c.Commands {
		fl := visibleFlags(cmd.Flags)
		fmt.Fprintf(&b, "    %s)\n        flags=%q\n        valueflags=%q\n        args=%q\n        ;;\n",
			cmd.Name, words(fl, false), words(fl, true), strings.Join(cmd.Args, " "))
	}
	root := visibleFlags(c.Flags)
	fmt.Fprintf(&b, "    *)\n        flags=%q\n        valueflags=%q\n        ;;\n    esac\n", words(root, false), words(root, true))
	fmt.Fprintf(&b, `    if [[ -n "$flag" && " $valueflags " == *" $flag "* ]]; then
        compopt -o filenames 2>/dev/null
        COMPREPLY=( $(compgen -f -- "$cur") )
        return 0
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "$flags" -- "$cur") )
        return 0
    fi
    if (( COMP_CWORD == 1 )); then
        COMPREPLY=( $(compgen -W %q -- "$cur") )
        return 0
    fi
    if [[ -n "$args" ]]; then
        COMPREPLY=( $(compgen -W "$args" -- "$cur") )
        return 0
    fi
    compopt -o filenames 2>/dev/null
    COMPREPLY=( $(compgen -f -- "$cur") )
}
complete -F %s %s
`, commandNames(c), fn, c.Program)
	_, err := io.WriteString(w, b.String())
	return err
}

// zshWords quotes words for a zsh array literal.
func zshWords(s string) string {
	if s == "" {
		return ""
	}
	parts := strings.Fields(s)
	for i, p := range parts {
		parts[i] = "'" + p + "'"
	}
	return strings.Join(parts, " ")
}

func writeZsh(w io.Writer, c Completion) error {
	fn := identifier(c.Program)
	var b strings.Builder
	fmt.Fprintf(&b, "#compdef %s\n# zsh completion for %s. Load it with: source <(%s completion zsh)\n", c.Program, c.Program, c.Program)
	fmt.Fprintf(&b, "# or save it as %s in a directory of $fpath.\n", fn)
	fmt.Fprintf(&b, "%s() {\n", fn)
	b.WriteString(`    local cmd="" cur="${words[CURRENT]}"
    local -a flags valueflags args
    if (( CURRENT > 2 )) && [[ "${words[2]}" != -* ]]; then
        cmd="${words[2]}"
    fi
    case "$cmd" in
`)
	for _, cmd := range c.Commands {
		fl := visibleFlags(cmd.Flags)
		fmt.Fprintf(&b, "    %s)\n        flags=(%s)\n        valueflags=(%s)\n        args=(%s)\n        ;;\n",
			cmd.Name, zshWords(words(fl, false)), zshWords(words(fl, true)), zshWords(strings.Join(cmd.Args, " ")))
	}
	root := visibleFlags(c.Flags)
	fmt.Fprintf(&b, "    *)\n        flags=(%s)\n        valueflags=(%s)\n        ;;\n    esac\n", zshWords(words(root, false)), zshWords(words(root, true)))
	fmt.Fprintf(&b, `    if [[ "$cur" == --*=* ]]; then
        compset -P '*='
        _files
        return
    fi
    if (( CURRENT > 2 )) && (( ${valueflags[(Ie)${words[CURRENT-1]}]} )); then
        _files
        return
    fi
    if [[ "$cur" == -* ]]; then
        compadd -a flags
        return
    fi
    if (( CURRENT == 2 )); then
        compadd %s
        return
    fi
    if (( ${#args} )); then
        compadd -a args
        return
    fi
    _files
}
if [[ "${funcstack[1]}" == %s ]]; then
    %s "$@"
else
    compdef %s %s
fi
`, commandNames(c), fn, fn, fn, c.Program)
	_, err := io.WriteString(w, b.String())
	return err
}

// fishQuote quotes s for fish: single quotes, with \ and ' escaped.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// fishSummary shortens a flag's usage to its first clause, for fish's one-line descriptions.
func fishSummary(usage string) string {
	if i := strings.IndexAny(usage, ";("); i > 0 {
		usage = usage[:i]
	}
	return strings.TrimSpace(usage)
}

func writeFish(w io.Writer, c Completion) error {
	var b strings.Builder
	p := c.Program
	fmt.Fprintf(&b, "# fish completion for %s. Load it with: %s completion fish | source\n", p, p)
	fmt.Fprintf(&b, "# or save it as ~/.config/fish/completions/%s.fish\n", p)
	fmt.Fprintf(&b, "complete -c %s -e\n", p)
	names := commandNames(c)
	for _, cmd := range c.Commands {
		fmt.Fprintf(&b, "complete -c %s -f -n '__fish_use_subcommand' -a %s -d %s\n", p, cmd.Name, fishQuote(cmd.Summary))
	}
	flagLines := func(condition string, fs *pflag.FlagSet) {
		for _, f := range visibleFlags(fs) {
			line := fmt.Sprintf("complete -c %s -n %s -l %s", p, fishQuote(condition), strings.TrimPrefix(f.name, "--"))
			if f.value {
				line += " -r -F"
			}
			fmt.Fprintf(&b, "%s -d %s\n", line, fishQuote(fishSummary(f.usage)))
		}
	}
	if names != "" {
		flagLines("not __fish_seen_subcommand_from "+names, c.Flags)
	} else {
		flagLines("true", c.Flags)
	}
	for _, cmd := range c.Commands {
		flagLines("__fish_seen_subcommand_from "+cmd.Name, cmd.Flags)
		if len(cmd.Args) > 0 {
			fmt.Fprintf(&b, "complete -c %s -f -n %s -a %s\n", p, fishQuote("__fish_seen_subcommand_from "+cmd.Name), fishQuote(strings.Join(cmd.Args, " ")))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
