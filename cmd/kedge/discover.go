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
	fs, opts := discoverFlags()
	k8s := &opts.k8s
	if code, done := parseSubcommand(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kedge discover: unexpected arguments %q (see --help)\n", fs.Args())
		return 2
	}
	// What is printed is what kedge would do with discovery on. The flag that turns it on is implied here, so a
	// missing suffix is reported without naming it.
	var errs []error
	if k8s.ExternalDomainSuffix == "" {
		errs = append(errs, errors.New("--discovery_external_domain_suffix is required: generated hosts are <service>.<namespace>.svc.<suffix>"))
	}
	k8s.DynamicRoutings = false
	errs = append(errs, k8s.Validate())
	k8s.DynamicRoutings = true
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "kedge discover: invalid flags:\n%v\n", err)
		return 2
	}
	log, err := logging.New(logging.Options{Level: opts.logLevel, Format: opts.logFormat, Output: stderr})
	if err != nil {
		fmt.Fprintf(stderr, "kedge discover: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := edge.Discover(ctx, *k8s, opts.docs, log, stdout, opts.once); err != nil {
		cli.PrintError(stderr, "kedge discover", err)
		return 1
	}
	return 0
}

// discoverOptions are the values of kedge discover's flags.
type discoverOptions struct {
	k8s                 config.K8sConfig
	docs                config.Source
	logLevel, logFormat string
	once                bool
}

// discoverFlags declares kedge discover's flags: the Kubernetes flags, the document paths and the log flags.
func discoverFlags() (*pflag.FlagSet, *discoverOptions) {
	var o discoverOptions
	fs := pflag.NewFlagSet("kedge discover", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // as for kedge itself: --help goes to stdout, a parse error is printed once
	o.k8s.RegisterFlags(fs)
	fs.StringVar(&o.docs.DirectorPath, "kedge_config_director_config_path", "", "director document whose routes come first, as kedge would merge them")
	fs.StringVar(&o.docs.BackendpoolPath, "kedge_config_backendpool_config_path", "", "backendpool document to merge with")
	fs.StringVar(&o.logLevel, "log_level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log_format", "text", "log format: text or json")
	fs.BoolVar(&o.once, "once", false, "print the generated config once and exit; without it, print it again after every change until interrupted")
	_ = fs.MarkHidden("kedge_dynamic_routings_enabled") // implied, so the suffix is simply required
	fs.Lookup("discovery_external_domain_suffix").Usage = "domain of generated host names, <service>.<namespace>.svc.<suffix> (required)"
	fs.SetNormalizeFunc(config.NormalizeFlagName)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: kedge discover --once --discovery_external_domain_suffix=SUFFIX [flags]\n\n"+
			"Prints {\"director\": ..., \"backendpool\": ...}: the routes and backends kedge would generate from the Services\n"+
			"labelled <prefix>kedge-exposed: \"true\", after the routes of the given documents. Skipped Services are logged\n"+
			"to stderr. Nothing in the cluster is changed.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs, &o
}
