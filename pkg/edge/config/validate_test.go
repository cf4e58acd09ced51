package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// basePool is a valid backendpool for director cases: HTTP backend "web", gRPC backend "api".
const basePool = `{"http": {"backends": [{"name": "web", "host": {"dns_name": "web.example.com", "port": 80}}]},
 "grpc": {"backends": [{"name": "api", "host": {"dns_name": "api.example.com", "port": 81}}]}}`

// httpRoute wraps an HTTP route's extra JSON members into a director document routing to "web".
func httpRoute(members string) string {
	return `{"http": {"routes": [{"backend_name": "web"` + members + `}]}}`
}

func grpcRoute(members string) string {
	return `{"grpc": {"routes": [{"backend_name": "api"` + members + `}]}}`
}

func httpBackend(members string) string {
	return `{"http": {"backends": [{"name": "web"` + members + `}]}}`
}

func adhoc(members string) string {
	return `{"http": {"adhoc_rules": [{` + members + `}]}}`
}

const okHost = `, "host": {"dns_name": "web.example.com", "port": 80}`

func TestInvalidDocuments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		director   string // "" = empty document
		pool       string // "" = basePool
		wantFields []string
		wantReason string // in the first error
	}{
		// Decoding: the path of the offending token, for JSON and YAML.
		{"unknown field", httpRoute(`, "bogus": 1`), "", []string{"d http.routes[0].bogus"}, `unknown field "bogus" (line 1`},
		{"unknown field in YAML", "http:\n  routes:\n  - backend_name: web\n    hostmatcher: x\n", "", []string{"d http.routes[0].hostmatcher"}, `unknown field "hostmatcher"`},
		{"unknown top-level field", `{"routes": []}`, "", []string{"d routes"}, `unknown field "routes"`},
		{"wrong type", httpRoute(`, "port_matcher": "abc"`), "", []string{"d http.routes[0].port_matcher"}, "invalid value"},
		{"unknown enum name", httpRoute(`, "proxy_mode": "SIDEWAYS"`), "", []string{"d http.routes[0].proxy_mode"}, "SIDEWAYS"},
		{"duplicate field", httpRoute(`, "host_matcher": "a.com", "host_matcher": "b.com"`), "", []string{"d http.routes[0].host_matcher"}, "duplicate"},
		{"two resolvers", "", httpBackend(okHost + `, "srv": {"dns_name": "x"}`), []string{"b http.backends[0].srv"}, "only one resolver"},
		{"JSON syntax", `{"http": {"routes": [}`, "", []string{"d http.routes"}, "unexpected token }"},
		{"YAML syntax", "http: [\n", "", []string{"d "}, "invalid YAML"},
		{"YAML scalar", "just text", "", []string{"d "}, "must be a map"},
		{"wrong type in YAML", "http:\n  routes: {backend_name: web}\n", "", []string{"d http.routes"}, ""},

		// Backends.
		{"duplicate JSON member", "", httpBackend(`, "name": "Web-1"` + okHost), []string{"b http.backends[0].name"}, "duplicate field"},
		{"backend name syntax", "", `{"http": {"backends": [{"name": "Web-1"` + okHost + `}]}}`, []string{"b http.backends[0].name"}, "^[a-z_0-9.]{2,64}$"},
		{"backend name missing", "", `{"grpc": {"backends": [{"srv": {"dns_name": "x.example.com"}}]}}`, []string{"b grpc.backends[0].name"}, "required"},
		{"backend name duplicate", "", `{"http": {"backends": [{"name": "web"` + okHost + `}, {"name": "web"` + okHost + `}]}}`, []string{"b http.backends[1].name"}, "http.backends[0]"},
		{"no resolver", "", httpBackend(``), []string{"b http.backends[0]"}, "exactly one resolver"},
		{"host without name and port", "", httpBackend(`, "host": {}`), []string{"b http.backends[0].host.dns_name", "b http.backends[0].host.port"}, "required"},
		{"host port too big", "", httpBackend(`, "host": {"dns_name": "a.example.com", "port": 70000}`), []string{"b http.backends[0].host.port"}, "not a port"},
		{"host name with port", "", httpBackend(`, "host": {"dns_name": "a.example.com:80", "port": 80}`), []string{"b http.backends[0].host.dns_name"}, "without a port"},
		{"srv port override", "", httpBackend(`, "srv": {"dns_name": "_x._tcp.example.com", "port_override": 65536}`), []string{"b http.backends[0].srv.port_override"}, "not a port"},
		{"srv name with space", "", httpBackend(`, "srv": {"dns_name": "a b"}`), []string{"b http.backends[0].srv.dns_name"}, "spaces"},
		{"k8s empty target", "", httpBackend(`, "k8s": {}`), []string{"b http.backends[0].k8s.dns_port_name"}, "required"},
		{"k8s bad namespace", "", httpBackend(`, "k8s": {"dns_port_name": "svc.Ns_1:http"}`), []string{"b http.backends[0].k8s.dns_port_name"}, "namespace"},
		{"k8s bad port name", "", httpBackend(`, "k8s": {"dns_port_name": "svc.ns:Http_1"}`), []string{"b http.backends[0].k8s.dns_port_name"}, "port name"},
		{"k8s scheme", "", httpBackend(`, "k8s": {"dns_port_name": "k8s://svc.ns:80"}`), []string{"b http.backends[0].k8s.dns_port_name"}, "scheme"},
		{"k8s two colons", "", httpBackend(`, "k8s": {"dns_port_name": "svc.ns:80:81"}`), []string{"b http.backends[0].k8s.dns_port_name"}, "one ':'"},
		{"k8s bad service", "", httpBackend(`, "k8s": {"dns_port_name": "Svc_1.ns"}`), []string{"b http.backends[0].k8s.dns_port_name"}, "Service name"},
		{"k8s port zero", "", httpBackend(`, "k8s": {"dns_port_name": "svc:0"}`), []string{"b http.backends[0].k8s.dns_port_name"}, "1-65535"},
		{"cert without key", "", httpBackend(okHost + `, "security": {"cert_file": "c.pem"}`), []string{"b http.backends[0].security"}, "together"},
		{"insecure with CA", "", httpBackend(okHost + `, "security": {"insecure_skip_verify": true, "ca_file": "ca.pem"}`), []string{"b http.backends[0].security"}, "contradict"},
		{"server name with port", "", httpBackend(okHost + `, "security": {"server_name": "a.example.com:443"}`), []string{"b http.backends[0].security.server_name"}, "port"},
		{"unknown config_name", "", httpBackend(okHost + `, "security": {"config_name": "nope"}`), []string{"b http.backends[0].security.config_name"}, "no tls_server_configs"},
		{"tls config name", "", `{"tls_server_configs": [{"name": "tls1"}]}`, []string{"b tls_server_configs[0].name"}, "^[a-z_.]{2,64}$"},
		{"unknown balancer number", "", httpBackend(okHost + `, "balancer": 3`), []string{"b http.backends[0].balancer"}, "unknown balancer"},

		// HTTP routes.
		{"route backend missing", `{"http": {"routes": [{}]}}`, "", []string{"d http.routes[0].backend_name"}, "required"},
		{"route backend unknown", `{"http": {"routes": [{"backend_name": "nope"}]}}`, "", []string{"d http.routes[0].backend_name"}, `"nope" names no http backend`},
		{"route backend of the other protocol", `{"http": {"routes": [{"backend_name": "api"}]}}`, "", []string{"d http.routes[0].backend_name"}, "other protocol"},
		{"host with inner star", httpRoute(`, "host_matcher": "a.*.example.com"`), "", []string{"d http.routes[0].host_matcher"}, "first label"},
		{"host star alone", httpRoute(`, "host_matcher": "*"`), "", []string{"d http.routes[0].host_matcher"}, "first label"},
		{"host with port", httpRoute(`, "host_matcher": "example.com:8080"`), "", []string{"d http.routes[0].host_matcher"}, "port"},
		{"host with space", httpRoute(`, "host_matcher": "exa mple.com"`), "", []string{"d http.routes[0].host_matcher"}, "spaces"},
		{"host URL", httpRoute(`, "host_matcher": "https//example.com/"`), "", []string{"d http.routes[0].host_matcher"}, "URL"},
		{"port matcher too big", httpRoute(`, "port_matcher": 65536`), "", []string{"d http.routes[0].port_matcher"}, "not a port"},
		{"path without slash", httpRoute(`, "path_rules": ["/ok", "api/*"]`), "", []string{"d http.routes[0].path_rules[1]"}, "start with '/'"},
		{"empty path", httpRoute(`, "path_rules": [""]`), "", []string{"d http.routes[0].path_rules[0]"}, "start with '/'"},
		{"inner star in path", httpRoute(`, "path_rules": ["/a*b"]`), "", []string{"d http.routes[0].path_rules[0]"}, "only allowed at the end"},
		{"header name with space", httpRoute(`, "header_matcher": {"X Bad": "v"}`), "", []string{`d http.routes[0].header_matcher["X Bad"]`}, "not a valid header name"},
		{"header name with underscore", httpRoute(`, "header_matcher": {"X_Auth": "v"}`), "", []string{`d http.routes[0].header_matcher["X_Auth"]`}, "'_'"},
		{"header empty value", httpRoute(`, "header_matcher": {"X-A": ""}`), "", []string{`d http.routes[0].header_matcher["X-A"]`}, "empty"},
		{"header names equal after canonicalisation", httpRoute(`, "header_matcher": {"x-a": "1", "X-A": "2"}`), "", []string{`d http.routes[0].header_matcher["x-a"]`}, "same header"},
		{"unknown proxy mode number", httpRoute(`, "proxy_mode": 7`), "", []string{"d http.routes[0].proxy_mode"}, "unknown proxy mode 7 (ANY, REVERSE_PROXY, FORWARD_PROXY or CONNECT)"},

		// gRPC routes.
		{"grpc backend unknown", `{"grpc": {"routes": [{"backend_name": "web"}]}}`, "", []string{"d grpc.routes[0].backend_name"}, "not a grpc backend"},
		{"both authority matchers", grpcRoute(`, "authority_matcher": "a.com", "authority_host_matcher": "b.com"`), "", []string{"d grpc.routes[0].authority_matcher"}, "only one"},
		{"authority host with port", grpcRoute(`, "authority_host_matcher": "a.example.com:443"`), "", []string{"d grpc.routes[0].authority_host_matcher"}, "port"},
		{"old authority with star", grpcRoute(`, "authority_matcher": "*.example.com"`), "", []string{"d grpc.routes[0].authority_matcher"}, "'*'"},
		{"authority port too big", grpcRoute(`, "authority_port_matcher": 100000`), "", []string{"d grpc.routes[0].authority_port_matcher"}, "not a port"},
		{"service with slash", grpcRoute(`, "service_name_matcher": "/pkg.Svc/*"`), "", []string{"d grpc.routes[0].service_name_matcher"}, "'/'"},
		{"service with inner star", grpcRoute(`, "service_name_matcher": "pkg.*.Svc"`), "", []string{"d grpc.routes[0].service_name_matcher"}, "only allowed at the end"},
		{"metadata pseudo header", grpcRoute(`, "metadata_matcher": {":authority": "x"}`), "", []string{`d grpc.routes[0].metadata_matcher[":authority"]`}, "metadata key"},
		{"metadata keys equal after lower-casing", grpcRoute(`, "metadata_matcher": {"K": "1", "k": "2"}`), "", []string{`d grpc.routes[0].metadata_matcher["k"]`}, "same metadata key"},
		{"rate limit zero", httpRoute(`, "rate_limit": {"burst": 5}`), "", []string{"d http.routes[0].rate_limit.requests_per_second"}, "greater than 0"},
		{"rate limit negative", grpcRoute(`, "rate_limit": {"requests_per_second": -1}`), "", []string{"d grpc.routes[0].rate_limit.requests_per_second"}, "greater than 0"},
		{"rate limit NaN", httpRoute(`, "rate_limit": {"requests_per_second": "NaN"}`), "", []string{"d http.routes[0].rate_limit.requests_per_second"}, "not a number"},
		{"rate limit huge burst", httpRoute(`, "rate_limit": {"requests_per_second": 1, "burst": 2000000}`), "", []string{"d http.routes[0].rate_limit.burst"}, "above"},
		{"rate limit unknown field", httpRoute(`, "rate_limit": {"rps": 1}`), "", []string{"d http.routes[0].rate_limit.rps"}, `unknown field "rps"`},
		{"identity header not a bool", httpRoute(`, "identity_header": "no"`), "", []string{"d http.routes[0].identity_header"}, "must be true or false"},

		// Adhoc rules.
		{"adhoc without matcher", adhoc(`"port": {"allowed": [80]}`), "", []string{"d http.adhoc_rules[0].dns_name_matcher"}, "required"},
		{"adhoc without port", adhoc(`"dns_name_matcher": "*.example.com"`), "", []string{"d http.adhoc_rules[0].port"}, "required"},
		{"adhoc inner star", adhoc(`"dns_name_matcher": "a.*.com", "port": {"allowed": [80]}`), "", []string{"d http.adhoc_rules[0].dns_name_matcher"}, "only at the start"},
		{"adhoc name with port", adhoc(`"dns_name_matcher": "a.com:80", "port": {"allowed": [80]}`), "", []string{"d http.adhoc_rules[0].dns_name_matcher"}, "port"},
		{"adhoc range reversed", adhoc(`"dns_name_matcher": "a.com", "port": {"allowed_ranges": [{"from": 9, "to": 8}]}`), "", []string{"d http.adhoc_rules[0].port.allowed_ranges[0]"}, "above"},
		{"adhoc range too big", adhoc(`"dns_name_matcher": "a.com", "port": {"allowed_ranges": [{"from": 9, "to": 65536}]}`), "", []string{"d http.adhoc_rules[0].port.allowed_ranges[0].to"}, "not a port"},
		{"adhoc allowed port zero", adhoc(`"dns_name_matcher": "a.com", "port": {"allowed": [80, 0]}`), "", []string{"d http.adhoc_rules[0].port.allowed[1]"}, "not a port"},
		{"adhoc default too big", adhoc(`"dns_name_matcher": "a.com", "port": {"default": 65536, "allowed": [80]}`), "", []string{"d http.adhoc_rules[0].port.default"}, "not a port"},
		{"adhoc empty replace pattern", adhoc(`"dns_name_matcher": "a.com", "port": {"allowed": [80]}, "dns_name_replace": {"substitution": "b"}`), "", []string{"d http.adhoc_rules[0].dns_name_replace.pattern"}, "required"},
		{"grpc adhoc", `{"grpc": {"adhoc_rules": [{"dns_name_matcher": "a.com"}]}}`, "", []string{"d grpc.adhoc_rules[0].port"}, "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pool := tt.pool
			if pool == "" {
				pool = basePool
			}
			dyn, err := Parse([]byte(tt.director), []byte(pool), "d", "b")
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", dyn)
			}
			if dyn != nil {
				t.Errorf("Parse returned a config with the error")
			}
			if got := fieldsOf(err); !slices.Equal(got, tt.wantFields) {
				t.Errorf("error fields = %q, want %q\nerror: %v", got, tt.wantFields, err)
			}
			if fes := FieldErrors(err); len(fes) > 0 && !strings.Contains(fes[0].Reason, tt.wantReason) {
				t.Errorf("reason %q does not contain %q", fes[0].Reason, tt.wantReason)
			}
		})
	}
}

