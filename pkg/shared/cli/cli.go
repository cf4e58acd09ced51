// Package cli holds the command-line handling kedge and winch share: errors that may span several lines, secret
// flags (which flags carry secrets, their _file forms, and command lines with the secrets redacted), advice for
// unknown and deprecated flags, shell completion scripts, and the garbage collector setting both serve with.
package cli

import (
	"fmt"
	"io"
	"strings"
)

// PrintError writes err after prefix with one line per line of its message, the continuation lines indented, so a
// document error listing several problems reads as one problem per line. A leading "<binary>: " on the message is
// dropped when prefix already starts with that binary's name.
func PrintError(w io.Writer, prefix string, err error) {
	lines := strings.Split(strings.TrimRight(err.Error(), "\n"), "\n")
	if bin, _, ok := strings.Cut(prefix, " "); ok {
		lines[0] = strings.TrimPrefix(lines[0], strings.TrimSuffix(bin, ":")+": ")
	}
	if len(lines) > 1 && !strings.HasSuffix(lines[0], ":") {
		fmt.Fprintf(w, "%s:\n", prefix)
	} else {
		fmt.Fprintf(w, "%s: %s\n", prefix, lines[0])
		lines = lines[1:]
	}
	for _, l := range lines {
		fmt.Fprintf(w, "  %s\n", l)
	}
}
