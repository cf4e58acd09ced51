package winch

import (
	"errors"
	"fmt"
	"net"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/winch/config"
	"github.com/kedge-proxy/kedge/pkg/winch/credentials"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// CheckResult is what `winch --check-config` found in documents that load.
type CheckResult struct {
	// Routes and AuthSources count what the documents define.
	Routes, AuthSources int
	// Warnings are what winch would warn about at startup with the same flags and documents, one sentence each.
	Warnings []string
}

// CheckConfig loads and validates the mapper and auth documents as startup does, builds the auth sources (without
// network I/O, as startup does) and collects every warning startup would log, binding nothing. A document problem
// is an error listing every problem as "file: field.path: reason".
func CheckConfig(cfg Config) (CheckResult, error) {
	dyn, err := config.Load(cfg.Documents)
	if err != nil {
		return CheckResult{}, err
	}
	res := CheckResult{Routes: len(dyn.Mapper.Routes), AuthSources: len(dyn.Auth.Sources), Warnings: cfg.flagWarnings()}
	res.Warnings = append(res.Warnings, cfg.documentWarnings()...)
	stateDir, err := cfg.ResolvedStateDir()
	if err != nil {
		return CheckResult{}, err
	}
	set, err := credentials.New(dyn.Auth.Sources, credentials.Deps{StateDir: stateDir, Log: logging.Discard()})
	if err != nil {
		return CheckResult{}, fmt.Errorf("winch: auth sources: %w", err)
	}
	for _, u := range unavailableSources(set, dyn.Mapper.Routes) {
		res.Warnings = append(res.Warnings, unavailableWarning(u))
	}
	return res, nil
}

// unavailableWarning is the warning about a source that cannot be loaded, as --check-config and /debug/config
// show it.
func unavailableWarning(u unavailable) string {
	return fmt.Sprintf("auth source %q cannot be loaded; requests through the routes that use it (%v) fail until it can: %v",
		u.name, u.routes, u.err)
}

// flagWarnings are the warnings about the flags that New logs.
func (c *Config) flagWarnings() []string {
	var out []string
	if c.ClientTLS.InsecureSkipVerify {
		out = append(out, "--client_insecure: kedges' certificates are NOT verified; anyone on the path can take your tokens")
	}
	if ip := net.ParseIP(c.BindAddress); ip != nil && !ip.IsLoopback() {
		out = append(out, fmt.Sprintf("winch listens on a non-loopback address (%s): whoever reaches it can use your credentials", c.BindAddress))
	}
	return out
}

// documentWarnings are the warnings about where the documents come from: an inline document next to its _path
// flag is ignored.
func (c *Config) documentWarnings() []string {
	var out []string
	if c.Documents.MapperPath != "" && c.Documents.MapperInline != "" {
		out = append(out, config.MapperInlineName+" is ignored: "+config.MapperPathName+" is set")
	}
	if c.Documents.AuthPath != "" && c.Documents.AuthInline != "" {
		out = append(out, config.AuthInlineName+" is ignored: "+config.AuthPathName+" is set")
	}
	return out
}

// unavailable is an auth source that could not be loaded, and the routes (indexes) that use it.
type unavailable struct {
	name   string
	routes []int
	err    error
}

// unavailableSources lists the sources of set that could not be loaded, with the routes that use each.
func unavailableSources(set *credentials.Set, routes []mapper.Route) []unavailable {
	var out []unavailable
	for _, err := range set.Unavailable() {
		u := unavailable{err: err, routes: []int{}}
		var srcErr *credentials.Error
		if errors.As(err, &srcErr) {
			u.name = srcErr.Source
		}
		for i, r := range routes {
			if r.ProxyAuth == u.name || r.BackendAuth == u.name {
				u.routes = append(u.routes, i)
			}
		}
		out = append(out, u)
	}
	return out
}
