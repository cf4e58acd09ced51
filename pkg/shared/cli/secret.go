package cli

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
)

// Redacted stands in for a secret wherever one would be shown.
const Redacted = "<redacted>"

// Flag annotations that make "which flags carry secrets" part of the flag set itself, so that the binaries' Config
// declares it once, in RegisterFlags, and everything that shows flags reads it from there.
const (
	// annotationSecret marks a flag whose value is a secret; its value names the flag that gives the secret from a
	// file instead.
	annotationSecret = "kedge/secret"
	// annotationSecretFile marks a flag declared by SecretFileFlag; its value names the secret flag it fills.
	annotationSecretFile = "kedge/secret-file-for"
)

// MarkSecret records that flag name (declared on fs) carries a secret and that flag fileFlag gives it from a file:
// RedactArgs hides its values and SecretFlags lists it. fileFlag is read by whoever declared it; use SecretFileFlag
// for a file that is only read once, at startup. Both flags must exist: a missing one is a programming error.
func MarkSecret(fs *pflag.FlagSet, name, fileFlag string) {
	if fs.Lookup(fileFlag) == nil {
		panic(fmt.Sprintf("cli: MarkSecret(%q): no flag %q", name, fileFlag))
	}
	if err := fs.SetAnnotation(name, annotationSecret, []string{fileFlag}); err != nil {
		panic(fmt.Sprintf("cli: MarkSecret: %v", err))
	}
}

// SecretFileFlag declares name+"_file", a flag naming a file whose content ReadSecretFiles sets as the value of the
// secret flag name (declared on fs before), and marks name secret. It returns the file flag's name.
func SecretFileFlag(fs *pflag.FlagSet, name string) string {
	fileFlag := name + "_file"
	fs.String(fileFlag, "", "file holding the value of --"+name+" (trailing newlines are dropped), so the secret is not on the command line; not together with --"+name)
	if err := fs.SetAnnotation(fileFlag, annotationSecretFile, []string{name}); err != nil {
		panic(fmt.Sprintf("cli: SecretFileFlag: %v", err))
	}
	MarkSecret(fs, name, fileFlag)
	return fileFlag
}

// ReadSecretFiles reads the file of every flag declared by SecretFileFlag that was given on the command line and
// sets its content, without trailing newlines, as the value of the secret flag it stands for. Call it after Parse.
// It reports every problem at once: a secret given both ways, an unreadable or empty file. Errors name the flags
// and the file, never the content.
func ReadSecretFiles(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		target := f.Annotations[annotationSecretFile]
		if !f.Changed || len(target) != 1 {
			return
		}
		secret := fs.Lookup(target[0])
		path := f.Value.String()
		switch {
		case secret.Changed:
			errs = append(errs, fmt.Errorf("--%s and --%s both given: give the secret one way", secret.Name, f.Name))
			return
		case path == "":
			errs = append(errs, fmt.Errorf("--%s: empty file name", f.Name))
			return
		}
		b, err := os.ReadFile(path)
		if err != nil {
			// *PathError names the operation and the path only.
			errs = append(errs, fmt.Errorf("--%s: %w", f.Name, err))
			return
		}
		value := strings.TrimRight(string(b), "\r\n")
		if value == "" {
			errs = append(errs, fmt.Errorf("--%s: %s is empty", f.Name, path))
			return
		}
		if err := fs.Set(secret.Name, value); err != nil {
			// pflag's error would quote the value.
			errs = append(errs, fmt.Errorf("--%s: the content of %s is not a valid --%s", f.Name, path, secret.Name))
		}
	})
	return errors.Join(errs...)
}

// SecretFlags returns the names of fs's secret flags (see MarkSecret), sorted.
func SecretFlags(fs *pflag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) {
		if _, ok := f.Annotations[annotationSecret]; ok {
			names = append(names, f.Name)
		}
	})
	slices.Sort(names)
	return names
}

// IsSecret reports whether name (in any spelling fs's normalisation accepts) is a secret flag of fs.
func IsSecret(fs *pflag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	_, ok := f.Annotations[annotationSecret]
	return ok
}

// RedactArgs returns a copy of args (a command line, with or without the program name) in which the value of every
// secret flag of fs is Redacted: "--name=value" becomes "--name=<redacted>" and in "--name value" the next argument
// is replaced, as pflag would have taken it as the value. Kebab-case spellings and aliases are recognised through
// fs's normalisation. Arguments after "--" are checked too: showing less is never wrong here.
func RedactArgs(fs *pflag.FlagSet, args []string) []string {
	out := slices.Clone(args)
	for i := 0; i < len(out); i++ {
		a := out[i]
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !IsSecret(fs, name) {
			continue
		}
		if hasValue {
			out[i] = a[:strings.IndexByte(a, '=')+1] + Redacted
			continue
		}
		if i+1 < len(out) {
			out[i+1] = Redacted
			i++
		}
	}
	return out
}

// CmdlineHandler serves args like net/http/pprof's cmdline page (arguments separated by NUL bytes); pass a command
// line that RedactArgs has cleaned, never os.Args itself.
func CmdlineHandler(args []string) http.Handler {
	body := strings.Join(args, "\x00")
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write([]byte(body))
	})
}
