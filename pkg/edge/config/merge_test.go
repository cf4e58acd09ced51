package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// fileConfig is a file-based config with an HTTP backend "web" and a route to it.
func fileConfig(t *testing.T) *Dynamic {
	t.Helper()
	dyn, err := Parse([]byte(`{"http": {"routes": [{"backend_name": "web", "host_matcher": "web.example.com"}]}}`), []byte(basePool), "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}

// service returns what discovery would generate for an HTTP Service name in namespace ns.
func service(name, ns, host string) Generated {
	backendName := strings.ReplaceAll(name+"_"+ns+"_8080", "-", "_")
	return Generated{
		Source:     "service " + ns + "/" + name,
		HTTPRoutes: []route.HTTPRoute{{Backend: backendName, Host: host, Port: 80, Mode: route.ModeReverse}},
		Backends: []backend.Spec{{Name: backendName, Protocol: backend.HTTP,
			Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: name + "." + ns + ":http"}}},
	}
}

func TestValidK8sBackendParses(t *testing.T) {
	t.Parallel()
	dyn, err := Parse(nil, []byte(`{"grpc": {"backends": [{"name": "api", "k8s": {"dns_port_name": "api.team-a.svc:grpc"}}]}}`), "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	want := backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "api.team-a.svc:grpc"}
	if len(dyn.Backends) != 1 || dyn.Backends[0].Resolver != want {
		t.Errorf("backends = %+v", dyn.Backends)
	}
}

func TestMergeOrderAndMarks(t *testing.T) {
	t.Parallel()
	file := fileConfig(t)
	grpcSvc := Generated{
		Source:     "service b/api",
		GRPCRoutes: []route.GRPCRoute{{Backend: "api_b_9000", AuthorityHost: "api.b.svc.example.com", AuthorityPort: 9000, Service: "pkg.Api/*", RequiredPermissions: []string{"api:read"}}},
		Backends:   []backend.Spec{{Name: "api_b_9000", Protocol: backend.GRPC, Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "api.b:grpc"}, TLS: backend.TLS{Enabled: true, InsecureSkipVerify: true}}},
	}
	merged, rejected := Merge(file, Check([]Generated{service("echo", "a", "echo.a.svc.example.com"), grpcSvc}))
	if len(rejected) != 0 {
		t.Fatalf("rejected: %+v", rejected)
	}
	var hosts []string
	for _, r := range merged.HTTPRoutes {
		hosts = append(hosts, r.Host)
	}
	if want := []string{"web.example.com", "echo.a.svc.example.com"}; !slices.Equal(hosts, want) {
		t.Errorf("HTTP route hosts = %q, want file routes first: %q", hosts, want)
	}
	if merged.HTTPRoutes[0].Discovered || !merged.HTTPRoutes[1].Discovered || !merged.GRPCRoutes[0].Discovered {
		t.Errorf("Discovered marks wrong: %+v %+v", merged.HTTPRoutes, merged.GRPCRoutes)
	}
	var names []string
	for _, b := range merged.Backends {
		names = append(names, b.Name)
		if b.Discovered != strings.Contains(b.Name, "_") {
			t.Errorf("backend %q Discovered = %v", b.Name, b.Discovered)
		}
	}
	if want := []string{"web", "api", "echo_a_8080", "api_b_9000"}; !slices.Equal(names, want) {
		t.Errorf("backends = %q, want %q", names, want)
	}
	if got := merged.GRPCRoutes[0].RequiredPermissions; !slices.Equal(got, []string{"api:read"}) {
		t.Errorf("permissions = %q", got)
	}
	// The merged config compiles into routing tables, and the file config is untouched.
	if _, err := route.NewHTTPTable(merged.HTTPRoutes, merged.HTTPAdhoc); err != nil {
		t.Error(err)
	}
	if len(file.HTTPRoutes) != 1 || len(file.Backends) != 2 {
		t.Errorf("Merge modified the file config: %+v", file)
	}
}

func TestMergeRejectsBadServicesOnly(t *testing.T) {
	t.Parallel()
	longName := strings.Repeat("a", 60)
	badHost := service("bad-host", "a", "bad host.example.com")
	noBackend := service("orphan", "a", "orphan.a.svc.example.com")
	noBackend.Backends = nil
	badPerm := service("perm", "a", "perm.a.svc.example.com")
	badPerm.HTTPRoutes[0].RequiredPermissions = []string{"ok", "not ok"}
	fileName := service("web", "a", "x.example.com")
	fileName.Backends[0].Name, fileName.HTTPRoutes[0].Backend = "web", "web"

	tests := []struct {
		name       string
		gen        Generated
		wantFields []string
		wantReason string
	}{
		{"backend name too long", service(longName, "a", "long.a.svc.example.com"), []string{"http.backends[0].name"}, "^[a-z_0-9.]{2,64}$"},
		{"host with space", badHost, []string{"http.routes[0].host_matcher"}, "spaces"},
		{"route without backend", noBackend, []string{"http.routes[0].backend_name"}, "names no http backend"},
		{"bad permission", badPerm, []string{"http.routes[0].required_permissions[1]"}, "spaces"},
		{"name of a file backend", fileName, []string{"http.backends[0].name"}, "backendpool config"},
		{"duplicate host", service("other", "b", "echo.a.svc.example.com"), []string{"http.routes[0].host_matcher"}, "duplicate host matcher"},
		{"duplicate backend name", service("echo", "a", "echo2.a.svc.example.com"), []string{"http.backends[0].name", "http.routes[0].host_matcher"}, "generated for service a/echo"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			good := service("echo", "a", "echo.a.svc.example.com")
			after := service("late", "c", "late.c.svc.example.com")
			merged, rejected := Merge(fileConfig(t), Check([]Generated{good, tt.gen, after}))
			if len(rejected) != 1 || rejected[0].Source != tt.gen.Source {
				t.Fatalf("rejected = %+v, want only %s", rejected, tt.gen.Source)
			}
			var fields []string
			for _, fe := range FieldErrors(rejected[0].Err) {
				if fe.File != tt.gen.Source {
					t.Errorf("error names file %q, want %q", fe.File, tt.gen.Source)
				}
				fields = append(fields, fe.Field)
			}
			if tt.name == "duplicate backend name" {
				// The same Service generated twice collides on both the backend and the host.
				fields = fields[:1]
				tt.wantFields = tt.wantFields[:1]
			}
			if !slices.Equal(fields, tt.wantFields) {
				t.Errorf("fields = %q, want %q (%v)", fields, tt.wantFields, rejected[0].Err)
			}
			if !strings.Contains(rejected[0].Err.Error(), tt.wantReason) {
				t.Errorf("error %q does not contain %q", rejected[0].Err, tt.wantReason)
			}
			// The other Services are merged.
			if n := len(merged.HTTPRoutes); n != 3 {
				t.Errorf("%d HTTP routes, want the file route and two generated ones", n)
			}
		})
	}
}

