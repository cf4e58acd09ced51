package discovery

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestEndpointsOf(t *testing.T) {
	t.Parallel()
	http := []string{"http=8080"}
	tests := []struct {
		name    string
		target  string
		slices  []*discoveryv1.EndpointSlice
		want    []string
		wantErr string
	}{
		{"no slices", "echo:http", nil, nil, ""},
		// The EndpointSlice controller replaces the slices of a Service without pods (scaled to zero) by a placeholder
		// without ports: the Service has no endpoints, which is not an unknown port.
		{"placeholder slice of a Service without pods", "echo:http", []*discoveryv1.EndpointSlice{
			slice("a", "echo", "default", nil)}, nil, ""},
		{"placeholder slice next to a slice with endpoints", "echo:http", []*discoveryv1.EndpointSlice{
			slice("a", "echo", "default", nil), slice("b", "echo", "default", http, readyEP("10.0.0.1"))},
			[]string{"10.0.0.1:8080"}, ""},
		{"placeholder slice, no port named", "echo", []*discoveryv1.EndpointSlice{
			slice("a", "echo", "default", nil), slice("b", "echo", "default", http, readyEP("10.0.0.1"))},
			[]string{"10.0.0.1:8080"}, ""},
		{"ready only", "echo:http", []*discoveryv1.EndpointSlice{slice("a", "echo", "default", http,
			readyEP("10.0.0.1"), notReadyEP("10.0.0.2"), terminatingEP("10.0.0.3", true))}, []string{"10.0.0.1:8080"}, ""},
		{"unknown readiness counts as ready", "echo:http", []*discoveryv1.EndpointSlice{slice("a", "echo", "default", http,
			ep{ip: "10.0.0.1"})}, []string{"10.0.0.1:8080"}, ""},
		{"serving terminating when none ready", "echo:http", []*discoveryv1.EndpointSlice{slice("a", "echo", "default", http,
			notReadyEP("10.0.0.2"), terminatingEP("10.0.0.3", true), terminatingEP("10.0.0.4", false))}, []string{"10.0.0.3:8080"}, ""},
		{"terminating ignored while one is ready elsewhere", "echo:http", []*discoveryv1.EndpointSlice{
			slice("a", "echo", "default", http, terminatingEP("10.0.0.3", true)),
			slice("b", "echo", "default", http, readyEP("10.0.0.5"))}, []string{"10.0.0.5:8080"}, ""},
		{"slices merged, each with its own port number", "echo:http", []*discoveryv1.EndpointSlice{
			slice("a", "echo", "default", []string{"http=8080"}, readyEP("10.0.0.1")),
			slice("b", "echo", "default", []string{"http=9090"}, readyEP("10.0.0.2"))}, []string{"10.0.0.1:8080", "10.0.0.2:9090"}, ""},
		{"named port among several", "echo:grpc", []*discoveryv1.EndpointSlice{slice("a", "echo", "default",
			[]string{"http=8080", "grpc=9000"}, readyEP("10.0.0.1"))}, []string{"10.0.0.1:9000"}, ""},
		{"numbered port among several", "echo:9000", []*discoveryv1.EndpointSlice{slice("a", "echo", "default",
			[]string{"http=8080", "grpc=9000"}, readyEP("10.0.0.1"))}, []string{"10.0.0.1:9000"}, ""},
		{"no port and a single one", "echo", []*discoveryv1.EndpointSlice{slice("a", "echo", "default",
			[]string{"=8080"}, readyEP("10.0.0.1"))}, []string{"10.0.0.1:8080"}, ""},
		{"no port and UDP ignored", "echo", []*discoveryv1.EndpointSlice{slice("a", "echo", "default",
			[]string{"dns=53/UDP", "web=8080"}, readyEP("10.0.0.1"))}, []string{"10.0.0.1:8080"}, ""},
		{"no port but several", "echo", []*discoveryv1.EndpointSlice{slice("a", "echo", "default",
			[]string{"http=8080", "grpc=9000"}, readyEP("10.0.0.1"))}, nil, `several ports ("grpc", "http")`},
		{"no port but slices disagree", "echo", []*discoveryv1.EndpointSlice{
			slice("a", "echo", "default", []string{"http=8080"}, readyEP("10.0.0.1")),
			slice("b", "echo", "default", []string{"web=8080"}, readyEP("10.0.0.2"))}, nil, "several ports"},
		{"unknown port name", "echo:metrics", []*discoveryv1.EndpointSlice{slice("a", "echo", "default", http,
			readyEP("10.0.0.1"))}, nil, `no TCP port "metrics"`},
		{"UDP port of that name", "echo:dns", []*discoveryv1.EndpointSlice{slice("a", "echo", "default", []string{"dns=53/UDP"},
			readyEP("10.0.0.1"))}, nil, `no TCP port "dns"`},
		{"unknown port number", "echo:81", []*discoveryv1.EndpointSlice{slice("a", "echo", "default", http,
			readyEP("10.0.0.1"))}, nil, "no TCP port 81"},
		{"IPv6", "echo:http", []*discoveryv1.EndpointSlice{slice("a", "echo", "default", http, readyEP("fd00::1"))}, []string{"[fd00::1]:8080"}, ""},
		{"FQDN slices ignored", "echo:http", []*discoveryv1.EndpointSlice{func() *discoveryv1.EndpointSlice {
			s := slice("a", "echo", "default", http, readyEP("db.example.com"))
			s.AddressType = discoveryv1.AddressTypeFQDN
			return s
		}()}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			target, err := config.ParseK8sTarget(tt.target)
			if err != nil {
				t.Fatal(err)
			}
			got, err := endpointsOf(tt.slices, target)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("endpointsOf = %q, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("endpoints = %q, want %q", got, tt.want)
			}
		})
	}
}

