package discovery

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

func TestPortConventions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		ok       bool
		protocol backend.Protocol
		tls      bool
	}{
		{"http", true, backend.HTTP, false},
		{"http-web", true, backend.HTTP, false},
		{"httptls", true, backend.HTTP, true},
		{"httptls-admin", true, backend.HTTP, true},
		{"grpc", true, backend.GRPC, false},
		{"grpc-api", true, backend.GRPC, false},
		{"grpctls", true, backend.GRPC, true},
		{"grpctls-api", true, backend.GRPC, true},
		{"https", false, 0, false},
		{"httpx", false, 0, false},
		{"grpcweb", false, 0, false},
		{"metrics", false, 0, false},
		{"", false, 0, false},
	}
	for _, tt := range tests {
		p, tls, ok := portKind(tt.name)
		if ok != tt.ok || ok && (p != tt.protocol || tls != tt.tls) {
			t.Errorf("portKind(%q) = %v, %v, %v; want %v, %v, %v", tt.name, p, tls, ok, tt.protocol, tt.tls, tt.ok)
		}
	}
}

func TestGenerate(t *testing.T) {
	t.Parallel()
	opts := Options{LabelPrefix: "kedge.com/", DomainSuffix: "cluster-a.example.com"}
	k8s := func(target string) backend.Resolver {
		return backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: target}
	}
	insecure := backend.TLS{Enabled: true, InsecureSkipVerify: true}
	host := "echo.shop.svc.cluster-a.example.com"
	tests := []struct {
		name     string
		svc      *corev1.Service
		http     []route.HTTPRoute
		grpc     []route.GRPCRoute
		backends []backend.Spec
		wantErr  string
	}{
		{
			name: "every convention, other ports ignored",
			svc: service("echo", "shop", exposedLabels, nil, "http=80:8080", "http-alt=81:web-alt", "httptls=443:8443",
				"grpc=9000", "grpctls-api=9443:9443", "metrics=9090", "=7000"),
			http: []route.HTTPRoute{
				{Backend: "echo_shop_8080", Host: host, Port: 80, Mode: route.ModeReverse, Discovered: true},
				{Backend: "echo_shop_web_alt", Host: host, Port: 81, Mode: route.ModeReverse, Discovered: true},
				{Backend: "echo_shop_8443", Host: host, Port: 443, Mode: route.ModeReverse, Discovered: true},
			},
			grpc: []route.GRPCRoute{
				{Backend: "echo_shop_9000", AuthorityHost: host, AuthorityPort: 9000, Discovered: true},
				{Backend: "echo_shop_9443", AuthorityHost: host, AuthorityPort: 9443, Discovered: true},
			},
			backends: []backend.Spec{
				{Name: "echo_shop_8080", Protocol: backend.HTTP, Resolver: k8s("echo.shop:http"), Discovered: true},
				{Name: "echo_shop_web_alt", Protocol: backend.HTTP, Resolver: k8s("echo.shop:http-alt"), Discovered: true},
				{Name: "echo_shop_8443", Protocol: backend.HTTP, Resolver: k8s("echo.shop:httptls"), TLS: insecure, Discovered: true},
				{Name: "echo_shop_9000", Protocol: backend.GRPC, Resolver: k8s("echo.shop:grpc"), Discovered: true},
				{Name: "echo_shop_9443", Protocol: backend.GRPC, Resolver: k8s("echo.shop:grpctls-api"), TLS: insecure, Discovered: true},
			},
		},
		{
			name: "annotations override matchers and add permissions",
			svc: service("my-api", "team-b", exposedLabels, map[string]string{
				"kedge.com/host-matcher":         "API.Example.com",
				"kedge.com/service-name-matcher": "pkg.Api/*",
				"kedge.com/required-permissions": " api:read, ,api:admin ",
			}, "http=80:8080", "grpc=9000:9000"),
			http: []route.HTTPRoute{{Backend: "my_api_team_b_8080", Host: "api.example.com", Port: 80, Mode: route.ModeReverse,
				Discovered: true, RequiredPermissions: []string{"api:read", "api:admin"}}},
			grpc: []route.GRPCRoute{{Backend: "my_api_team_b_9000", AuthorityHost: "api.example.com", AuthorityPort: 9000,
				Service: "pkg.Api/*", Discovered: true, RequiredPermissions: []string{"api:read", "api:admin"}}},
			backends: []backend.Spec{
				{Name: "my_api_team_b_8080", Protocol: backend.HTTP, Resolver: k8s("my-api.team-b:http"), Discovered: true},
				{Name: "my_api_team_b_9000", Protocol: backend.GRPC, Resolver: k8s("my-api.team-b:grpc"), Discovered: true},
			},
		},
		{
			name: "ports sharing a target port share the backend",
			svc:  service("echo", "shop", exposedLabels, nil, "http=80:8080", "http-alt=8080"),
			http: []route.HTTPRoute{
				{Backend: "echo_shop_8080", Host: host, Port: 80, Mode: route.ModeReverse, Discovered: true},
				{Backend: "echo_shop_8080", Host: host, Port: 8080, Mode: route.ModeReverse, Discovered: true},
			},
			backends: []backend.Spec{{Name: "echo_shop_8080", Protocol: backend.HTTP, Resolver: k8s("echo.shop:http"), Discovered: true}},
		},
		{
			name:     "an annotation of another prefix is ignored",
			svc:      service("echo", "shop", exposedLabels, map[string]string{"other.io/host-matcher": "x.example.com"}, "http=80"),
			http:     []route.HTTPRoute{{Backend: "echo_shop_80", Host: host, Port: 80, Mode: route.ModeReverse, Discovered: true}},
			backends: []backend.Spec{{Name: "echo_shop_80", Protocol: backend.HTTP, Resolver: k8s("echo.shop:http"), Discovered: true}},
		},
		{
			name:    "no usable port",
			svc:     service("echo", "shop", exposedLabels, nil, "web=80", "metrics=9090"),
			wantErr: "service shop/echo: no TCP port is named http, http-*, httptls, httptls-*, grpc, grpc-*, grpctls or grpctls-* (ports: web/TCP, metrics/TCP)",
		},
		{
			name: "UDP port with a convention name",
			svc: func() *corev1.Service {
				s := service("dns", "kube-system", exposedLabels, nil, "grpc=53")
				s.Spec.Ports[0].Protocol = corev1.ProtocolUDP
				return s
			}(),
			wantErr: "ports: grpc/UDP",
		},
		{
			name:    "TLS and plain on one target port",
			svc:     service("echo", "shop", exposedLabels, nil, "http=80:8080", "httptls=443:8080"),
			wantErr: `ports "http" and "httptls" share target port 8080`,
		},
		{
			name: "ExternalName",
			svc: func() *corev1.Service {
				s := service("ext", "shop", exposedLabels, nil, "http=80")
				s.Spec.Type = corev1.ServiceTypeExternalName
				return s
			}(),
			wantErr: "ExternalName",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g, err := generate(tt.svc, opts)
			if g.Source != "service "+tt.svc.Namespace+"/"+tt.svc.Name {
				t.Errorf("Source = %q", g.Source)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("generate = %+v, %v; want an error with %q", g, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(g.HTTPRoutes, tt.http, httpRouteEqual) {
				t.Errorf("HTTP routes:\n got %+v\nwant %+v", g.HTTPRoutes, tt.http)
			}
			if !slices.EqualFunc(g.GRPCRoutes, tt.grpc, grpcRouteEqual) {
				t.Errorf("gRPC routes:\n got %+v\nwant %+v", g.GRPCRoutes, tt.grpc)
			}
			if !slices.Equal(g.Backends, tt.backends) {
				t.Errorf("backends:\n got %+v\nwant %+v", g.Backends, tt.backends)
			}
		})
	}
}

