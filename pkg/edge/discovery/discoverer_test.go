package discovery

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/kedge-proxy/kedge/pkg/edge/config"
	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

const suffix = "cluster-a.example.com"

// applier merges discovered configs into a file config, as kedge's root does, and keeps the result.
type applier struct {
	file *config.Dynamic
	fail atomic.Bool

	mu     sync.Mutex
	merged *config.Dynamic
	calls  int
}

func newApplier(t *testing.T) *applier {
	t.Helper()
	file, err := config.Parse([]byte(`{"http": {"routes": [{"backend_name": "web", "host_matcher": "web.example.com"}]}}`),
		[]byte(`{"http": {"backends": [{"name": "web", "host": {"dns_name": "web.example.com", "port": 80}}]}}`), "director.json", "backendpool.json")
	if err != nil {
		t.Fatal(err)
	}
	return &applier{file: file}
}

func (a *applier) apply(gens []config.Generated) ([]config.Rejected, error) {
	if a.fail.Load() {
		return nil, errors.New("pool refused the backends")
	}
	merged, rejected := config.Merge(a.file, config.Check(gens))
	a.mu.Lock()
	defer a.mu.Unlock()
	a.merged, a.calls = merged, a.calls+1
	return rejected, nil
}

// hosts returns the hosts of the applied HTTP routes, in order.
func (a *applier) hosts() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.merged == nil {
		return nil
	}
	var out []string
	for _, r := range a.merged.HTTPRoutes {
		out = append(out, r.Host)
	}
	return out
}

func (a *applier) callCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls
}

// waitHosts waits until the applied HTTP route hosts are want (file routes first).
func (a *applier) waitHosts(t *testing.T, want ...string) {
	t.Helper()
	want = append([]string{"web.example.com"}, want...)
	sharedtest.Eventually(t, fmt.Sprintf("hosts %q", want), func() bool { return slices.Equal(a.hosts(), want) })
}

// startDiscovery runs a Cluster and a Discoverer on cs until the test ends.
func startDiscovery(t *testing.T, cs *fake.Clientset, opts ClusterOptions, log *recordingLogger, reg prometheus.Registerer) (*Discoverer, *applier) {
	t.Helper()
	c := NewCluster(cs, opts, log, reg)
	d := NewDiscoverer(c, Options{LabelPrefix: "kedge.com/", DomainSuffix: suffix, Events: true}, log, reg)
	a := newApplier(t)
	if err := d.Ready(); err == nil {
		t.Fatal("discoverer ready before it applied anything")
	}
	runInBackground(t, c.Run)
	runInBackground(t, func(ctx context.Context) error { return d.Run(ctx, a.apply) })
	return d, a
}

// aged sets a Service's creation time, which orders Services (the older one keeps a contested host).
func aged(svc *corev1.Service, age time.Duration) *corev1.Service {
	svc.CreationTimestamp = metav1.NewTime(time.Now().Add(-age).Truncate(time.Second))
	return svc
}

