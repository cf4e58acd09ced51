// Package backend keeps the named pools of endpoints that routes point at: resolvers turn a backend's definition into
// endpoints, a balancer picks one per request (ejecting endpoints that refuse connections), and each backend offers an
// http.RoundTripper (HTTP) or a long-lived grpc.ClientConn (gRPC). A Pool swaps in new definitions without disturbing
// backends whose definition did not change.
package backend

// Protocol is what a backend speaks.
type Protocol uint8

// Protocols.
const (
	HTTP Protocol = iota
	GRPC
)

// ResolverKind selects how endpoints are found.
type ResolverKind uint8

// Resolver kinds.
const (
	ResolverHost ResolverKind = iota // A/AAAA records of DNSName, each paired with Port
	ResolverSRV                      // SRV records of DNSName; PortOverride replaces their ports when non-zero
	ResolverK8s                      // EndpointSlices of the Service named by K8sTarget
)

// Spec is the definition of one backend, as loaded from config. Specs are comparable with ==: a backend whose Spec
// did not change across a reload is kept as it is.
type Spec struct {
	// Name identifies the backend within its protocol.
	Name     string
	Protocol Protocol
	Resolver Resolver
	// TLS configures TLS to the endpoints; TLS.Enabled false means plaintext.
	TLS TLS
	// Discovered marks backends generated from Kubernetes Services.
	Discovered bool
}

// Resolver says where a backend's endpoints come from.
type Resolver struct {
	Kind         ResolverKind
	DNSName      string // host and srv
	Port         uint32 // host
	PortOverride uint32 // srv
	K8sTarget    string // k8s: "<service>[.<namespace>[.<anything>]][:<port number>|:<port name>]"
}

// TLS is the client-side TLS configuration towards a backend's endpoints.
type TLS struct {
	Enabled            bool
	InsecureSkipVerify bool
	CAFile             string // PEM bundle; "" means system roots
	CertFile, KeyFile  string // optional client certificate
	ServerName         string // name to verify and send as SNI; "" means the resolver's DNS name
}
