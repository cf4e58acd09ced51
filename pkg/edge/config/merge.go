package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/proto/kedgeconfig"
)

// Generated is what Kubernetes discovery made of one Service: its routes and the backends they use.
type Generated struct {
	// Source names the origin in errors and warnings, like "service default/echo".
	Source string
	// HTTPRoutes and GRPCRoutes are in the order they are tried; each names a backend of Backends.
	HTTPRoutes []route.HTTPRoute
	GRPCRoutes []route.GRPCRoute
	// Backends are the backends the routes use (Spec.Protocol set).
	Backends []backend.Spec
}

// Rejected is a Generated that Merge left out, and why.
type Rejected struct {
	// Source is the Generated's Source.
	Source string
	// Err joins one *FieldError (File = Source) per problem.
	Err error
}

// Discovered is what discovery found, after each Generated was checked on its own by Check: the input of Merge.
// A nil *Discovered means nothing was discovered.
type Discovered struct{ services []checked }

// checked is one Generated with the findings of its own check.
type checked struct {
	gen      Generated
	warnings []string
	errs     []error // *FieldError (File = gen.Source); none = valid on its own
}

// Check validates each Generated as a document of its own, with the validator that file documents go through
// (field paths are those of "kedge discover" output for that Service). It is the validation step of discovered
// config and runs once per discovery change; Merge, which runs again on every file reload, only looks for conflicts
// with the file config and between Services.
func Check(gens []Generated) *Discovered {
	d := &Discovered{services: make([]checked, 0, len(gens))}
	for _, g := range gens {
		v := &validator{}
		dir, pool := documents(&Dynamic{HTTPRoutes: g.HTTPRoutes, GRPCRoutes: g.GRPCRoutes, Backends: g.Backends})
		names := v.backendpool(g.Source, pool)
		v.director(g.Source, dir, names)
		v.authRules(g.Source, dir, pool)
		d.services = append(d.services, checked{gen: g, warnings: v.warnings, errs: v.errs})
	}
	return d
}

// Merge returns the file config followed by the discovered Services that are valid: file routes first (so they
// win), then generated routes in the order given to Check; file backends, then generated ones. A Service is left
// out whole, and returned in rejected, when Check found a problem in it, when it reuses the name of a file backend
// or of an earlier Service's backend, or the host matcher (and port) of an earlier Service's route; so one bad
// Service never blocks the others. Merged routes and backends are marked Discovered. file is not modified; found
// may be nil.
func Merge(file *Dynamic, found *Discovered) (merged *Dynamic, rejected []Rejected) {
	out := &Dynamic{
		HTTPRoutes: slices.Clone(file.HTTPRoutes),
		GRPCRoutes: slices.Clone(file.GRPCRoutes),
		HTTPAdhoc:  slices.Clone(file.HTTPAdhoc),
		GRPCAdhoc:  slices.Clone(file.GRPCAdhoc),
		Backends:   slices.Clone(file.Backends),
		Warnings:   slices.Clone(file.Warnings),
	}
	if found == nil {
		return out, nil
	}
	type backendKey struct {
		proto backend.Protocol
		name  string
	}
	type hostKey struct {
		proto   backend.Protocol
		host    string
		port    uint32
		service string
	}
	backendOwner := map[backendKey]string{} // "" = the backendpool file
	for _, b := range file.Backends {
		backendOwner[backendKey{b.Protocol, b.Name}] = ""
	}
	hostOwner := map[hostKey]string{}

	for _, c := range found.services {
		g := c.gen
		v := &validator{errs: slices.Clone(c.errs)}
		index := map[backend.Protocol]int{}
		for _, b := range g.Backends {
			field := fmt.Sprintf("%s.backends[%d].name", b.Protocol, index[b.Protocol])
			index[b.Protocol]++
			owner, taken := backendOwner[backendKey{b.Protocol, b.Name}]
			switch {
			case taken && owner == "":
				v.fail(g.Source, field, "%q is already the name of a %s backend in the backendpool config", b.Name, b.Protocol)
			case taken:
				v.fail(g.Source, field, "%q is already the name of a %s backend generated for %s", b.Name, b.Protocol, owner)
			}
		}
		var hosts []hostKey
		claim := func(field string, k hostKey, what string) {
			if owner, taken := hostOwner[k]; taken {
				v.fail(g.Source, field, "%s is already routed to %s: duplicate host matcher", what, owner)
			}
			hosts = append(hosts, k)
		}
		for i, r := range g.HTTPRoutes {
			field := fmt.Sprintf("http.routes[%d].host_matcher", i)
			claim(field, hostKey{backend.HTTP, strings.ToLower(r.Host), r.Port, ""}, fmt.Sprintf("host %q port %d", r.Host, r.Port))
		}
		for i, r := range g.GRPCRoutes {
			field := fmt.Sprintf("grpc.routes[%d].authority_host_matcher", i)
			claim(field, hostKey{backend.GRPC, strings.ToLower(r.AuthorityHost), r.AuthorityPort, r.Service},
				fmt.Sprintf("authority %q port %d (services %q)", r.AuthorityHost, r.AuthorityPort, r.Service))
		}

		if len(v.errs) > 0 {
			rejected = append(rejected, Rejected{Source: g.Source, Err: errors.Join(v.errs...)})
			continue
		}
		for _, b := range g.Backends {
			backendOwner[backendKey{b.Protocol, b.Name}] = g.Source
			b.Discovered = true
			out.Backends = append(out.Backends, b)
		}
		for _, k := range hosts {
			hostOwner[k] = g.Source
		}
		for _, r := range g.HTTPRoutes {
			r.Discovered = true
			out.HTTPRoutes = append(out.HTTPRoutes, r)
		}
		for _, r := range g.GRPCRoutes {
			r.Discovered = true
			out.GRPCRoutes = append(out.GRPCRoutes, r)
		}
		out.Warnings = append(out.Warnings, c.warnings...)
	}
	return out, rejected
}

