// Command winch is the laptop-side proxy: point HTTP_PROXY/HTTPS_PROXY (or a browser's PAC URL) at it and it sends
// traffic for private clusters through the right kedge with the right credentials. See docs/winch.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"google.golang.org/grpc/grpclog"

	"github.com/kedge-proxy/kedge/pkg/shared/buildinfo"
	"github.com/kedge-proxy/kedge/pkg/shared/cli"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/winch"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command describes a subcommand: its argument and what it does.
type command struct {
	arg, summary string
}

// commandOrder lists the subcommands as usage shows them.
var commandOrder = [...]string{"run", "login", "logout", "route", "ca", "completion"}

// commandFlags returns the flags subcommand name uses, as its help and shell completion list them; nil for all
// (run). Every subcommand accepts every winch flag, so one set of flags (an alias, a script) serves them all; the
// others are ignored.
func commandFlags(name string) []string {
	logFlags := []string{"log_level", "log_format", "debug_mode"}
	auth := []string{"server_auth_config_path", "server_auth_config"}
	running := []string{"server_bind_address", "server_http_port"} // where a running winch is asked
	switch name {
	case "login":
		return slices.Concat(auth, []string{"state_dir", "oidc_device_flow", "no_browser"}, running, logFlags)
	case "logout":
		return slices.Concat(auth, []string{"state_dir"}, running, logFlags)
	case "route":
		return slices.Concat([]string{"server_mapper_config_path", "server_mapper_config"}, auth, []string{"unmatched", "state_dir"})
	case "ca":
		return []string{"state_dir"}
	case "completion":
		return []string{}
	}
	return nil
}

// subcommandFlags returns the flags of fs that subcommand name uses (see commandFlags), or fs itself for run.
func subcommandFlags(fs *pflag.FlagSet, name string) *pflag.FlagSet {
	names := commandFlags(name)
	if names == nil {
		return fs
	}
	sub := pflag.NewFlagSet("winch "+name, pflag.ContinueOnError)
	for _, n := range names {
		if f := fs.Lookup(n); f != nil {
			sub.AddFlag(f)
		}
	}
	return sub
}

// lookupCommand returns the subcommand called name.
func lookupCommand(name string) (command, bool) {
	switch name {
	case "run":
		return command{"", "run the proxy (the default)"}, true
	case "login":
		return command{"NAME", "log in to auth source NAME (OIDC: prints the URL and opens a browser unless --no_browser, or the device flow with --oidc_device_flow)"}, true
	case "logout":
		return command{"NAME", "forget the cached tokens of auth source NAME"}, true
	case "route":
		return command{"HOST[:PORT]", "print which route, kedge and auth sources winch would use for a destination; sends nothing"}, true
	case "ca":
		return command{"", "print the MITM CA certificate (PEM) to trust for routes with mitm: true, creating it if needed"}, true
	case "completion":
		return command{"SHELL", "print a shell completion script for bash, zsh or fish (bash: source <(winch completion bash))"}, true
	}
	return command{}, false
}

