// Package route decides, without I/O, which backend (or adhoc destination) serves a request: ordered HTTP and gRPC
// routes, and adhoc rules. Tables are immutable once built and safe for concurrent use.
package route

// Mode is the form of an HTTP request, which a route may restrict.
type Mode uint8

// Modes. ModeAny on a route accepts every request form.
const (
	ModeAny     Mode = iota
	ModeReverse      // origin-form: "GET /path" with Host
	ModeForward      // absolute-form: "GET http://host/path"
	ModeConnect      // CONNECT tunnels; only routes with this mode match CONNECT requests
)

// HTTPRoute is one HTTP routing rule. Every condition that is set must hold. Values are normalised by the config
// loader: Host is lower case, header names are canonical (textproto.CanonicalMIMEHeaderKey).
type HTTPRoute struct {
	// Backend names the HTTP backend.
	Backend string `json:"backend"`
	// Host is "" or "*" (any), an exact lower-case host name or IP literal, or "*.suffix" (any name ending in
	// ".suffix"). Matching ignores case and one trailing dot.
	Host string `json:"host,omitempty"`
	// Port is the required port; 0 means any.
	Port uint32 `json:"port,omitempty"`
	// Paths are path rules: "/prefix*" is a prefix match, anything else exact. Empty means any path. They match
	// the request's canonical path in its match form (Path.Match): no dot segments, no repeated slashes, no ';'
	// segment parameters.
	Paths []string `json:"paths,omitempty"`
	// PathCaseInsensitive makes Paths match regardless of the case of ASCII letters, for backends that serve
	// "/Admin" as "/admin" (Windows, IIS, some Java apps).
	PathCaseInsensitive bool `json:"path_case_insensitive,omitempty"`
	// AllowEncodedSlashes lets requests whose path has an encoded '/' or '\' ("%2F", "%5C") use this route; they
	// are forwarded encoded. Without it such a request is answered 400, since backends disagree on whether "%2F"
	// separates segments. Set it only for backends that treat it as data (object names, registry paths).
	AllowEncodedSlashes bool `json:"allow_encoded_slashes,omitempty"`
	// Headers maps canonical header names to a required value (any of the header's values may match).
	Headers map[string]string `json:"headers,omitempty"`
	// Mode restricts the request form.
	Mode Mode `json:"mode"`
	// Discovered marks routes generated from Kubernetes Services.
	Discovered bool `json:"discovered,omitempty"`
	// RequiredPermissions are permissions of which the caller must hold at least one to use the route, on top of
	// the global requirement; empty asks nothing more. Discovered routes take them from the Service's
	// <prefix>required-permissions annotation.
	RequiredPermissions []string `json:"required_permissions,omitempty"`
	// AllowedIdentities lets a caller through whose verified client certificate names one of these (subject CN or a
	// SAN). With RequiredPermissions also set, either suffices.
	AllowedIdentities []string `json:"allowed_client_identities,omitempty"`
	// NoIdentityHeader (identity_header: false) keeps kedge's signed identity (X-Kedge-Identity) from this route's
	// backend.
	NoIdentityHeader bool `json:"no_identity_header,omitempty"`
	// RateLimit limits each caller of the route; nil means no limit.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
}

// RateLimit is a token bucket per caller: a caller may send Burst requests at once and RequestsPerSecond on
// average. Callers are told apart by identity (token subject, client certificate), anonymous ones by client address.
type RateLimit struct {
	// RequestsPerSecond is the rate at which the bucket refills; > 0.
	RequestsPerSecond float64 `json:"requests_per_second"`
	// Burst is the bucket's size; >= 1.
	Burst int `json:"burst"`
}

// Clone returns a copy of l (nil for nil), so that a compiled table shares nothing with its input.
func (l *RateLimit) Clone() *RateLimit {
	if l == nil {
		return nil
	}
	c := *l
	return &c
}

// GRPCRoute is one gRPC routing rule. Every condition that is set must hold. AuthorityHost is lower case and
// metadata keys are lower case.
type GRPCRoute struct {
	// Backend names the gRPC backend.
	Backend string `json:"backend"`
	// Service matches "pkg.Service/Method": "" or "*" any; trailing "*" prefix; otherwise the full method name or
	// the service name.
	Service string `json:"service,omitempty"`
	// AuthorityHost is the required :authority host (lower case, no port, no brackets), or "*.suffix" like
	// HTTPRoute.Host; "" means any. Matching ignores case and one trailing dot.
	AuthorityHost string `json:"authority_host,omitempty"`
	// AuthorityPort is the required :authority port; 0 means any. A port-less authority counts as 443.
	AuthorityPort uint32 `json:"authority_port,omitempty"`
	// Metadata maps lower-case keys to a required value (any of the key's values may match).
	Metadata map[string]string `json:"metadata,omitempty"`
	// Discovered marks routes generated from Kubernetes Services.
	Discovered bool `json:"discovered,omitempty"`
	// RequiredPermissions and AllowedIdentities are as for HTTPRoute.
	RequiredPermissions []string `json:"required_permissions,omitempty"`
	AllowedIdentities   []string `json:"allowed_client_identities,omitempty"`
	// NoIdentityHeader and RateLimit are as for HTTPRoute (x-kedge-identity metadata).
	NoIdentityHeader bool       `json:"no_identity_header,omitempty"`
	RateLimit        *RateLimit `json:"rate_limit,omitempty"`
}

// Adhoc allows dialling a name that no route covers.
type Adhoc struct {
	// NamePattern is "*suffix" (names ending in suffix) or an exact lower-case name. IP literals and names a
	// resolver may read as an address or the local host ("127.1", "localhost") match only an exact pattern.
	NamePattern string `json:"name_pattern"`
	// DefaultPort is used when the request names no port; 0 means 80.
	DefaultPort uint32 `json:"default_port,omitempty"`
	// AllowedPorts and AllowedRanges list the ports that may be dialled; both empty allows nothing.
	AllowedPorts  []uint32    `json:"allowed_ports,omitempty"`
	AllowedRanges []PortRange `json:"allowed_ranges,omitempty"`
	// Replace, if set, rewrites the name before resolution.
	Replace *NameReplace `json:"replace,omitempty"`
	// RequiredPermissions and AllowedIdentities are as for HTTPRoute, for destinations this rule allows.
	RequiredPermissions []string `json:"required_permissions,omitempty"`
	AllowedIdentities   []string `json:"allowed_client_identities,omitempty"`
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	From uint32 `json:"from"`
	To   uint32 `json:"to"`
}

// NameReplace replaces every occurrence of Pattern in a host name with Substitution.
type NameReplace struct {
	Pattern      string `json:"pattern"`
	Substitution string `json:"substitution"`
}

// MarshalText makes modes readable in /debug/config.
func (m Mode) MarshalText() ([]byte, error) {
	switch m {
	case ModeReverse:
		return []byte("REVERSE_PROXY"), nil
	case ModeForward:
		return []byte("FORWARD_PROXY"), nil
	case ModeConnect:
		return []byte("CONNECT"), nil
	}
	return []byte("ANY"), nil
}
