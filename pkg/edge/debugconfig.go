package edge

import (
	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// debugConfig is the body of /debug/config. Every name is snake_case (as in the documents), every list is a list
// (never null), and nothing secret is in it: backends show file paths, never file contents.
type debugConfig struct {
	HTTPRoutes []route.HTTPRoute `json:"http_routes"`
	HTTPAdhoc  []route.Adhoc     `json:"http_adhoc"`
	GRPCRoutes []route.GRPCRoute `json:"grpc_routes"`
	GRPCAdhoc  []route.Adhoc     `json:"grpc_adhoc"`
	Backends   []debugBackend    `json:"backends"`
	Warnings   []string          `json:"warnings"`
}

// debugBackend is a backend as /debug/config shows it: its definition, with the backendpool document's names, and
// its state.
type debugBackend struct {
	Name       string           `json:"name"`
	Protocol   backend.Protocol `json:"protocol"`
	Resolver   debugResolver    `json:"resolver"`
	Security   *debugSecurity   `json:"security,omitempty"` // nil: plaintext
	Discovered bool             `json:"discovered"`
	// Resolved is false until the backend's source answered once.
	Resolved  bool     `json:"resolved"`
	Endpoints []string `json:"endpoints"`
	Ejected   []string `json:"ejected"`
	InFlight  int      `json:"in_flight"`
}

type debugResolver struct {
	Kind         backend.ResolverKind `json:"kind"`
	DNSName      string               `json:"dns_name,omitempty"`
	Port         uint32               `json:"port,omitempty"`
	PortOverride uint32               `json:"port_override,omitempty"`
	DNSPortName  string               `json:"dns_port_name,omitempty"` // k8s
}

type debugSecurity struct {
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
	CAFile             string `json:"ca_file,omitempty"`
	CertFile           string `json:"cert_file,omitempty"`
	KeyFile            string `json:"key_file,omitempty"` // a path
	ServerName         string `json:"server_name,omitempty"`
}

func newDebugConfig(t *tables, pool []backend.Status) debugConfig {
	c := debugConfig{
		HTTPRoutes: nonNil(t.http.Routes()),
		HTTPAdhoc:  nonNil(t.dyn.HTTPAdhoc),
		GRPCRoutes: nonNil(t.grpc.Routes()),
		GRPCAdhoc:  nonNil(t.dyn.GRPCAdhoc),
		Backends:   make([]debugBackend, 0, len(pool)),
		Warnings:   nonNil(t.warnings),
	}
	for _, b := range pool {
		r := b.Spec.Resolver
		d := debugBackend{
			Name:       b.Name,
			Protocol:   b.Protocol,
			Resolver:   debugResolver{Kind: r.Kind, DNSName: r.DNSName, Port: r.Port, PortOverride: r.PortOverride, DNSPortName: r.K8sTarget},
			Discovered: b.Spec.Discovered,
			Resolved:   b.Resolved,
			Endpoints:  nonNil(b.Endpoints),
			Ejected:    nonNil(b.Ejected),
			InFlight:   b.InFlight,
		}
		if tls := b.Spec.TLS; tls.Enabled {
			d.Security = &debugSecurity{InsecureSkipVerify: tls.InsecureSkipVerify, CAFile: tls.CAFile, CertFile: tls.CertFile,
				KeyFile: tls.KeyFile, ServerName: tls.ServerName}
		}
		c.Backends = append(c.Backends, d)
	}
	return c
}

// nonNil returns s, or an empty slice for nil: JSON shows [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
