// Command kedge is the edge proxy: it terminates TLS, authenticates callers and routes HTTP/1.1, HTTP/2, gRPC
// and CONNECT traffic to backends inside the cluster. See docs/kedge.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"google.golang.org/grpc/grpclog"

	"github.com/kedge-proxy/kedge/pkg/edge"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/shared/buildinfo"
	"github.com/kedge-proxy/kedge/pkg/shared/cli"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the exit code: 0 success, 1 runtime or config error, 2 usage error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "discover" {
		return discover(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "completion" {
		return completion(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "identity" {
		return identityCmd(args[1:], stdout, stderr)
	}
	var cfg config.Config
	fs, version := proxyFlags(&cfg)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "kedge %s: edge proxy for HTTP, gRPC and CONNECT into a private cluster.\n\nUsage: kedge [flags]\n       kedge discover --once [flags]   (print the config Kubernetes discovery generates; see --help there)\n       kedge completion bash|zsh|fish   (print a shell completion script)\n       kedge identity jwks --server_identity_signing_key_file=PATH   (print the identity tokens' public keys)\n\nFlags (snake_case or kebab-case):\n", buildinfo.Get().Version)
		fs.PrintDefaults()
	}
	if err := fs.Parse(cli.JoinBoolValues(fs, args)); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		fmt.Fprintf(stderr, "kedge: %v (see --help)\n", cli.SuggestFlag(fs, err))
		return 2
	}
	cli.PrintDeprecations(stderr, "kedge", fs)
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kedge: unexpected arguments %q (see --help)\n", fs.Args())
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, buildinfo.Get().String())
		return 0
	}
	if err := errors.Join(cli.ReadSecretFiles(fs), cfg.Validate()); err != nil {
		fmt.Fprintf(stderr, "kedge: invalid flags:\n%v\n", err)
		return 2
	}
	if cfg.CheckConfig {
		return checkConfig(cfg, stdout, stderr)
	}

	cli.SetDefaultGC()
	log, err := logging.New(logging.Options{Level: cfg.LogLevel, Format: cfg.LogFormat, Output: stderr, FlushInterval: cfg.LogFlushInterval})
	if err != nil {
		fmt.Fprintf(stderr, "kedge: %v\n", err)
		return 2
	}
	defer func() { _ = logging.Flush(log) }()
	grpclog.SetLoggerV2(logging.GRPCLogger(log))

	srv, err := edge.New(cfg, edge.Deps{Log: log})
	if err != nil {
		cli.PrintError(stderr, "kedge: cannot start", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	defer serve.OnSIGHUP(ctx, func() {
		log.Info("SIGHUP: reloading config documents and TLS files")
		srv.Reload()
	})()
	defer serve.OnRepeatedSignal(ctx, srv.SkipShutdownDelay, syscall.SIGTERM, os.Interrupt)() // a second SIGTERM: drain now
	if err := srv.Run(ctx); err != nil {
		log.Error("kedge failed", "error", err)
		return 1
	}
	return 0
}

// checkConfig validates the documents and prints what startup would log about them: every problem (exit 1), then
// every warning. Without any document there is nothing to check, which is said and exits 1, unless Kubernetes
// discovery is to supply the routes; documents that route nothing without discovery are invalid too.
func checkConfig(cfg config.Config, stdout, stderr io.Writer) int {
	src := cfg.Documents
	if src.DirectorPath == "" && src.DirectorInline == "" && src.BackendpoolPath == "" && src.BackendpoolInline == "" {
		if !cfg.K8s.DynamicRoutings {
			fmt.Fprintln(stderr, "no config documents to check: give --kedge_config_director_config_path and --kedge_config_backendpool_config_path (or their inline forms); without them and without --kedge_dynamic_routings_enabled kedge routes nothing")
			return 1
		}
		fmt.Fprintln(stdout, "no config documents given: every route will come from Kubernetes discovery (kedge discover --once shows them)")
		return 0
	}
	dyn, err := config.Load(src)
	if err != nil {
		fmt.Fprintf(stderr, "config is invalid:\n%v\n", err)
		return 1
	}
	empty := cfg.RoutesSomething(dyn)
	for _, w := range cfg.Warnings(dyn) {
		if empty == nil || w != empty.Error() {
			fmt.Fprintf(stderr, "warning: %s\n", w)
		}
	}
	if empty != nil {
		fmt.Fprintf(stderr, "config is invalid:\n%v\n", empty)
		return 1
	}
	fmt.Fprintf(stdout, "config is valid: %d HTTP routes, %d HTTP adhoc rules, %d gRPC routes, %d gRPC adhoc rules, %d backends\n",
		len(dyn.HTTPRoutes), len(dyn.HTTPAdhoc), len(dyn.GRPCRoutes), len(dyn.GRPCAdhoc), len(dyn.Backends))
	return 0
}
