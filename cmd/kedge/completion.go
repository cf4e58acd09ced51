package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"

	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/shared/cli"
)

// proxyFlags declares the flags of kedge without a subcommand (the proxy).
func proxyFlags(cfg *config.Config) (fs *pflag.FlagSet, version *bool) {
	fs = pflag.NewFlagSet("kedge", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // pflag prints usage itself on errors; run prints exactly one message instead
	cfg.RegisterFlags(fs)
	version = fs.Bool("version", false, "print the version and exit")
	return fs, version
}

// completion is "kedge completion SHELL": it prints the completion script for bash, zsh or fish.
func completion(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("kedge completion", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: kedge completion bash|zsh|fish\n\n"+
			"Prints a script that completes kedge's subcommands and flags in that shell. To load it:\n"+
			"  bash: source <(kedge completion bash)     (or save it in /etc/bash_completion.d/kedge)\n"+
			"  zsh:  source <(kedge completion zsh)      (or save it as _kedge in a directory of $fpath)\n"+
			"  fish: kedge completion fish | source      (or save it as ~/.config/fish/completions/kedge.fish)\n")
	}
	if code, done := parseSubcommand(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "kedge completion: want exactly one shell: bash, zsh or fish (see --help)\n")
		return 2
	}
	var cfg config.Config
	root, _ := proxyFlags(&cfg)
	disc, _ := discoverFlags()
	c := cli.Completion{Program: "kedge", Flags: root, Commands: []cli.CompletionCommand{
		{Name: "discover", Summary: "print the config Kubernetes discovery generates", Flags: disc},
		{Name: "identity", Summary: "print the identity tokens' public keys (jwks)", Flags: identityFlags(), Args: []string{"jwks"}},
		{Name: "completion", Summary: "print a shell completion script", Args: cli.Shells()},
	}}
	if err := cli.WriteCompletion(stdout, fs.Arg(0), c); err != nil {
		fmt.Fprintf(stderr, "kedge completion: %v\n", err)
		return 2
	}
	return 0
}

// parseSubcommand parses args into fs, the flags of subcommand fs.Name(). It is done, with the exit code, when
// args asked for help (printed on stdout, 0) or did not parse (one line on stderr, with a suggestion for a mistyped
// flag, 2). Deprecated flags that were used get their notice on stderr.
func parseSubcommand(fs *pflag.FlagSet, args []string, stdout, stderr io.Writer) (code int, done bool) {
	if err := fs.Parse(cli.JoinBoolValues(fs, args)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0, true
		}
		fmt.Fprintf(stderr, "%s: %v (see --help)\n", fs.Name(), cli.SuggestFlag(fs, err))
		return 2, true
	}
	cli.PrintDeprecations(stderr, fs.Name(), fs)
	return 0, false
}

// identityFlags are the flags of "kedge identity jwks", as completion offers them.
func identityFlags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("kedge identity jwks", pflag.ContinueOnError)
	fs.String("server_identity_signing_key_file", "", "PEM private key whose public key to print")
	return fs
}