// run returns the exit code: 0 success, 1 runtime error (or, for route, no kedge destination), 2 usage error.
func run(args []string, stdout, stderr io.Writer) int {
	name := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		target := "run"
		if len(args) > 0 {
			target = args[0]
		}
		name, args = target, []string{"--help"}
	}
	cmd, ok := lookupCommand(name)
	if !ok {
		fmt.Fprintf(stderr, "winch: unknown command %q (see winch --help)\n", name)
		return 2
	}

	var cfg winch.Config
	fs := pflag.NewFlagSet("winch", pflag.ContinueOnError)
	cfg.RegisterFlags(fs)
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() { usage(fs, name, cmd) }
	fs.SetOutput(io.Discard) // pflag prints usage itself on errors; run prints exactly one message instead
	if err := fs.Parse(cli.JoinBoolValues(fs, args)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		fmt.Fprintf(stderr, "winch: %v (see --help)\n", cli.SuggestFlag(subcommandFlags(fs, name), err))
		return 2
	}
	cli.PrintDeprecations(stderr, "winch", fs)
	if *version {
		fmt.Fprintln(stdout, buildinfo.Get().String())
		return 0
	}
	want := 0
	if cmd.arg != "" {
		want = 1
	}
	if fs.NArg() != want {
		if want == 0 {
			fmt.Fprintf(stderr, "winch %s: unexpected arguments %q (see --help)\n", name, fs.Args())
		} else {
			fmt.Fprintf(stderr, "winch %s: want exactly one %s (see winch %s --help)\n", name, cmd.arg, name)
		}
		return 2
	}
	if name == "completion" {
		if err := cli.WriteCompletion(stdout, fs.Arg(0), completionSpec(fs)); err != nil {
			fmt.Fprintf(stderr, "winch completion: %v\n", err)
			return 2
		}
		return 0
	}
	if err := errors.Join(cli.ReadSecretFiles(fs), cfg.Validate()); err != nil {
		fmt.Fprintf(stderr, "winch: invalid flags:\n%v\n", err)
		return 2
	}
	log, err := logging.New(logging.Options{Level: cfg.EffectiveLogLevel(), Format: cfg.LogFormat, Output: stderr})
	if err != nil {
		fmt.Fprintf(stderr, "winch: %v\n", err)
		return 2
	}
	if cfg.CheckConfig {
		return checkConfig(cfg, stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	switch name {
	case "login":
		err = winch.Login(ctx, cfg, log, fs.Arg(0), stdout)
	case "logout":
		err = winch.Logout(ctx, cfg, log, fs.Arg(0), stdout)
	case "route":
		var matched bool
		matched, err = winch.Explain(cfg, fs.Arg(0), stdout)
		if err == nil && !matched {
			return 1
		}
	case "ca":
		var pem []byte
		if pem, err = winch.CAPEM(cfg); err == nil {
			_, err = stdout.Write(pem)
		}
	default:
		cli.SetDefaultGC()
		return serveProxy(ctx, cfg, log, stderr)
	}
	if err != nil {
		cli.PrintError(stderr, "winch "+name, err)
		return 1
	}
	return 0
}

// checkConfig is --check-config, with kedge's contract: every problem of the documents as "file: field.path:
// reason" and exit 1; else every warning startup would log as "warning: ..." on stderr, a summary on stdout and
// exit 0.
func checkConfig(cfg winch.Config, stdout, stderr io.Writer) int {
	res, err := winch.CheckConfig(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "config is invalid:\n%v\n", strings.TrimPrefix(strings.TrimPrefix(err.Error(), "winch: "), "auth sources: "))
		return 1
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "config is valid: %d routes, %d auth sources\n", res.Routes, res.AuthSources)
	return 0
}

func serveProxy(ctx context.Context, cfg winch.Config, log logging.Logger, stderr io.Writer) int {
	grpclog.SetLoggerV2(logging.GRPCLogger(log))
	w, err := winch.New(cfg, log)
	if err != nil {
		cli.PrintError(stderr, "winch: cannot start", err)
		return 1
	}
	defer serve.OnSIGHUP(ctx, func() {
		log.Info("SIGHUP: reloading config documents")
		w.Reload()
	})()
	if err := w.Run(ctx); err != nil {
		log.Error("winch failed", logging.FieldError, err)
		return 1
	}
	return 0
}

func usage(fs *pflag.FlagSet, name string, cmd command) {
	out := fs.Output()
	v := buildinfo.Get().Version
	if name == "run" {
		fmt.Fprintf(out, "winch %s: local proxy that sends HTTP, HTTPS (CONNECT) and gRPC traffic for private clusters through kedge.\n\n", v)
		fmt.Fprintf(out, "Usage: winch [command] [flags]\n\nCommands:\n")
		for _, n := range commandOrder {
			c, _ := lookupCommand(n)
			fmt.Fprintf(out, "  %-20s %s\n", strings.TrimSpace(n+" "+c.arg), c.summary)
		}
		fmt.Fprintf(out, "\nFlags (snake_case or kebab-case) for running the proxy; \"winch COMMAND --help\" lists the flags a command uses.\n\nFlags:\n")
		fs.PrintDefaults()
		return
	}
	sub := subcommandFlags(fs, name)
	words := strings.Fields("winch " + name + " " + cmd.arg)
	if sub.HasFlags() {
		words = append(words, "[flags]")
	}
	fmt.Fprintf(out, "Usage: %s\n\n%s.\n", strings.Join(words, " "), strings.ToUpper(cmd.summary[:1])+cmd.summary[1:])
	if !sub.HasFlags() {
		return
	}
	fmt.Fprintf(out, "\nFlags (snake_case or kebab-case; the proxy's other flags are accepted and ignored):\n")
	sub.SetOutput(out)
	sub.PrintDefaults()
}

// completionSpec describes winch's command line for shell completion: fs holds every flag.
func completionSpec(fs *pflag.FlagSet) cli.Completion {
	c := cli.Completion{Program: "winch", Flags: fs}
	for _, n := range commandOrder[1:] {
		cmd, _ := lookupCommand(n)
		summary, _, _ := strings.Cut(cmd.summary, " (")
		cc := cli.CompletionCommand{Name: n, Summary: summary, Flags: subcommandFlags(fs, n)}
		if n == "completion" {
			cc.Args = cli.Shells()
		}
		c.Commands = append(c.Commands, cc)
	}
	return c
}