func TestDiscoveryFollowsServices(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset(
		service("echo", "shop", exposedLabels, nil, "http=80:8080", "grpc=9000"),
		service("hidden", "shop", nil, nil, "http=80"),
		service("off", "shop", map[string]string{"kedge.com/kedge-exposed": "false"}, nil, "http=80"),
	)
	reg := prometheus.NewRegistry()
	d, a := startDiscovery(t, cs, ClusterOptions{}, newRecordingLogger(), reg)
	a.waitHosts(t, "echo.shop.svc."+suffix)
	sharedtest.Eventually(t, "ready after the first apply", func() bool { return d.Ready() == nil })
	a.mu.Lock()
	grpc := a.merged.GRPCRoutes
	a.mu.Unlock()
	if len(grpc) != 1 || grpc[0].AuthorityHost != "echo.shop.svc."+suffix || grpc[0].AuthorityPort != 9000 || !grpc[0].Discovered {
		t.Errorf("gRPC routes = %+v", grpc)
	}
	if got := testutil.ToFloat64(d.metrics.services.WithLabelValues("exposed")); got != 1 {
		t.Errorf("kedge_discovery_services{state=exposed} = %v, want 1", got)
	}

	ctx := t.Context()
	svcs := cs.CoreV1().Services("shop")
	// "false" becomes "true": exposed.
	if _, err := svcs.Update(ctx, service("off", "shop", exposedLabels, nil, "http=80"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.waitHosts(t, "echo.shop.svc."+suffix, "off.shop.svc."+suffix)
	// "true" becomes "false": gone.
	if _, err := svcs.Update(ctx, service("echo", "shop", map[string]string{"kedge.com/kedge-exposed": "false"}, nil, "http=80"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.waitHosts(t, "off.shop.svc."+suffix)
	// Deleted: gone.
	if err := svcs.Delete(ctx, "off", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a.waitHosts(t)
}

func TestDiscoverySkipsBadServicesAndReportsThem(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 60)
	cs := fake.NewClientset(
		aged(service("echo", "shop", exposedLabels, nil, "http=80:8080"), time.Hour),
		aged(service("noports", "shop", exposedLabels, nil, "metrics=9090"), time.Minute),
		aged(service("copycat", "shop", exposedLabels, map[string]string{"kedge.com/host-matcher": "echo.shop.svc." + suffix}, "http=80"), time.Minute),
		aged(service(long, "shop", exposedLabels, nil, "http=80"), time.Minute),
	)
	log := newRecordingLogger()
	reg := prometheus.NewRegistry()
	d, a := startDiscovery(t, cs, ClusterOptions{}, log, reg)
	a.waitHosts(t, "echo.shop.svc."+suffix)

	for _, want := range [][]string{
		{"service skipped by discovery", "shop/noports", "no TCP port is named http"},
		{"service skipped by discovery", "shop/copycat", "duplicate host matcher", "service shop/echo"},
		{"service skipped by discovery", "shop/" + long, "^[a-z_0-9.]{2,64}$"},
	} {
		sharedtest.Eventually(t, "log line "+strings.Join(want, " "), func() bool { return log.has(want...) })
	}
	// One Warning Event per skipped Service, on the Service.
	sharedtest.Eventually(t, "three Events", func() bool {
		evs, err := cs.CoreV1().Events("shop").List(t.Context(), metav1.ListOptions{})
		return err == nil && len(evs.Items) == 3
	})
	evs, err := cs.CoreV1().Events("shop").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list Events: %v", err)
	}
	for _, ev := range evs.Items {
		if ev.Type != corev1.EventTypeWarning || ev.Reason != eventReason || ev.InvolvedObject.Kind != "Service" || ev.Message == "" {
			t.Errorf("event = %+v", ev)
		}
	}
	sharedtest.Eventually(t, "kedge_discovery_services{state=rejected} = 3", func() bool {
		return testutil.ToFloat64(d.metrics.services.WithLabelValues("rejected")) == 3
	})
	if got := testutil.ToFloat64(d.metrics.rejections); got != 3 {
		t.Errorf("kedge_discovery_rejections_total = %v, want 3", got)
	}

	// Fixing a Service exposes it; the others stay skipped and are not reported again.
	if _, err := cs.CoreV1().Services("shop").Update(t.Context(), aged(service("noports", "shop", exposedLabels, nil, "http=80"), time.Minute), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.waitHosts(t, "echo.shop.svc."+suffix, "noports.shop.svc."+suffix)
	sharedtest.Eventually(t, "recovery logged", func() bool { return log.has("no longer skipped", "shop/noports") })
	if got := testutil.ToFloat64(d.metrics.rejections); got != 3 {
		t.Errorf("kedge_discovery_rejections_total = %v after a fix, want still 3", got)
	}
}

func TestDiscoveryWithoutEventPermission(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset(service("bad", "shop", exposedLabels, nil, "web=80"))
	var attempts atomic.Int32
	cs.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		attempts.Add(1)
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "events"}, "", errors.New("no"))
	})
	log := newRecordingLogger()
	_, a := startDiscovery(t, cs, ClusterOptions{}, log, nil)
	a.waitHosts(t)
	sharedtest.Eventually(t, "the RBAC note", func() bool { return log.has("may not create Events") })
	if _, err := cs.CoreV1().Services("shop").Create(t.Context(), service("bad2", "shop", exposedLabels, nil, "web=80"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sharedtest.Eventually(t, "the second Service reported", func() bool { return log.has("service skipped", "shop/bad2") })
	if n := attempts.Load(); n != 1 {
		t.Errorf("%d Event attempts, want 1 (no retries once RBAC refused)", n)
	}
}

func TestDiscoveryNamespaceRestriction(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset(
		service("echo", "shop", exposedLabels, nil, "http=80"),
		service("echo", "other", exposedLabels, nil, "http=80"),
	)
	_, a := startDiscovery(t, cs, ClusterOptions{Namespace: "shop"}, newRecordingLogger(), nil)
	a.waitHosts(t, "echo.shop.svc."+suffix)
	if _, err := cs.CoreV1().Services("other").Create(t.Context(), service("late", "other", exposedLabels, nil, "http=80"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services("shop").Create(t.Context(), service("late", "shop", exposedLabels, nil, "http=80"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	a.waitHosts(t, "echo.shop.svc."+suffix, "late.shop.svc."+suffix)
}

func TestDiscoveryCoalescesBursts(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset()
	_, a := startDiscovery(t, cs, ClusterOptions{}, newRecordingLogger(), nil)
	a.waitHosts(t)
	before := a.callCount()
	var want []string
	for i := range 30 {
		name := fmt.Sprintf("svc%02d", i)
		if _, err := cs.CoreV1().Services("shop").Create(t.Context(), service(name, "shop", exposedLabels, nil, "http=80"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, name+".shop.svc."+suffix)
	}
	a.waitHosts(t, want...)
	if n := a.callCount() - before; n > 10 {
		t.Errorf("30 changes in a burst caused %d applies; want them coalesced", n)
	}
}

func TestDiscoveryRetriesFailedApply(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset(service("echo", "shop", exposedLabels, nil, "http=80"))
	log := newRecordingLogger()
	c := NewCluster(cs, ClusterOptions{}, log, nil)
	d := NewDiscoverer(c, Options{LabelPrefix: "kedge.com/", DomainSuffix: suffix}, log, nil)
	a := newApplier(t)
	a.fail.Store(true)
	runInBackground(t, c.Run)
	runInBackground(t, func(ctx context.Context) error { return d.Run(ctx, a.apply) })
	sharedtest.Eventually(t, "the failure logged", func() bool { return log.has("applying the discovered config failed", "pool refused") })
	if err := d.Ready(); err == nil {
		t.Error("ready although nothing was applied")
	}
	a.fail.Store(false)
	a.waitHosts(t, "echo.shop.svc."+suffix)
	sharedtest.Eventually(t, "ready after a successful retry", func() bool { return d.Ready() == nil })
}

func TestDiscoveryWithoutEventsOption(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset(service("bad", "shop", exposedLabels, nil, "web=80"))
	log := newRecordingLogger()
	c := NewCluster(cs, ClusterOptions{}, log, nil)
	d := NewDiscoverer(c, Options{LabelPrefix: "kedge.com/", DomainSuffix: suffix}, log, nil)
	a := newApplier(t)
	runInBackground(t, c.Run)
	runInBackground(t, func(ctx context.Context) error { return d.Run(ctx, a.apply) })
	sharedtest.Eventually(t, "the skipped Service logged", func() bool { return log.has("service skipped", "shop/bad") })
	for _, act := range cs.Actions() {
		if act.GetVerb() == "create" && act.GetResource().Resource == "events" {
			t.Errorf("an Event was created although Options.Events is off: %+v", act)
		}
	}
}

// TestDiscoveryReadyWaitsForEndpointSlices: the discovered backends use k8s resolvers, whose EndpointSlice cache is
// registered when they are built (in apply). kedge must not report ready while that cache is empty, or the load
// balancer sends requests that find no endpoints.
func TestDiscoveryReadyWaitsForEndpointSlices(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset(service("echo", "shop", exposedLabels, nil, "http=80:8080"))
	var forbidden atomic.Bool
	forbidden.Store(true)
	cs.PrependReactor("list", "endpointslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		if forbidden.Load() {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "discovery.k8s.io", Resource: "endpointslices"}, "", errors.New("RBAC says no"))
		}
		return false, nil, nil
	})
	log := newRecordingLogger()
	c := NewCluster(cs, ClusterOptions{CacheSyncTimeout: time.Hour}, log, nil)
	d := NewDiscoverer(c, Options{LabelPrefix: "kedge.com/", DomainSuffix: suffix}, log, nil)
	a := newApplier(t)
	apply := func(gens []config.Generated) ([]config.Rejected, error) {
		for _, g := range gens { // what kedge's backend pool does with the generated backends
			for _, b := range g.Backends {
				if _, err := c.Source(b); err != nil {
					return nil, err
				}
			}
		}
		return a.apply(gens)
	}
	runInBackground(t, c.Run)
	runInBackground(t, func(ctx context.Context) error { return d.Run(ctx, apply) })
	sharedtest.Eventually(t, "the discovered routes applied", func() bool { return a.callCount() > 0 })
	if err := d.Ready(); err == nil || !strings.Contains(err.Error(), "endpointslices") {
		t.Errorf("Ready = %v while the EndpointSlice cache is empty; want not ready, naming endpointslices", err)
	}
	forbidden.Store(false)
	sharedtest.Eventually(t, "ready once the EndpointSlice cache is filled", func() bool { return d.Ready() == nil })
}
