package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// SuggestFlag returns err, a parse error of fs, with advice appended when err is about an unknown flag: for a flag
// of the original kedge or winch that no longer exists (the logstash_* flags), what to do instead; otherwise
// "; did you mean --x?" when fs has one flag (not hidden) whose name is close to it: a typo (a few letters off,
// kebab-case or not) or a part of the name (--mapper_config_path for --server_mapper_config_path). Other errors
// are returned as they are.
func SuggestFlag(fs *pflag.FlagSet, err error) error {
	if err == nil {
		return nil
	}
	name, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok || name == "" {
		return err
	}
	if h := removedFlagHint(name); h != "" {
		return &suggestionError{err: err, hint: h}
	}
	if s := closestFlag(fs, name); s != "" {
		return &suggestionError{err: err, suggestion: s}
	}
	return err
}

// suggestionError is a parse error with a suggestion or a hint; it unwraps to the parse error.
type suggestionError struct {
	err        error
	suggestion string // a flag name, for "did you mean"
	hint       string // said instead of a suggestion
}

func (e *suggestionError) Error() string {
	if e.hint != "" {
		return e.err.Error() + ": " + e.hint
	}
	return e.err.Error() + "; did you mean --" + e.suggestion + "?"
}
func (e *suggestionError) Unwrap() error { return e.err }

// removedFlagHint returns what to do instead of the original's flag name (as typed, "=value" included), or "" when
// name is not one of the original's flags that no longer exist.
func removedFlagHint(name string) string {
	name, _, _ = strings.Cut(canonicalFlag(name), "=")
	if strings.HasPrefix(name, "logstash_") {
		return "the original's logstash_* flags are not supported: log JSON (--log_format=json) to stderr and ship it with your log collector"
	}
	return ""
}

// PrintDeprecations writes a warning to w for each flag set on fs that is marked deprecated, in any of its spellings,
// with the reason fs was given. pflag would print its own notice to fs.Output(), which kedge and winch discard so that
// a parse error is printed once.
func PrintDeprecations(w io.Writer, prog string, fs *pflag.FlagSet) {
	fs.Visit(func(f *pflag.Flag) {
		if f.Deprecated != "" {
			fmt.Fprintf(w, "%s: warning: --%s is deprecated: %s\n", prog, f.Name, f.Deprecated)
		}
	})
}

// closestFlag returns the visible flag of fs closest to name, or "" when none is close enough.
func closestFlag(fs *pflag.FlagSet, name string) string {
	want := canonicalFlag(name)
	best, bestDist := "", -1
	var containing, ending []string // names with want inside; names ending in "_"+want
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Deprecated != "" {
			return
		}
		have := canonicalFlag(f.Name)
		if d := editDistance(want, have); bestDist < 0 || d < bestDist {
			best, bestDist = f.Name, d
		}
		if len(want) >= 4 && strings.Contains(have, want) {
			containing = append(containing, f.Name)
			if strings.HasSuffix(have, "_"+want) {
				ending = append(ending, f.Name)
			}
		}
	})
	// A few edits for a long name, fewer for a short one: "--port" must not become every flag with a port.
	switch {
	case best != "" && bestDist <= max(1, min(3, len(want)/4)):
		return best
	case len(containing) == 1:
		return containing[0]
	case len(ending) == 1:
		return ending[0]
	}
	return ""
}

// canonicalFlag is a flag name as compared: lower case, kebab-case and snake_case alike.
func canonicalFlag(name string) string { return strings.ReplaceAll(strings.ToLower(name), "-", "_") }

// editDistance is the Levenshtein distance between a and b, counting bytes (flag names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
