package edge

import (
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

// TestKubeMergesFileAndDiscovered checks that file reloads and discovery each apply the latest of the other, file
// routes first, and that a failed apply changes nothing.
func TestKubeMergesFileAndDiscovered(t *testing.T) {
	k := &kube{log: logging.Discard()}
	var applied *config.Dynamic
	var fail error
	applyFile := k.fileApplier(fileDoc(t, "a.example.com"), func(d *config.Dynamic) error {
		if fail != nil {
			return fail
		}
		applied = d
		return nil
	})
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"discovered", func() error { _, err := k.applyDiscovered(discovered("echo.example.com")); return err }, []string{"a.example.com", "echo.example.com"}},
		{"file reload keeps discovered", func() error { return applyFile(fileDoc(t, "b.example.com")) }, []string{"b.example.com", "echo.example.com"}},
		{"discovery keeps the reloaded file", func() error { _, err := k.applyDiscovered(discovered("echo2.example.com")); return err }, []string{"b.example.com", "echo2.example.com"}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := hostsOf(applied); !slices.Equal(got, s.want) {
			t.Errorf("%s: hosts %q, want %q", s.name, got, s.want)
		}
	}

	fail = errors.New("refused")
	if err := applyFile(fileDoc(t, "c.example.com")); err == nil {
		t.Fatal("a failed apply was not reported")
	}
	if _, err := k.applyDiscovered(discovered("echo3.example.com")); err == nil {
		t.Fatal("a failed discovered apply was not reported")
	}
	fail = nil
	if _, err := k.applyDiscovered(nil); err != nil {
		t.Fatal(err)
	}
	if got := hostsOf(applied); !slices.Equal(got, []string{"b.example.com"}) {
		t.Errorf("after failed applies: hosts %q, want the last applied file only", got)
	}

	// A discovered backend named like a file backend is rejected, the rest applied.
	gens := discovered("web2.example.com")
	gens[0].Backends[0].Name, gens[0].HTTPRoutes[0].Backend = "web", "web"
	rejected, err := k.applyDiscovered(gens)
	if err != nil || len(rejected) != 1 || rejected[0].Source != "service shop/echo" {
		t.Errorf("rejected = %+v, %v", rejected, err)
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
	if err := k.run(t.Context()); err != nil {
		t.Errorf("run: %v", err)
	}

	cfg.DynamicRoutings, cfg.ExternalDomainSuffix = true, "example.com"
	if _, err := newKube(cfg, logging.Discard(), nil); err == nil || !strings.Contains(err.Error(), "no Kubernetes API") {
		t.Errorf("discovery without an API: %v", err)
	}
}