func TestDocumentsRoundTrip(t *testing.T) {
	t.Parallel()
	gen := Generated{
		Source: "service a/echo",
		HTTPRoutes: []route.HTTPRoute{{Backend: "echo_a_8080", Host: "echo.a.svc.example.com", Port: 80, Mode: route.ModeReverse,
			Paths: []string{"/api/*"}, Headers: map[string]string{"X-Env": "prod"}, RequiredPermissions: []string{"echo:use"},
			AllowedIdentities: []string{"ci.example.com"}}},
		GRPCRoutes: []route.GRPCRoute{{Backend: "echo_a_9090", AuthorityHost: "echo.a.svc.example.com", AuthorityPort: 9090, Service: "pkg.Echo/*",
			Metadata: map[string]string{"env": "prod"}}},
		Backends: []backend.Spec{
			{Name: "echo_a_8080", Protocol: backend.HTTP, Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "echo.a:http"}},
			{Name: "echo_a_9090", Protocol: backend.GRPC, Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "echo.a:grpctls"},
				TLS: backend.TLS{Enabled: true, InsecureSkipVerify: true}},
		},
	}
	file := fileConfig(t)
	file.HTTPAdhoc = []route.Adhoc{{NamePattern: "*.pods.cluster.local", DefaultPort: 8080, AllowedPorts: []uint32{8080},
		AllowedRanges: []route.PortRange{{From: 9000, To: 9100}}, Replace: &route.NameReplace{Pattern: "-", Substitution: "."},
		RequiredPermissions: []string{"adhoc"}}}
	file.HTTPRoutes[0].PathCaseInsensitive, file.HTTPRoutes[0].AllowEncodedSlashes = true, true
	merged, rejected := Merge(file, Check([]Generated{gen}))
	if len(rejected) > 0 {
		t.Fatal(rejected[0].Err)
	}
	merged.Warnings = nil
	dir, pool, err := Documents(merged)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(pool), `"autogenerated": true`) || !strings.Contains(string(dir), `"host_matcher": "echo.a.svc.example.com"`) {
		t.Errorf("documents lack snake_case fields or marks:\n%s\n%s", dir, pool)
	}
	back, err := Parse(dir, pool, "director.json", "backendpool.json")
	if err != nil {
		t.Fatalf("the rendered documents do not parse: %v\n%s\n%s", err, dir, pool)
	}
	back.Warnings = nil
	// Documents hold HTTP and gRPC backends apart, so they come back grouped by protocol.
	byProtocol := func(a, b backend.Spec) int { return int(a.Protocol) - int(b.Protocol) }
	slices.SortStableFunc(merged.Backends, byProtocol)
	if !reflect.DeepEqual(back, merged) {
		t.Errorf("round trip changed the config:\n got %+v\nwant %+v", back, merged)
	}
}

