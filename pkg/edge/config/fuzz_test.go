package config

import (
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
)

// FuzzParse checks that Parse never panics and that whatever it accepts is consistent: every route names a backend
// of its own protocol.
func FuzzParse(f *testing.F) {
	pairs := [][2]string{
		{"seed_director.json", "seed_backendpool.json"},
		{"director.yaml", "backendpool.json"},
	}
	for _, p := range pairs {
		f.Add(readTestdata(f, p[0]), readTestdata(f, p[1]))
	}
	f.Add([]byte(httpRoute(`, "host_matcher": "*.a.com", "header_matcher": {"x-a": "1"}`)), []byte(basePool))
	f.Add([]byte("grpc:\n  routes:\n  - backend_name: api\n    authority_matcher: a\n"), []byte(basePool))
	f.Add([]byte(`{"http": {"routes": [}`), []byte("y: [1"))
	f.Fuzz(func(t *testing.T, director, pool []byte) {
		dyn, err := Parse(director, pool, "d", "b")
		if err != nil {
			if dyn != nil {
				t.Fatalf("Parse returned both a config and %v", err)
			}
			if len(FieldErrors(err)) == 0 {
				t.Fatalf("Parse error without a FieldError: %v", err)
			}
			return
		}
		names := map[backend.Protocol]map[string]bool{backend.HTTP: {}, backend.GRPC: {}}
		for _, b := range dyn.Backends {
			names[b.Protocol][b.Name] = true
		}
		for i, r := range dyn.HTTPRoutes {
			if !names[backend.HTTP][r.Backend] {
				t.Errorf("http route %d names unknown backend %q", i, r.Backend)
			}
		}
		for i, r := range dyn.GRPCRoutes {
			if !names[backend.GRPC][r.Backend] {
				t.Errorf("grpc route %d names unknown backend %q", i, r.Backend)
			}
		}
	})
}