func TestAllErrorsAreReported(t *testing.T) {
	t.Parallel()
	director := `{
  "http": {"routes": [{"backend_name": "nope"}, {"backend_name": "web", "host_matcher": "a b"}],
           "adhoc_rules": [{"dns_name_matcher": "x.com"}]},
  "grpc": {"routes": [{"backend_name": "api", "authority_port_matcher": 70000}]}
}`
	pool := `{"http": {"backends": [{"name": "web", "host": {"dns_name": "web.example.com"}}]},
 "grpc": {"backends": [{"name": "api", "srv": {"dns_name": ""}}, {"name": "X"}]}}`
	_, err := Parse([]byte(director), []byte(pool), "director.json", "backendpool.json")
	want := []string{
		"backendpool.json http.backends[0].host.port",
		"backendpool.json grpc.backends[1].name",
		"backendpool.json grpc.backends[1]",
		"director.json http.routes[0].backend_name",
		"director.json http.routes[1].host_matcher",
		"director.json http.adhoc_rules[0].port",
		"director.json grpc.routes[0].authority_port_matcher",
	}
	if got := fieldsOf(err); !slices.Equal(got, want) {
		t.Errorf("fields = %q\nwant %q", got, want)
	}
	// The joined error prints one problem per line, each naming file and field.
	if lines := strings.Split(err.Error(), "\n"); len(lines) != len(want) || lines[3] != `director.json: http.routes[0].backend_name: "nope" names no http backend in the backendpool config` {
		t.Errorf("error text:\n%v", err)
	}

	// Both documents failing to decode are reported together.
	_, err = Parse([]byte(`{"x": 1}`), []byte("z: 2"), "director.json", "backendpool.yaml")
	if got, want := fieldsOf(err), []string{"director.json x", "backendpool.yaml z"}; !slices.Equal(got, want) {
		t.Errorf("decode fields = %q, want %q", got, want)
	}
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	director := `{"http": {"adhoc_rules": [
  {"dns_name_matcher": "*", "port": {"allowed": [443]}},
  {"dns_name_matcher": "a.com", "port": {}},
  {"dns_name_matcher": "b.com", "port": {"default": 8080, "allowed": [80]}}]}}`
	dyn, err := Parse([]byte(director), nil, "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`d: http.adhoc_rules[0].dns_name_matcher: "*" allows every host name`,
		"d: http.adhoc_rules[1].port: allows no port (allowed and allowed_ranges are empty), so the rule refuses every request it matches",
		"d: http.adhoc_rules[2].port.default: 8080 is not an allowed port, so requests without a port are refused",
	}
	if !slices.Equal(dyn.Warnings, want) {
		t.Errorf("warnings = %q\nwant %q", dyn.Warnings, want)
	}
}

// writeTestPKI writes ca.pem, client.pem and client.key (a CA and a client certificate it signed) into dir.
func writeTestPKI(t *testing.T, dir string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kedge"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*pem.Block{
		"ca.pem":     {Type: "CERTIFICATE", Bytes: caDER},
		"client.pem": {Type: "CERTIFICATE", Bytes: der},
		"client.key": {Type: "PRIVATE KEY", Bytes: keyDER},
	}
	for name, block := range files {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