// Documents renders dyn as a director and a backendpool document (indented proto3 JSON with snake_case names), the
// form Load reads back: the output of "kedge discover".
func Documents(dyn *Dynamic) (director, backendpool []byte, err error) {
	dir, pool := documents(dyn)
	if director, err = render(dir); err != nil {
		return nil, nil, fmt.Errorf("config: rendering the director: %w", err)
	}
	if backendpool, err = render(pool); err != nil {
		return nil, nil, fmt.Errorf("config: rendering the backendpool: %w", err)
	}
	return director, backendpool, nil
}

// render marshals m as indented JSON. protojson's own indentation varies on purpose; encoding/json's does not.
func render(m proto.Message) ([]byte, error) {
	compact, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, compact, "", "  "); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// documents is the inverse of convert (for the fields the domain types keep).
func documents(dyn *Dynamic) (*kedgeconfig.DirectorConfig, *kedgeconfig.BackendPoolConfig) {
	dir := &kedgeconfig.DirectorConfig{
		Http: &kedgeconfig.DirectorConfig_HTTPDirector{},
		Grpc: &kedgeconfig.DirectorConfig_GRPCDirector{},
	}
	for _, r := range dyn.HTTPRoutes {
		d := &kedgeconfig.HTTPRoute{
			BackendName:   r.Backend,
			HostMatcher:   r.Host,
			PortMatcher:   r.Port,
			PathRules:     slices.Clone(r.Paths),
			HeaderMatcher: cloneMap(r.Headers),
			ProxyMode:     documentMode(r.Mode),
			Autogenerated: r.Discovered,

			PathCaseInsensitive: r.PathCaseInsensitive,
			AllowEncodedSlashes: r.AllowEncodedSlashes,

			RequiredPermissions:     slices.Clone(r.RequiredPermissions),
			AllowedClientIdentities: slices.Clone(r.AllowedIdentities),

			IdentityHeader: documentIdentityHeader(r.NoIdentityHeader),
			RateLimit:      documentRateLimit(r.RateLimit),
		}
		dir.Http.Routes = append(dir.Http.Routes, d)
	}
	for _, r := range dyn.GRPCRoutes {
		d := &kedgeconfig.GRPCRoute{
			BackendName:          r.Backend,
			ServiceNameMatcher:   r.Service,
			AuthorityHostMatcher: r.AuthorityHost,
			AuthorityPortMatcher: r.AuthorityPort,
			MetadataMatcher:      cloneMap(r.Metadata),
			Autogenerated:        r.Discovered,

			RequiredPermissions:     slices.Clone(r.RequiredPermissions),
			AllowedClientIdentities: slices.Clone(r.AllowedIdentities),

			IdentityHeader: documentIdentityHeader(r.NoIdentityHeader),
			RateLimit:      documentRateLimit(r.RateLimit),
		}
		dir.Grpc.Routes = append(dir.Grpc.Routes, d)
	}
	for _, a := range dyn.HTTPAdhoc {
		dir.Http.AdhocRules = append(dir.Http.AdhocRules, documentAdhoc(a))
	}
	for _, a := range dyn.GRPCAdhoc {
		dir.Grpc.AdhocRules = append(dir.Grpc.AdhocRules, documentAdhoc(a))
	}

	pool := &kedgeconfig.BackendPoolConfig{
		Http: &kedgeconfig.BackendPoolConfig_HTTP{},
		Grpc: &kedgeconfig.BackendPoolConfig_GRPC{},
	}
	for _, s := range dyn.Backends {
		var sec *kedgeconfig.Security
		if s.TLS.Enabled {
			sec = &kedgeconfig.Security{
				InsecureSkipVerify: s.TLS.InsecureSkipVerify,
				CaFile:             s.TLS.CAFile,
				CertFile:           s.TLS.CertFile,
				KeyFile:            s.TLS.KeyFile,
				ServerName:         s.TLS.ServerName,
			}
		}
		res := s.Resolver
		switch s.Protocol {
		case backend.GRPC:
			b := &kedgeconfig.GRPCBackend{Name: s.Name, Security: sec, Autogenerated: s.Discovered}
			switch res.Kind {
			case backend.ResolverHost:
				b.Resolver = &kedgeconfig.GRPCBackend_Host{Host: &kedgeconfig.HostResolver{DnsName: res.DNSName, Port: res.Port}}
			case backend.ResolverSRV:
				b.Resolver = &kedgeconfig.GRPCBackend_Srv{Srv: &kedgeconfig.SRVResolver{DnsName: res.DNSName, PortOverride: res.PortOverride}}
			case backend.ResolverK8s:
				b.Resolver = &kedgeconfig.GRPCBackend_K8S{K8S: &kedgeconfig.KubeResolver{DnsPortName: res.K8sTarget}}
			}
			pool.Grpc.Backends = append(pool.Grpc.Backends, b)
		default:
			b := &kedgeconfig.HTTPBackend{Name: s.Name, Security: sec, Autogenerated: s.Discovered}
			switch res.Kind {
			case backend.ResolverHost:
				b.Resolver = &kedgeconfig.HTTPBackend_Host{Host: &kedgeconfig.HostResolver{DnsName: res.DNSName, Port: res.Port}}
			case backend.ResolverSRV:
				b.Resolver = &kedgeconfig.HTTPBackend_Srv{Srv: &kedgeconfig.SRVResolver{DnsName: res.DNSName, PortOverride: res.PortOverride}}
			case backend.ResolverK8s:
				b.Resolver = &kedgeconfig.HTTPBackend_K8S{K8S: &kedgeconfig.KubeResolver{DnsPortName: res.K8sTarget}}
			}
			pool.Http.Backends = append(pool.Http.Backends, b)
		}
	}
	return dir, pool
}