func httpRouteEqual(a, b route.HTTPRoute) bool {
	return a.Backend == b.Backend && a.Host == b.Host && a.Port == b.Port && a.Mode == b.Mode &&
		a.Discovered == b.Discovered && slices.Equal(a.RequiredPermissions, b.RequiredPermissions) &&
		len(a.Paths) == 0 && len(a.Headers) == 0
}

func grpcRouteEqual(a, b route.GRPCRoute) bool {
	return a.Backend == b.Backend && a.AuthorityHost == b.AuthorityHost && a.AuthorityPort == b.AuthorityPort &&
		a.Service == b.Service && a.Discovered == b.Discovered && slices.Equal(a.RequiredPermissions, b.RequiredPermissions) &&
		len(a.Metadata) == 0
}

func TestExposedNeedsTrue(t *testing.T) {
	t.Parallel()
	for value, want := range map[string]bool{"true": true, "false": false, "": false, "yes": false} {
		svc := service("echo", "shop", map[string]string{"kedge.com/kedge-exposed": value}, nil, "http=80")
		if got := exposed(svc, "kedge.com/"); got != want {
			t.Errorf("label value %q: exposed = %v, want %v", value, got, want)
		}
	}
	if exposed(service("echo", "shop", exposedLabels, nil), "edge.example.org/") {
		t.Error("a Service labelled with another prefix is exposed")
	}
}