// publisher records what a source publishes.
type publisher struct {
	mu   sync.Mutex
	sets [][]string
}

func (p *publisher) publish(eps []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sets = append(p.sets, slices.Clone(eps))
}

// last returns the last published set and whether there was one.
func (p *publisher) last() ([]string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sets) == 0 {
		return nil, false
	}
	return p.sets[len(p.sets)-1], true
}

// runSource runs the k8s source of target for backend name until the test ends.
func runSource(t *testing.T, c *Cluster, name, target string) *publisher {
	t.Helper()
	src, err := c.Source(backend.Spec{Name: name, Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: target}})
	if err != nil {
		t.Fatal(err)
	}
	p := &publisher{}
	runInBackground(t, func(ctx context.Context) error { src.Run(ctx, p.publish); return nil })
	return p
}

// waitEndpoints waits (at most a second: the promised latency) until p's last set is want.
func waitEndpoints(t *testing.T, p *publisher, want ...string) {
	t.Helper()
	sharedtest.EventuallyWithin(t, time.Second, "endpoints "+strings.Join(want, ","), func() bool {
		got, ok := p.last()
		return ok && slices.Equal(got, want)
	})
}

func TestSourceFollowsEndpointSlices(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	cs := fakeClientset(slice("echo-a", "echo", "shop", []string{"http=8080"}, readyEP("10.0.0.1")),
		slice("other", "other", "shop", []string{"http=8080"}, readyEP("10.9.9.9")))
	c := NewCluster(cs, ClusterOptions{}, logging.Discard(), reg)
	p := runSource(t, c, "echo_shop_8080", "echo.shop:http")
	runInBackground(t, c.Run)
	ctx := t.Context()
	slicesAPI := cs.DiscoveryV1().EndpointSlices("shop")

	waitEndpoints(t, p, "10.0.0.1:8080")
	sharedtest.EventuallyWithin(t, time.Second, "ready", func() bool { return c.Ready() == nil })
	if got := testutil.ToFloat64(c.metrics.endpoints.WithLabelValues("echo_shop_8080")); got != 1 {
		t.Errorf("kedge_k8s_endpoints = %v, want 1", got)
	}

	// An endpoint is added, in a second slice.
	if _, err := slicesAPI.Create(ctx, slice("echo-b", "echo", "shop", []string{"http=8080"}, readyEP("10.0.0.2")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, p, "10.0.0.1:8080", "10.0.0.2:8080")

	// One becomes not ready; the other starts terminating while still serving: the only candidate left.
	if _, err := slicesAPI.Update(ctx, slice("echo-a", "echo", "shop", []string{"http=8080"}, notReadyEP("10.0.0.1")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, p, "10.0.0.2:8080")
	if _, err := slicesAPI.Update(ctx, slice("echo-b", "echo", "shop", []string{"http=8080"}, terminatingEP("10.0.0.2", true)), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, p, "10.0.0.2:8080") // still there: nothing else serves
	if _, err := slicesAPI.Update(ctx, slice("echo-a", "echo", "shop", []string{"http=8080"}, readyEP("10.0.0.3")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, p, "10.0.0.3:8080")

	// The terminating slice goes; then the port is renamed: an error that keeps the last endpoints and is counted.
	if err := slicesAPI.Delete(ctx, "echo-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, p, "10.0.0.3:8080")
	if _, err := slicesAPI.Update(ctx, slice("echo-a", "echo", "shop", []string{"web=8080"}, readyEP("10.0.0.4")), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sharedtest.EventuallyWithin(t, time.Second, "a resolver error", func() bool {
		return testutil.ToFloat64(c.metrics.resolverErrors.WithLabelValues("echo_shop_8080")) >= 1
	})
	waitEndpoints(t, p, "10.0.0.3:8080")

	// All slices are deleted: no endpoints.
	if err := slicesAPI.Delete(ctx, "echo-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEndpoints(t, p)
	if got := testutil.ToFloat64(c.metrics.endpoints.WithLabelValues("echo_shop_8080")); got != 0 {
		t.Errorf("kedge_k8s_endpoints = %v, want 0", got)
	}
	// The other Service's slices never reached this source.
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, set := range p.sets {
		if slices.Contains(set, "10.9.9.9:8080") {
			t.Errorf("published another Service's endpoint: %q", set)
		}
	}
}

func TestSourceNamespaceRestriction(t *testing.T) {
	t.Parallel()
	c := NewCluster(fakeClientset(), ClusterOptions{Namespace: "shop"}, nil, nil)
	_, err := c.Source(backend.Spec{Name: "x", Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "echo.other:http"}})
	if err == nil || !strings.Contains(err.Error(), `outside namespace "shop"`) {
		t.Errorf("Source for another namespace: %v", err)
	}
	if _, err := c.Source(backend.Spec{Name: "x", Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "echo.shop:http"}}); err != nil {
		t.Errorf("Source in the namespace: %v", err)
	}
	if _, err := c.Source(backend.Spec{Name: "x", Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "Echo"}}); err == nil {
		t.Error("Source accepted a bad target")
	}
}

func TestReadyWaitsForCacheAndSaysWhy(t *testing.T) {
	t.Parallel()
	cs := fakeClientset()
	var forbidden atomic.Bool
	forbidden.Store(true)
	cs.PrependReactor("list", "endpointslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		if forbidden.Load() {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "discovery.k8s.io", Resource: "endpointslices"}, "", errors.New("RBAC says no"))
		}
		return false, nil, nil
	})
	log := newRecordingLogger()
	c := NewCluster(cs, ClusterOptions{CacheSyncTimeout: 100 * time.Millisecond}, log, nil)
	if err := c.Ready(); err != nil {
		t.Fatalf("a Cluster with nothing in use is not ready: %v", err)
	}
	p := runSource(t, c, "echo", "echo:http")
	if err := c.Ready(); err == nil {
		t.Fatal("ready before Run")
	}
	runInBackground(t, c.Run)
	sharedtest.Eventually(t, "the reason in the log", func() bool {
		return log.has("ERROR kubernetes cache not filled yet", "endpointslices", "RBAC says no")
	})
	if err := c.Ready(); err == nil || !strings.Contains(err.Error(), "RBAC says no") {
		t.Errorf("Ready = %v, want the watch error", err)
	}
	// Requests waiting for the backend are released with an empty set after the timeout.
	if got, ok := p.last(); !ok || len(got) != 0 {
		t.Errorf("published %q, %v; want an empty set after the sync timeout", got, ok)
	}
	forbidden.Store(false) // RBAC fixed: client-go retries, the cache fills, kedge becomes ready
	sharedtest.Eventually(t, "ready", func() bool { return c.Ready() == nil })
}

func TestCacheStripsManagedFields(t *testing.T) {
	t.Parallel()
	s := slice("echo-a", "echo", "shop", []string{"http=8080"}, readyEP("10.0.0.1"))
	s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate}}
	s.Annotations = map[string]string{lastAppliedAnnotation: `{"big": "copy"}`, "keep": "me"}
	c := NewCluster(fakeClientset(s), ClusterOptions{}, nil, nil)
	p := runSource(t, c, "echo", "echo.shop:http")
	runInBackground(t, c.Run)
	waitEndpoints(t, p, "10.0.0.1:8080")
	objs := c.slices.inf.GetStore().List()
	if len(objs) != 1 {
		t.Fatalf("%d cached slices", len(objs))
	}
	cached := objs[0].(*discoveryv1.EndpointSlice)
	if len(cached.ManagedFields) != 0 || cached.Annotations[lastAppliedAnnotation] != "" || cached.Annotations["keep"] != "me" {
		t.Errorf("cached slice keeps managed fields %v or annotations %v", cached.ManagedFields, cached.Annotations)
	}
}
