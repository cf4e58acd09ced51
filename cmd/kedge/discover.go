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

	"github.com/kedge-proxy/kedge/pkg/edge"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/shared/cli"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// discover is "kedge discover": it prints the director and backendpool documents that Service discovery generates
// for the current cluster (after the routes of --kedge_config_*_path documents, if given) and, with --once, exits.
// It answers "what would kedge do?" without running a proxy, and changes nothing in the cluster. It takes the
// Kubernetes flags, the document paths and the log flags; the proxy's other flags do not apply.
func discover(args []string, stdout, stderr io.Writer) int {
	var (
		k8s  config.K8sConfig
		docs config.Source
	)
	fs := pflag.NewFlagSet("kedge discover", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // as for kedge itself: --help goes to stdout, a parse error is printed once
	k8s.RegisterFlags(fs)
	fs.StringVar(&docs.DirectorPath, "kedge_config_director_config_path", "", "director document whose routes come first, as kedge would merge them")
	fs.StringVar(&docs.BackendpoolPath, "kedge_config_backendpool_config_path", "", "backendpool document to merge with")
	logLevel := fs.String("log_level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log_format", "text", "log format: text or json")
	once := fs.Bool("once", false, "print the generated config once and exit; without it, print it again after every change until interrupted")
	_ = fs.MarkHidden("kedge_dynamic_routings_enabled") // implied
	fs.SetNormalizeFunc(config.NormalizeFlagName)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: kedge discover --once --discovery_external_domain_suffix=SUFFIX [flags]\n\n"+
			"Prints {\"director\": ..., \"backendpool\": ...}: the routes and backends kedge would generate from the Services\n"+
			"labelled <prefix>kedge-exposed: \"true\", after the routes of the given documents. Skipped Services are logged\n"+
			"to stderr. Nothing in the cluster is changed.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		fmt.Fprintf(stderr, "kedge discover: %v (see --help)\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kedge discover: unexpected arguments %q (see --help)\n", fs.Args())
		return 2
	}
	k8s.DynamicRoutings = true // what is printed is what kedge would do with discovery on
	if err := k8s.Validate(); err != nil {
		fmt.Fprintf(stderr, "kedge discover: invalid flags:\n%v\n", err)
		return 2
	}
	log, err := logging.New(logging.Options{Level: *logLevel, Format: *logFormat, Output: stderr})
	if err != nil {
		fmt.Fprintf(stderr, "kedge discover: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := edge.Discover(ctx, k8s, docs, log, stdout, *once); err != nil {
		cli.PrintError(stderr, "kedge discover", err)
		return 1
	}
	return 0
}
