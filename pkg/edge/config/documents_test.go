package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSeedExamplesLoad(t *testing.T) {
	t.Parallel()
	dyn, err := Load(Source{
		DirectorPath:    "testdata/seed_director.json",
		BackendpoolPath: "testdata/seed_backendpool.json",
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Dynamic{
		HTTPRoutes: []route.HTTPRoute{{Backend: "controller", Host: "controller.ext.cluster.local"}},
		HTTPAdhoc: []route.Adhoc{{
			NamePattern:   "*.pod.cluster.local",
			AllowedRanges: []route.PortRange{{From: 40, To: 10000}},
		}},
		GRPCRoutes: []route.GRPCRoute{{Backend: "controller", Service: "*", AuthorityHost: "controller.ext.cluster.local"}},
		Backends: []backend.Spec{
			{Name: "controller", Protocol: backend.HTTP, Resolver: backend.Resolver{Kind: backend.ResolverSRV}},
			{Name: "controller", Protocol: backend.GRPC, Resolver: backend.Resolver{Kind: backend.ResolverSRV}},
		},
		Warnings: []string{
			"testdata/seed_backendpool.json: http.backends[0].srv.dns_name: is empty, so the backend has no endpoints",
			"testdata/seed_backendpool.json: grpc.backends[0].srv.dns_name: is empty, so the backend has no endpoints",
			"testdata/seed_director.json: grpc.routes[0].authority_matcher: is deprecated; use authority_host_matcher",
		},
	}
	if !reflect.DeepEqual(dyn, want) {
		t.Errorf("Load(seed) =\n%#v\nwant\n%#v", dyn, want)
	}
}

// fullExample is what testdata/director.yaml and testdata/backendpool.json convert to.
func fullExample(tlsDir string) *Dynamic {
	return &Dynamic{
		HTTPRoutes: []route.HTTPRoute{
			{
				Backend: "web", Host: "www.example.com", Port: 443, Paths: []string{"/api/*", "/healthz"},
				Headers: map[string]string{"X-Tenant": "blue"}, Mode: route.ModeReverse,
			},
			{Backend: "static_files", Host: "*.static.example.com", Mode: route.ModeForward, Discovered: true},
		},
		HTTPAdhoc: []route.Adhoc{{
			NamePattern:   "*.pods.cluster.local",
			DefaultPort:   8080,
			AllowedPorts:  []uint32{8080, 9090},
			AllowedRanges: []route.PortRange{{From: 30000, To: 32767}},
			Replace:       &route.NameReplace{Pattern: ".pods.cluster.local", Substitution: ".pod.cluster.local"},
		}},
		GRPCRoutes: []route.GRPCRoute{{
			Backend: "api", Service: "com.example.api.*", AuthorityHost: "api.example.com", AuthorityPort: 8444,
			Metadata: map[string]string{"x-tenant": "blue"},
		}},
		GRPCAdhoc: []route.Adhoc{{NamePattern: "grpc.internal.example.com", AllowedPorts: []uint32{50051}}},
		Backends: []backend.Spec{
			{
				Name: "web", Protocol: backend.HTTP,
				Resolver: backend.Resolver{Kind: backend.ResolverHost, DNSName: "web.internal.example.com", Port: 8443},
				TLS: backend.TLS{
					Enabled: true, CAFile: tlsDir + "/ca.pem", CertFile: tlsDir + "/client.pem", KeyFile: tlsDir + "/client.key",
					ServerName: "web.internal.example.com",
				},
			},
			{
				Name: "static_files", Protocol: backend.HTTP, Discovered: true,
				Resolver: backend.Resolver{Kind: backend.ResolverSRV, DNSName: "_http._tcp.static.ns.svc.cluster.local", PortOverride: 8080},
			},
			{
				Name: "api", Protocol: backend.GRPC,
				Resolver: backend.Resolver{Kind: backend.ResolverSRV, DNSName: "_grpc._tcp.api.ns.svc.cluster.local"},
				TLS:      backend.TLS{Enabled: true, InsecureSkipVerify: true},
			},
		},
		Warnings: []string{
			"backendpool.json: grpc.backends[0].security.config_name: is accepted for compatibility and does not change the TLS settings",
		},
	}
}

func TestFullExampleParses(t *testing.T) {
	t.Parallel()
	dyn, err := Parse(readTestdata(t, "director.yaml"), readTestdata(t, "backendpool.json"), "director.yaml", "backendpool.json")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if want := fullExample("/etc/kedge/tls"); !reflect.DeepEqual(dyn, want) {
		t.Errorf("Parse(full example) =\n%#v\nwant\n%#v", dyn, want)
	}
}

// TestFullExampleLoads loads the full example with its TLS files pointing at certificates made for the test, and
// checks that Load (unlike Parse) refuses files that are missing or not PEM.
func TestFullExampleLoads(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeTestPKI(t, dir)
	pool := strings.ReplaceAll(string(readTestdata(t, "backendpool.json")), "/etc/kedge/tls", dir)
	if err := os.WriteFile(filepath.Join(dir, "backendpool.json"), []byte(pool), 0o600); err != nil {
		t.Fatal(err)
	}
	src := Source{DirectorPath: "testdata/director.yaml", BackendpoolPath: filepath.Join(dir, "backendpool.json")}
	dyn, err := Load(src)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := fullExample(dir)
	want.Warnings = []string{strings.Replace(want.Warnings[0], "backendpool.json", src.BackendpoolPath, 1)}
	if !reflect.DeepEqual(dyn, want) {
		t.Errorf("Load(full example) =\n%#v\nwant\n%#v", dyn, want)
	}

	// Break the files: the CA is not PEM, the client key is missing.
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "client.key")); err != nil {
		t.Fatal(err)
	}
	_, err = Load(src)
	got := fieldsOf(err)
	wantFields := []string{src.BackendpoolPath + " http.backends[0].security.ca_file", src.BackendpoolPath + " http.backends[0].security.cert_file"}
	if !reflect.DeepEqual(got, wantFields) {
		t.Errorf("Load(broken TLS files) fields = %q, want %q (error: %v)", got, wantFields, err)
	}
}

