package discovery

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// Options say which Services discovery exposes and how.
type Options struct {
	// LabelPrefix prefixes the kedge-exposed label and the annotations, like config.DefaultLabelPrefix; "" is a
	// valid prefix.
	LabelPrefix string
	// DomainSuffix makes the default host of a Service: <service>.<namespace>.svc.<suffix>.
	DomainSuffix string
	// Events raises a Warning Event on each skipped Service (when RBAC allows); off for read-only tools.
	Events bool
}

// portConventions map Service port names to what kedge generates: the name itself or the name followed by "-...".
var portConventions = []struct {
	prefix   string
	protocol backend.Protocol
	tls      bool
}{
	{"http", backend.HTTP, false},
	{"httptls", backend.HTTP, true},
	{"grpc", backend.GRPC, false},
	{"grpctls", backend.GRPC, true},
}

// portKind classifies a Service port by its name; ok is false for names outside the conventions.
func portKind(name string) (protocol backend.Protocol, tls, ok bool) {
	for _, c := range portConventions {
		if name == c.prefix || strings.HasPrefix(name, c.prefix+"-") {
			return c.protocol, c.tls, true
		}
	}
	return 0, false, false
}

// exposed reports whether svc asks to be exposed: its <prefix>kedge-exposed label is "true".
func exposed(svc *corev1.Service, prefix string) bool {
	return svc.Labels[prefix+config.ExposedLabel] == "true"
}

// sourceOf names svc in errors and in config.Generated.
func sourceOf(svc *corev1.Service) string { return "service " + svc.Namespace + "/" + svc.Name }

// generate makes the routes and backends of one exposed Service. Each port named by the conventions (http, http-*,
// httptls, httptls-*, grpc, grpc-*, grpctls, grpctls-*) yields a route for host <svc>.<ns>.svc.<suffix> (or the
// host-matcher annotation) and the Service port, to a backend <svc>_<ns>_<targetPort> ('-' replaced by '_') whose
// k8s resolver follows that Service port. Ports sharing a target port share the backend. TLS ports reach their
// endpoints with TLS but without verification (pod addresses have no names to verify). Other ports are ignored;
// a Service with no usable port is an error. Syntax is left to config.Merge, which validates like a document.
func generate(svc *corev1.Service, o Options) (config.Generated, error) {
	g := config.Generated{Source: sourceOf(svc)}
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return g, fmt.Errorf("%s: an ExternalName Service has no endpoints to route to", g.Source)
	}
	ann := svc.Annotations
	host := strings.ToLower(strings.TrimSpace(ann[o.LabelPrefix+config.HostMatcherAnnotation]))
	if host == "" {
		// Lower case as routes match hosts; the API server accepts only lower-case names; a client that is not
		// the API server, or --discovery_external_domain_suffix, need not.
		host = strings.ToLower(svc.Name + "." + svc.Namespace + ".svc." + o.DomainSuffix)
	}
	grpcService := strings.TrimSpace(ann[o.LabelPrefix+config.ServiceNameMatcherAnnotation])
	var perms []string
	for _, p := range strings.Split(ann[o.LabelPrefix+config.RequiredPermissionsAnnotation], ",") {
		if p = strings.TrimSpace(p); p != "" {
			perms = append(perms, p)
		}
	}

	type key struct {
		protocol backend.Protocol
		name     string
	}
	first := map[key]int{} // backend -> index in g.Backends
	portOf := map[key]string{}
	var ignored []string
	for _, p := range svc.Spec.Ports {
		protocol, tls, ok := portKind(p.Name)
		if !ok || p.Protocol != "" && p.Protocol != corev1.ProtocolTCP {
			ignored = append(ignored, cmp.Or(p.Name, strconv.Itoa(int(p.Port)))+"/"+string(cmp.Or(p.Protocol, corev1.ProtocolTCP)))
			continue
		}
		target := p.TargetPort.String()
		if p.TargetPort == (intstr.IntOrString{}) {
			target = strconv.Itoa(int(p.Port))
		}
		spec := backend.Spec{
			Name:       strings.ReplaceAll(svc.Name+"_"+svc.Namespace+"_"+target, "-", "_"),
			Protocol:   protocol,
			Resolver:   backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: svc.Name + "." + svc.Namespace + ":" + p.Name},
			TLS:        backend.TLS{Enabled: tls, InsecureSkipVerify: tls},
			Discovered: true,
		}
		k := key{protocol, spec.Name}
		if i, dup := first[k]; dup {
			if g.Backends[i].TLS != spec.TLS {
				return g, fmt.Errorf("%s: ports %q and %q share target port %s, but only one of them is TLS", g.Source, portOf[k], p.Name, target)
			}
		} else {
			first[k] = len(g.Backends)
			portOf[k] = p.Name
			g.Backends = append(g.Backends, spec)
		}
		switch protocol {
		case backend.HTTP:
			g.HTTPRoutes = append(g.HTTPRoutes, route.HTTPRoute{
				Backend: spec.Name, Host: host, Port: uint32(p.Port), Mode: route.ModeReverse,
				Discovered: true, RequiredPermissions: slices.Clone(perms),
			})
		case backend.GRPC:
			g.GRPCRoutes = append(g.GRPCRoutes, route.GRPCRoute{
				Backend: spec.Name, AuthorityHost: host, AuthorityPort: uint32(p.Port), Service: grpcService,
				Discovered: true, RequiredPermissions: slices.Clone(perms),
			})
		}
	}
	if len(g.Backends) == 0 {
		return g, fmt.Errorf("%s: no TCP port is named http, http-*, httptls, httptls-*, grpc, grpc-*, grpctls or grpctls-* (ports: %s)",
			g.Source, cmp.Or(strings.Join(ignored, ", "), "none"))
	}
	return g, nil
}

// wildcard reports whether any route of g has a "*." host, so that exact hosts can be tried first.
func wildcard(g config.Generated) bool {
	for _, r := range g.HTTPRoutes {
		if strings.HasPrefix(r.Host, "*") {
			return true
		}
	}
	for _, r := range g.GRPCRoutes {
		if strings.HasPrefix(r.AuthorityHost, "*") {
			return true
		}
	}
	return false
}