func documentMode(m route.Mode) kedgeconfig.ProxyMode {
	switch m {
	case route.ModeReverse:
		return kedgeconfig.ProxyMode_REVERSE_PROXY
	case route.ModeForward:
		return kedgeconfig.ProxyMode_FORWARD_PROXY
	case route.ModeConnect:
		return kedgeconfig.ProxyMode_CONNECT
	default:
		return kedgeconfig.ProxyMode_ANY
	}
}

func documentAdhoc(a route.Adhoc) *kedgeconfig.Adhoc {
	d := &kedgeconfig.Adhoc{
		DnsNameMatcher: a.NamePattern,
		Port:           &kedgeconfig.Adhoc_Port{Default: a.DefaultPort, Allowed: slices.Clone(a.AllowedPorts)},

		RequiredPermissions:     slices.Clone(a.RequiredPermissions),
		AllowedClientIdentities: slices.Clone(a.AllowedIdentities),
	}
	for _, r := range a.AllowedRanges {
		d.Port.AllowedRanges = append(d.Port.AllowedRanges, &kedgeconfig.Adhoc_Port_Range{From: r.From, To: r.To})
	}
	if a.Replace != nil {
		d.DnsNameReplace = &kedgeconfig.Adhoc_Replace{Pattern: a.Replace.Pattern, Substitution: a.Replace.Substitution}
	}
	return d
}

func cloneMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