// TestMergeNothingDiscovered checks the path of a file reload without discovery: the file config comes through as
// it is, and Merge does not share its slices with it.
func TestMergeNothingDiscovered(t *testing.T) {
	t.Parallel()
	file := fileConfig(t)
	merged, rejected := Merge(file, nil)
	if len(rejected) != 0 || !reflect.DeepEqual(merged, file) {
		t.Fatalf("Merge(file, nil) = %+v, %+v; want the file config", merged, rejected)
	}
	merged.HTTPRoutes[0].Host = "changed.example.com"
	if file.HTTPRoutes[0].Host != "web.example.com" {
		t.Error("Merge returned the file config's own slices")
	}
}

// TestMergeRechecksConflictsPerFile checks that a Service checked once is merged again with each file config: a
// file reload that takes its backend name rejects it, naming the Service and the field, and the next reload that
// frees the name brings it back.
func TestMergeRechecksConflictsPerFile(t *testing.T) {
	t.Parallel()
	found := Check([]Generated{service("echo", "a", "echo.a.svc.example.com")})
	clash, err := Parse(nil, []byte(`{"http": {"backends": [{"name": "echo_a_8080", "host": {"dns_name": "h", "port": 80}}]}}`), "d", "backendpool.json")
	if err != nil {
		t.Fatal(err)
	}
	for i, file := range []*Dynamic{fileConfig(t), clash, fileConfig(t)} {
		merged, rejected := Merge(file, found)
		wantRejected := file == clash
		if got := len(rejected) == 1; got != wantRejected {
			t.Fatalf("file %d: rejected = %+v, want rejected %v", i, rejected, wantRejected)
		}
		if wantRejected {
			fes := FieldErrors(rejected[0].Err)
			if len(fes) != 1 || fes[0].File != "service a/echo" || fes[0].Field != "http.backends[0].name" ||
				!strings.Contains(fes[0].Reason, "backendpool config") {
				t.Errorf("file %d: error %v, want one naming service a/echo, http.backends[0].name and the backendpool", i, rejected[0].Err)
			}
			continue
		}
		if n := len(merged.HTTPRoutes); n != 2 {
			t.Errorf("file %d: %d HTTP routes, want the file's and the Service's", i, n)
		}
	}
}

// TestCheckKeepsWarnings checks that the warnings Check finds in a Service reach the merged config, once.
func TestCheckKeepsWarnings(t *testing.T) {
	t.Parallel()
	svc := service("echo", "a", "echo.a.svc.example.com")
	svc.HTTPRoutes[0].RequiredPermissions = []string{"echo:use", "echo:use"}
	found := Check([]Generated{svc})
	for range 2 {
		merged, rejected := Merge(fileConfig(t), found)
		if len(rejected) != 0 {
			t.Fatal(rejected[0].Err)
		}
		var mine []string
		for _, w := range merged.Warnings {
			if strings.HasPrefix(w, "service a/echo: ") {
				mine = append(mine, w)
			}
		}
		if len(mine) != 1 {
			t.Errorf("warnings of the Service = %q, want one", mine)
		}
	}
}
