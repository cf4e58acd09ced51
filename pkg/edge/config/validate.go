package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/proto/kedgeconfig"
)

// validator collects every problem of a pair of documents. Field paths use the documents' snake_case names.
type validator struct {
	errs       []error
	warnings   []string
	checkFiles bool // open the files named in security settings (Load does, Parse does not)
}

func (v *validator) fail(file, field, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{File: file, Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (v *validator) warn(file, field, format string, args ...any) {
	v.warnings = append(v.warnings, (&FieldError{File: file, Field: field, Reason: fmt.Sprintf(format, args...)}).Error())
}

// backendDoc is what HTTP and gRPC backends have in common.
type backendDoc interface {
	GetName() string
	GetBalancer() kedgeconfig.Balancer
	GetSecurity() *kedgeconfig.Security
	GetSrv() *kedgeconfig.SRVResolver
	GetK8S() *kedgeconfig.KubeResolver
	GetHost() *kedgeconfig.HostResolver
}

// backendNames are the backend names each protocol section defines, valid or not (so that a route naming a broken
// backend is not reported twice).
type backendNames struct{ http, grpc map[string]bool }

func (v *validator) backendpool(file string, pool *kedgeconfig.BackendPoolConfig) backendNames {
	tlsNames := map[string]bool{}
	for i, c := range pool.GetTlsServerConfigs() {
		field := fmt.Sprintf("tls_server_configs[%d].name", i)
		if !validName(c.GetName(), false) {
			v.fail(file, field, "%q must match ^[a-z_.]{2,64}$", c.GetName())
		}
		tlsNames[c.GetName()] = true
	}
	var httpDocs, grpcDocs []backendDoc
	for _, b := range pool.GetHttp().GetBackends() {
		httpDocs = append(httpDocs, b)
	}
	for _, b := range pool.GetGrpc().GetBackends() {
		grpcDocs = append(grpcDocs, b)
	}
	return backendNames{
		http: v.backends(file, "http.backends", httpDocs, tlsNames),
		grpc: v.backends(file, "grpc.backends", grpcDocs, tlsNames),
	}
}

func (v *validator) backends(file, section string, list []backendDoc, tlsNames map[string]bool) map[string]bool {
	names := map[string]int{}
	for i, b := range list {
		field := fmt.Sprintf("%s[%d]", section, i)
		name := b.GetName()
		switch prev, dup := names[name]; {
		case name == "":
			v.fail(file, field+".name", "is required")
		case !validName(name, true):
			v.fail(file, field+".name", "%q must match ^[a-z_0-9.]{2,64}$", name)
		case dup:
			v.fail(file, field+".name", "%q is already the name of %s[%d]", name, section, prev)
		}
		if _, dup := names[name]; !dup {
			names[name] = i
		}
		if _, ok := kedgeconfig.Balancer_name[int32(b.GetBalancer())]; !ok {
			v.fail(file, field+".balancer", "unknown balancer %d (only ROUND_ROBIN)", b.GetBalancer())
		}
		v.resolver(file, field, b)
		v.security(file, field+".security", b.GetSecurity(), tlsNames)
	}
	set := make(map[string]bool, len(names))
	for n := range names {
		set[n] = true
	}
	return set
}

func (v *validator) resolver(file, field string, b backendDoc) {
	switch {
	case b.GetHost() != nil:
		h := b.GetHost()
		if h.GetDnsName() == "" {
			v.fail(file, field+".host.dns_name", "is required")
		} else if r := checkDNSName(h.GetDnsName(), true); r != "" {
			v.fail(file, field+".host.dns_name", "%q %s", h.GetDnsName(), r)
		}
		if h.GetPort() == 0 || h.GetPort() > 65535 {
			v.fail(file, field+".host.port", "%d is not a port (1-65535)", h.GetPort())
		}
	case b.GetSrv() != nil:
		s := b.GetSrv()
		if s.GetDnsName() == "" {
			v.warn(file, field+".srv.dns_name", "is empty, so the backend has no endpoints")
		} else if r := checkDNSName(s.GetDnsName(), false); r != "" {
			v.fail(file, field+".srv.dns_name", "%q %s", s.GetDnsName(), r)
		}
		if s.GetPortOverride() > 65535 {
			v.fail(file, field+".srv.port_override", "%d is not a port (1-65535, or 0 for the SRV ports)", s.GetPortOverride())
		}
	case b.GetK8S() != nil:
		target := b.GetK8S().GetDnsPortName()
		// Syntax only: whether the Service exists, and whether kedge can reach the API, is known at run time.
		if r := checkK8sTarget(target); r != "" {
			v.fail(file, field+".k8s.dns_port_name", "%q %s", target, r)
		}
	default:
		v.fail(file, field, "exactly one resolver (srv, k8s or host) is required")
	}
}

func (v *validator) security(file, field string, s *kedgeconfig.Security, tlsNames map[string]bool) {
	if s == nil {
		return
	}
	if s.GetInsecureSkipVerify() && s.GetCaFile() != "" {
		v.fail(file, field, "insecure_skip_verify and ca_file contradict each other: ca_file would never be used")
	}
	if (s.GetCertFile() == "") != (s.GetKeyFile() == "") {
		v.fail(file, field, "cert_file and key_file must be set together")
	}
	if n := s.GetServerName(); n != "" {
		if r := checkDNSName(n, true); r != "" {
			v.fail(file, field+".server_name", "%q %s", n, r)
		}
	}
	if n := s.GetConfigName(); n != "" {
		if !tlsNames[n] {
			v.fail(file, field+".config_name", "%q names no tls_server_configs entry", n)
		} else {
			v.warn(file, field+".config_name", "is accepted for compatibility and does not change the TLS settings")
		}
	}
	if !v.checkFiles {
		return
	}
	if f := s.GetCaFile(); f != "" {
		if pem, err := os.ReadFile(f); err != nil {
			v.fail(file, field+".ca_file", "%v", err)
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			v.fail(file, field+".ca_file", "%s holds no PEM certificate", f)
		}
	}
	if s.GetCertFile() != "" && s.GetKeyFile() != "" {
		if _, err := tls.LoadX509KeyPair(s.GetCertFile(), s.GetKeyFile()); err != nil {
			v.fail(file, field+".cert_file", "loading the client certificate: %v", err)
		}
	}
}

func (v *validator) director(file string, dir *kedgeconfig.DirectorConfig, names backendNames) {
	for i, r := range dir.GetHttp().GetRoutes() {
		v.httpRoute(file, fmt.Sprintf("http.routes[%d]", i), r, names)
	}
	for i, a := range dir.GetHttp().GetAdhocRules() {
		v.adhoc(file, fmt.Sprintf("http.adhoc_rules[%d]", i), a)
	}
	for i, r := range dir.GetGrpc().GetRoutes() {
		v.grpcRoute(file, fmt.Sprintf("grpc.routes[%d]", i), r, names)
	}
	for i, a := range dir.GetGrpc().GetAdhocRules() {
		v.adhoc(file, fmt.Sprintf("grpc.adhoc_rules[%d]", i), a)
	}
}

// backendRef checks that name is a backend of the route's protocol (own) and not only of the other one.
func (v *validator) backendRef(file, field, name, proto string, own, other map[string]bool) {
	switch {
	case name == "":
		v.fail(file, field, "is required")
	case own[name]:
	case other[name]:
		v.fail(file, field, "%q is not a %s backend (only the other protocol has a backend of that name)", name, proto)
	default:
		v.fail(file, field, "%q names no %s backend in the backendpool config", name, proto)
	}
}

func (v *validator) httpRoute(file, field string, r *kedgeconfig.HTTPRoute, names backendNames) {
	v.backendRef(file, field+".backend_name", r.GetBackendName(), "http", names.http, names.grpc)
	if h := r.GetHostMatcher(); h != "" {
		if reason := checkHostPattern(h); reason != "" {
			v.fail(file, field+".host_matcher", "%q %s", h, reason)
		}
	}
	if p := r.GetPortMatcher(); p > 65535 {
		v.fail(file, field+".port_matcher", "%d is not a port (1-65535, or 0 for any)", p)
	}
	for j, p := range r.GetPathRules() {
		f := fmt.Sprintf("%s.path_rules[%d]", field, j)
		switch {
		case !strings.HasPrefix(p, "/"):
			v.fail(file, f, "%q must start with '/' (\"/*\" matches every path)", p)
		case strings.Contains(strings.TrimSuffix(p, "*"), "*"):
			v.fail(file, f, "%q: '*' is only allowed at the end (a prefix match)", p)
		case strings.ContainsFunc(p, isSpaceOrControl):
			v.fail(file, f, "%q must not contain spaces or control characters", p)
		}
	}
	canonical := map[string]string{}
	for _, k := range sortedKeys(r.GetHeaderMatcher()) {
		f := fmt.Sprintf("%s.header_matcher[%q]", field, k)
		val := r.GetHeaderMatcher()[k]
		switch {
		case !wire.IsToken(k):
			v.fail(file, f, "%q is not a valid header name", k)
		case strings.Contains(k, "_"):
			v.fail(file, f, "%q: kedge refuses requests with '_' in header names, so this never matches", k)
		case val == "":
			v.fail(file, f, "the value is empty; an empty or missing header never matches")
		case strings.ContainsFunc(val, isControl):
			v.fail(file, f, "the value must not contain control characters")
		}
		c := canonicalHeader(k)
		if prev, dup := canonical[c]; dup {
			v.fail(file, f, "%q and %q are the same header", prev, k)
		}
		canonical[c] = k
	}
	if _, ok := kedgeconfig.ProxyMode_name[int32(r.GetProxyMode())]; !ok {
		v.fail(file, field+".proxy_mode", "unknown proxy mode %d (ANY, REVERSE_PROXY, FORWARD_PROXY or CONNECT)", r.GetProxyMode())
	}
	v.rateLimit(file, field+".rate_limit", r.GetRateLimit())
}

func (v *validator) grpcRoute(file, field string, r *kedgeconfig.GRPCRoute, names backendNames) {
	v.backendRef(file, field+".backend_name", r.GetBackendName(), "grpc", names.grpc, names.http)
	if s := r.GetServiceNameMatcher(); s != "" {
		switch {
		case strings.HasPrefix(s, "/"):
			v.fail(file, field+".service_name_matcher", "%q must not start with '/' (write \"pkg.Service/*\")", s)
		case strings.Contains(strings.TrimSuffix(s, "*"), "*"):
			v.fail(file, field+".service_name_matcher", "%q: '*' is only allowed at the end (a prefix match)", s)
		case strings.ContainsFunc(s, isSpaceOrControl):
			v.fail(file, field+".service_name_matcher", "%q must not contain spaces or control characters", s)
		}
	}
	host, hostField := r.GetAuthorityHostMatcher(), field+".authority_host_matcher"
	if old := r.GetAuthorityMatcher(); old != "" {
		if host != "" {
			v.fail(file, field+".authority_matcher", "is the deprecated name of authority_host_matcher; set only one of them")
		} else {
			host, hostField = old, field+".authority_matcher"
			v.warn(file, hostField, "is deprecated; use authority_host_matcher")
		}
	}
	if host != "" {
		if reason := checkDNSName(host, true); reason != "" {
			v.fail(file, hostField, "%q %s", host, reason)
		}
	}
	if p := r.GetAuthorityPortMatcher(); p > 65535 {
		v.fail(file, field+".authority_port_matcher", "%d is not a port (1-65535, or 0 for any)", p)
	}
	lower := map[string]string{}
	for _, k := range sortedKeys(r.GetMetadataMatcher()) {
		f := fmt.Sprintf("%s.metadata_matcher[%q]", field, k)
		if reason := checkMetadataKey(k); reason != "" {
			v.fail(file, f, "%q %s", k, reason)
		}
		if strings.ContainsFunc(r.GetMetadataMatcher()[k], isControl) {
			v.fail(file, f, "the value must not contain control characters")
		}
		l := strings.ToLower(k)
		if prev, dup := lower[l]; dup {
			v.fail(file, f, "%q and %q are the same metadata key", prev, k)
		}
		lower[l] = k
	}
	v.rateLimit(file, field+".rate_limit", r.GetRateLimit())
}

func (v *validator) adhoc(file, field string, a *kedgeconfig.Adhoc) {
	switch m := a.GetDnsNameMatcher(); {
	case m == "":
		v.fail(file, field+".dns_name_matcher", "is required")
	case m == "*":
		v.warn(file, field+".dns_name_matcher", "\"*\" allows every host name")
	default:
		if reason := checkAdhocPattern(m); reason != "" {
			v.fail(file, field+".dns_name_matcher", "%q %s", m, reason)
		}
	}
	if r := a.GetDnsNameReplace(); r != nil && r.GetPattern() == "" {
		v.fail(file, field+".dns_name_replace.pattern", "is required")
	}
	p := a.GetPort()
	if p == nil {
		v.fail(file, field+".port", "is required (it lists the ports that may be dialled)")
		return
	}
	if p.GetDefault() > 65535 {
		v.fail(file, field+".port.default", "%d is not a port (1-65535, or 0 for 80)", p.GetDefault())
	}
	allowed := func(port uint32) bool {
		for _, a := range p.GetAllowed() {
			if a == port {
				return true
			}
		}
		for _, r := range p.GetAllowedRanges() {
			if r.GetFrom() <= port && port <= r.GetTo() {
				return true
			}
		}
		return false
	}
	for j, port := range p.GetAllowed() {
		if port == 0 || port > 65535 {
			v.fail(file, fmt.Sprintf("%s.port.allowed[%d]", field, j), "%d is not a port (1-65535)", port)
		}
	}
	for j, r := range p.GetAllowedRanges() {
		f := fmt.Sprintf("%s.port.allowed_ranges[%d]", field, j)
		switch {
		case r.GetTo() == 0 || r.GetTo() > 65535:
			v.fail(file, f+".to", "%d is not a port (1-65535)", r.GetTo())
		case r.GetFrom() > r.GetTo():
			v.fail(file, f, "from %d is above to %d", r.GetFrom(), r.GetTo())
		}
	}
	switch {
	case len(p.GetAllowed()) == 0 && len(p.GetAllowedRanges()) == 0:
		v.warn(file, field+".port", "allows no port (allowed and allowed_ranges are empty), so the rule refuses every request it matches")
	case p.GetDefault() != 0 && !allowed(p.GetDefault()):
		v.warn(file, field+".port.default", "%d is not an allowed port, so requests without a port are refused", p.GetDefault())
	}
}
