package edge

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

func fileDoc(t *testing.T, host string) *config.Dynamic {
	t.Helper()
	dyn, err := config.Parse([]byte(`{"http": {"routes": [{"backend_name": "web", "host_matcher": "`+host+`"}]}}`),
		[]byte(`{"http": {"backends": [{"name": "web", "host": {"dns_name": "127.0.0.1", "port": 80}}]}}`), "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	return dyn
}

func discovered(host string) []config.Generated {
	return []config.Generated{{
		Source:     "service shop/echo",
		HTTPRoutes: []route.HTTPRoute{{Backend: "echo_shop_80", Host: host, Port: 80, Mode: route.ModeReverse}},
		Backends: []backend.Spec{{Name: "echo_shop_80", Protocol: backend.HTTP,
			Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "echo.shop:http"}}},
	}}
}

func hostsOf(d *config.Dynamic) []string {
	var out []string
	for _, r := range d.HTTPRoutes {
		out = append(out, r.Host)
	}
	return out
}

// fixedK8s makes k8s sources with one fixed endpoint; it refuses the Service "broken".
type fixedK8s struct{}

func (fixedK8s) Source(spec backend.Spec) (backend.EndpointSource, error) {
	if strings.HasPrefix(spec.Resolver.K8sTarget, "broken.") {
		return nil, errors.New("no such Service")
	}
	return fixedSource{}, nil
}

type fixedSource struct{}

func (fixedSource) Run(ctx context.Context, publish func([]string)) {
	publish([]string{"127.0.0.1:1"})
	<-ctx.Done()
}

// stateServer is the part of a Server that config changes go through: no Kubernetes part at all (s.kube is nil),
// so a file reload that reached for it would panic.
func stateServer(t *testing.T, file *config.Dynamic) *Server {
	t.Helper()
	s := &Server{log: logging.Discard(), pool: backend.NewPool(backend.Deps{K8s: fixedK8s{}})}
	t.Cleanup(s.pool.Close)
	var err error
	if s.state, err = newState(file, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.pool.Update(file.Backends); err != nil {
		t.Fatal(err)
	}
	return s
}

func backendNames(s *Server) []string {
	var out []string
	for _, st := range s.pool.Snapshot() {
		out = append(out, st.Name)
	}
	slices.Sort(out)
	return out
}

// TestFileReloadWithoutCluster checks the straight path of a reload without Kubernetes: the file config is swapped in
// as it is, routes and backends together.
func TestFileReloadWithoutCluster(t *testing.T) {
	s := stateServer(t, fileDoc(t, "a.example.com"))
	next, err := config.Parse([]byte(`{"http": {"routes": [{"backend_name": "web2", "host_matcher": "b.example.com"}]}}`),
		[]byte(`{"http": {"backends": [{"name": "web2", "host": {"dns_name": "127.0.0.1", "port": 81}}]}}`), "d", "b")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.applyFile(next); err != nil {
		t.Fatal(err)
	}
	if got := hostsOf(s.state.current.Load().dyn); !slices.Equal(got, []string{"b.example.com"}) {
		t.Errorf("hosts %q, want the reloaded file's", got)
	}
	if got := backendNames(s); !slices.Equal(got, []string{"web2"}) {
		t.Errorf("backends %q, want the removed one drained and the new one in", got)
	}
}

// TestStateMergesFileAndDiscovered checks that file reloads and discovery each apply the latest of the other, file
// routes first, and that a failed apply changes nothing.
func TestStateMergesFileAndDiscovered(t *testing.T) {
	s := stateServer(t, fileDoc(t, "a.example.com"))
	applied := func() []string { return hostsOf(s.state.current.Load().dyn) }
	discover := func(host string) error { _, err := s.applyDiscovered(discovered(host)); return err }
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"discovered", func() error { return discover("echo.example.com") }, []string{"a.example.com", "echo.example.com"}},
		{"file reload keeps discovered", func() error { return s.applyFile(fileDoc(t, "b.example.com")) }, []string{"b.example.com", "echo.example.com"}},
		{"discovery keeps the reloaded file", func() error { return discover("echo2.example.com") }, []string{"b.example.com", "echo2.example.com"}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := applied(); !slices.Equal(got, st.want) {
			t.Errorf("%s: hosts %q, want %q", st.name, got, st.want)
		}
	}

	// The pool refuses a backend: neither kind of apply changes anything, and the next one builds on what is in
	// force, not on what was refused.
	broken := fileDoc(t, "c.example.com")
	broken.Backends[0].Resolver = backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "broken.x:http"}
	if err := s.applyFile(broken); err == nil {
		t.Fatal("a refused file config was not reported")
	}
	gens := discovered("echo3.example.com")
	gens[0].Backends[0].Resolver.K8sTarget = "broken.shop:http"
	if _, err := s.applyDiscovered(gens); err == nil {
		t.Fatal("a refused discovered config was not reported")
	}
	if got, want := applied(), []string{"b.example.com", "echo2.example.com"}; !slices.Equal(got, want) {
		t.Errorf("after refused applies: hosts %q, want %q", got, want)
	}
	if err := discover("echo4.example.com"); err != nil {
		t.Fatal(err)
	}
	if got, want := applied(), []string{"b.example.com", "echo4.example.com"}; !slices.Equal(got, want) {
		t.Errorf("after refused applies: hosts %q, want the last applied file with the new discovery %q", got, want)
	}

	// A discovered backend named like a file backend is rejected, naming the Service; the rest is applied.
	gens = discovered("web2.example.com")
	gens[0].Backends[0].Name, gens[0].HTTPRoutes[0].Backend = "web", "web"
	rejected, err := s.applyDiscovered(gens)
	if err != nil || len(rejected) != 1 || rejected[0].Source != "service shop/echo" {
		t.Errorf("rejected = %+v, %v", rejected, err)
	}
	if got, want := applied(), []string{"b.example.com"}; !slices.Equal(got, want) {
		t.Errorf("hosts %q, want %q", got, want)
	}
}

func TestKubeWithoutAPI(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	cfg := config.K8sConfig{CAFile: config.DefaultServiceAccountCAFile, TokenFile: config.DefaultServiceAccountTokenFile}
	k, err := newKube(cfg, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.sourceFactory().Source(backend.Spec{Name: "x", Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "x"}})
	if err == nil || !strings.Contains(err.Error(), "not running in a pod") {
		t.Errorf("k8s source without an API: %v", err)
	}
	if err := k.ready(); err != nil {
		t.Errorf("ready: %v", err)
	}
	if err := k.run(t.Context(), nil); err != nil {
		t.Errorf("run: %v", err)
	}

	cfg.DynamicRoutings, cfg.ExternalDomainSuffix = true, "example.com"
	if _, err := newKube(cfg, logging.Discard(), nil); err == nil || !strings.Contains(err.Error(), "no Kubernetes API") {
		t.Errorf("discovery without an API: %v", err)
	}
}