// fieldsOf lists "file field" for every FieldError in err.
func fieldsOf(err error) []string {
	var out []string
	for _, fe := range FieldErrors(err) {
		out = append(out, fe.File+" "+fe.Field)
	}
	return out
}

func TestLoadSources(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dirFile := filepath.Join(dir, "director.json")
	if err := os.WriteFile(dirFile, []byte(`{"http": {"routes": [{"backend_name": "from_file"}]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := `{"http": {"backends": [{"name": "from_file", "host": {"dns_name": "a.example.com", "port": 80}}]}}`
	tests := []struct {
		name        string
		src         Source
		wantBackend string // of the first HTTP route; "" = no routes
		wantFields  []string
	}{
		{name: "neither set is an empty config", src: Source{}},
		{
			name:        "file wins over inline",
			src:         Source{DirectorPath: dirFile, DirectorInline: `{"http": {"routes": [{"backend_name": "inline"}]}}`, BackendpoolInline: pool},
			wantBackend: "from_file",
		},
		{
			name:        "inline only",
			src:         Source{DirectorInline: "http:\n  routes:\n  - backend_name: from_file\n", BackendpoolInline: pool},
			wantBackend: "from_file",
		},
		{
			name:       "inline errors are named after the flag",
			src:        Source{DirectorInline: `{"http": {"routes": [{"backend_name": "nope"}]}}`, BackendpoolInline: pool},
			wantFields: []string{"--kedge_config_director_config http.routes[0].backend_name"},
		},
		{
			name:       "missing files are both reported",
			src:        Source{DirectorPath: filepath.Join(dir, "missing.json"), BackendpoolPath: filepath.Join(dir, "gone.yaml")},
			wantFields: []string{filepath.Join(dir, "missing.json") + " ", filepath.Join(dir, "gone.yaml") + " "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dyn, err := Load(tt.src)
			if got := fieldsOf(err); !slices.Equal(got, tt.wantFields) {
				t.Fatalf("Load error fields = %q, want %q (error: %v)", got, tt.wantFields, err)
			}
			if err != nil {
				return
			}
			got := ""
			if len(dyn.HTTPRoutes) > 0 {
				got = dyn.HTTPRoutes[0].Backend
			}
			if got != tt.wantBackend {
				t.Errorf("first route backend = %q, want %q", got, tt.wantBackend)
			}
		})
	}
}

func TestYAMLAndJSONAreEquivalent(t *testing.T) {
	t.Parallel()
	pool := readTestdata(t, "backendpool.json")
	fromYAML, err := Parse(readTestdata(t, "director.yaml"), pool, "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	asJSON := `{
  "http": {
    "routes": [
      {"backend_name": "web", "host_matcher": "WWW.Example.COM", "port_matcher": 443, "path_rules": ["/api/*", "/healthz"],
       "header_matcher": {"x-tenant": "blue"}, "proxy_mode": "REVERSE_PROXY", "autogenerated": false},
      {"backend_name": "static_files", "host_matcher": "*.static.example.com", "proxy_mode": "FORWARD_PROXY", "autogenerated": true}
    ],
    "adhoc_rules": [
      {"dns_name_matcher": "*.pods.cluster.local",
       "port": {"default": 8080, "allowed": [8080, 9090], "allowed_ranges": [{"from": 30000, "to": 32767}]},
       "dns_name_replace": {"pattern": ".pods.cluster.local", "substitution": ".pod.cluster.local"}}
    ]
  },
  "grpc": {
    "routes": [
      {"backend_name": "api", "service_name_matcher": "com.example.api.*", "authority_host_matcher": "API.Example.com",
       "authority_port_matcher": 8444, "metadata_matcher": {"X-Tenant": "blue"}}
    ],
    "adhoc_rules": [{"dns_name_matcher": "grpc.internal.example.com", "port": {"allowed": [50051]}}]
  }
}`
	fromJSON, err := Parse([]byte(asJSON), pool, "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromYAML, fromJSON) {
		t.Errorf("YAML and JSON differ:\n%#v\n%#v", fromYAML, fromJSON)
	}
}

func TestCamelCaseAndEnumNumbers(t *testing.T) {
	t.Parallel()
	director := `{
  "http": {"routes": [{"backendName": "web", "hostMatcher": "a.example.com", "portMatcher": 8080, "pathRules": ["/x"],
                       "headerMatcher": {"X-A": "1"}, "proxyMode": 2}],
           "adhocRules": [{"dnsNameMatcher": "*.x.local", "port": {"allowedRanges": [{"from": 1, "to": 2}]},
                           "dnsNameReplace": {"pattern": "x", "substitution": "y"}}]},
  "grpc": {"routes": [{"backendName": "api", "serviceNameMatcher": "a.B/*", "authorityHostMatcher": "b.example.com",
                       "authorityPortMatcher": 443, "metadataMatcher": {"k": "v"}}]}
}`
	pool := "tlsServerConfigs: [{name: abc}]\n" +
		"http: {backends: [{name: web, disableConntracking: true, security: {insecureSkipVerify: true, serverName: x.example.com}, host: {dnsName: a.example.com, port: 80}}]}\n" +
		"grpc: {backends: [{name: api, balancer: 0, srv: {dnsName: _grpc._tcp.example.com, portOverride: 9}}]}\n"
	dyn, err := Parse([]byte(director), []byte(pool), "d", "b")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := dyn.HTTPRoutes[0]; got.Mode != route.ModeForward || got.Port != 8080 || got.Headers["X-A"] != "1" {
		t.Errorf("HTTP route = %+v", got)
	}
	if got := dyn.HTTPAdhoc[0]; got.Replace == nil || got.Replace.Substitution != "y" || len(got.AllowedRanges) != 1 {
		t.Errorf("adhoc = %+v", got)
	}
	if got := dyn.GRPCRoutes[0]; got.AuthorityHost != "b.example.com" || got.AuthorityPort != 443 || got.Metadata["k"] != "v" {
		t.Errorf("gRPC route = %+v", got)
	}
	if got := dyn.Backends[1].Resolver; got.PortOverride != 9 || got.DNSName != "_grpc._tcp.example.com" {
		t.Errorf("gRPC backend resolver = %+v", got)
	}
	if got := dyn.Backends[0].TLS; !got.InsecureSkipVerify || got.ServerName != "x.example.com" {
		t.Errorf("HTTP backend TLS = %+v", got)
	}
}

func TestEmptyAndCommentOnlyDocuments(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{"", "  \n", "# nothing yet\n", "---\n", "{}", "\xef\xbb\xbf{}"} {
		dyn, err := Parse([]byte(doc), []byte(doc), "d", "b")
		if err != nil {
			t.Errorf("Parse(%q): %v", doc, err)
			continue
		}
		if !reflect.DeepEqual(dyn, &Dynamic{}) {
			t.Errorf("Parse(%q) = %+v, want empty", doc, dyn)
		}
	}
}
