package cli

import (
	"strings"

	"github.com/spf13/pflag"
)

// JoinBoolValues returns args with "--flag true" and "--flag false" rewritten as "--flag=true" / "--flag=false"
// for the boolean flags of fs (in any spelling fs normalises: kebab-case, deprecated aliases). The original kedge
// and winch used Go's flag parsing, and scripts written for them pass booleans that way; pflag reads "--flag" alone
// as true and the value as a stray argument. Arguments after "--" are left alone.
func JoinBoolValues(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if i+1 < len(args) && isBoolFlag(fs, a) {
			if v := strings.ToLower(args[i+1]); v == "true" || v == "false" {
				out = append(out, a+"="+v)
				i++
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

// isBoolFlag reports whether a is "--name" (no value) naming a boolean flag of fs.
func isBoolFlag(fs *pflag.FlagSet, a string) bool {
	name, ok := strings.CutPrefix(a, "--")
	if !ok || name == "" || strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(name)
	return f != nil && f.Value.Type() == "bool"
}
