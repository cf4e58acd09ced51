package route

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/grpc/metadata"
)

// GRPCRequest holds the facts of one gRPC call that routing needs.
type GRPCRequest struct {
	// FullMethod is the method as grpc gives it: "/pkg.Service/Method". A missing leading slash is tolerated and
	// routes identically.
	FullMethod string
	// Authority is ":authority" as received: host[:port], IPv6 in brackets.
	Authority string
	// Metadata is the incoming metadata (keys lower case).
	Metadata metadata.MD
}

// GRPCTable is a compiled, immutable list of gRPC routes plus the gRPC adhoc rules. It is safe for concurrent use.
type GRPCTable struct {
	routes   []GRPCRoute // normalised copies; Match returns pointers into it
	compiled []grpcMatcher
	adhoc    adhocRules
}

type grpcMatcher struct {
	svcAny    bool
	svcPrefix bool
	svc       string // the pattern without a leading '/' (and without the trailing '*' for prefixes)
	authHost  hostMatcher
	hasHost   bool
	authPort  uint32
	metadata  []kv
}

// defaultAuthorityPort is the port of a port-less :authority (gRPC runs over TLS at the edge).
const defaultAuthorityPort = 443

// NewGRPCTable validates and compiles routes (first match wins) and adhoc rules. The error lists every invalid route
// and rule by index and reason. The table does not keep references to the arguments.
func NewGRPCTable(routes []GRPCRoute, adhoc []Adhoc) (*GRPCTable, error) {
	t := &GRPCTable{routes: make([]GRPCRoute, len(routes)), compiled: make([]grpcMatcher, len(routes))}
	var errs []error
	for i, r := range routes {
		m, norm, err := compileGRPCRoute(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("route: grpc route %d (backend %q): %w", i, r.Backend, err))
			continue
		}
		t.routes[i], t.compiled[i] = norm, m
	}
	var adhocErrs []error
	t.adhoc, adhocErrs = compileAdhoc("grpc", adhoc)
	if err := errors.Join(append(errs, adhocErrs...)...); err != nil {
		return nil, err
	}
	return t, nil
}

func compileGRPCRoute(r GRPCRoute) (grpcMatcher, GRPCRoute, error) {
	var m grpcMatcher
	if r.Backend == "" {
		return m, r, errors.New("empty backend name")
	}
	svc := strings.TrimPrefix(r.Service, "/")
	switch {
	case svc == "" || svc == "*":
		m.svcAny = true
	case strings.Contains(strings.TrimSuffix(svc, "*"), "*"):
		return m, r, fmt.Errorf("service %q: bad wildcard: %q is allowed only at the end", r.Service, "*")
	default:
		m.svc, m.svcPrefix = strings.CutSuffix(svc, "*")
	}
	host, hostNorm, err := compileHost(r.AuthorityHost)
	if err != nil {
		return m, r, fmt.Errorf("authority %w", err)
	}
	m.authHost, m.hasHost = host, !host.any
	if r.AuthorityPort > 65535 {
		return m, r, fmt.Errorf("authority port %d > 65535", r.AuthorityPort)
	}
	m.authPort = r.AuthorityPort
	norm := GRPCRoute{
		Backend: r.Backend, Service: svc, AuthorityHost: hostNorm, AuthorityPort: r.AuthorityPort,
		Discovered: r.Discovered, RequiredPermissions: slices.Clone(r.RequiredPermissions),
		AllowedIdentities: slices.Clone(r.AllowedIdentities),
		NoIdentityHeader:  r.NoIdentityHeader, RateLimit: r.RateLimit.Clone(),
	}
	if len(r.Metadata) > 0 {
		norm.Metadata = make(map[string]string, len(r.Metadata))
		for k, v := range r.Metadata {
			lk := strings.ToLower(k)
			if lk == "" {
				return m, r, errors.New("empty metadata key")
			}
			if _, dup := norm.Metadata[lk]; dup {
				return m, r, fmt.Errorf("metadata key %q given twice (keys are case-insensitive)", lk)
			}
			norm.Metadata[lk] = v
		}
		m.metadata = make([]kv, 0, len(norm.Metadata))
		for _, k := range slices.Sorted(maps.Keys(norm.Metadata)) {
			m.metadata = append(m.metadata, kv{k, norm.Metadata[k]})
		}
	}
	return m, norm, nil
}

// Match returns the first route whose conditions all hold. The pointer refers into the table: do not modify it.
// It does not allocate.
func (t *GRPCTable) Match(req *GRPCRequest) (*GRPCRoute, bool) {
	if t == nil || req == nil {
		return nil, false
	}
	method := strings.TrimPrefix(req.FullMethod, "/")
	service := ""
	if i := strings.LastIndexByte(method, '/'); i >= 0 {
		service = method[:i]
	}
	// The authority is parsed lazily: most routes do not look at it.
	var (
		parsed, authOK bool
		host           string
		port           uint32
	)
	for i := range t.compiled {
		m := &t.compiled[i]
		if !m.matchService(method, service) {
			continue
		}
		if m.hasHost || m.authPort != 0 {
			if !parsed {
				parsed = true
				var hasPort bool
				var err error
				host, port, hasPort, err = SplitHostPort(req.Authority)
				authOK = err == nil
				host = trimDot(host)
				if !hasPort {
					port = defaultAuthorityPort
				}
			}
			if !authOK || m.hasHost && !m.authHost.match(host) || m.authPort != 0 && m.authPort != port {
				continue
			}
		}
		if !matchMetadata(m.metadata, req.Metadata) {
			continue
		}
		return &t.routes[i], true
	}
	return nil, false
}

// matchService applies the service pattern to method ("pkg.Svc/Method", no leading slash) and its service part.
func (m *grpcMatcher) matchService(method, service string) bool {
	switch {
	case m.svcAny:
		return true
	case m.svcPrefix:
		return strings.HasPrefix(method, m.svc)
	default:
		return method == m.svc || service != "" && service == m.svc
	}
}

func matchMetadata(want []kv, md metadata.MD) bool {
	for _, w := range want {
		if !slices.Contains(md[w.key], w.value) {
			return false
		}
	}
	return true
}

// Routes returns the normalised routes in order (for /debug/config). Callers must not modify them.
func (t *GRPCTable) Routes() []GRPCRoute {
	if t == nil {
		return nil
	}
	return slices.Clone(t.routes)
}

// AdhocRules returns the normalised adhoc rules in order (for /debug/config). Callers must not modify them.
func (t *GRPCTable) AdhocRules() []Adhoc {
	if t == nil {
		return nil
	}
	return slices.Clone(t.adhoc.src)
}

// Adhoc finds the adhoc destination for a call that no route matched, from its :authority. A malformed authority
// is an *AdhocError with BadRequest set; no matching rule is ErrNoRoute.
func (t *GRPCTable) Adhoc(authority string) (Target, error) {
	if t == nil {
		return Target{}, ErrNoRoute
	}
	return t.adhoc.targetHostPort(authority)
}
