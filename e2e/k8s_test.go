package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

const domainSuffix = "cluster-a.test"

// exposedService is Service name in namespace shop, labelled for kedge, with the given ports ("name=port:target").
func exposedService(name string, ports ...string) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "shop", Labels: map[string]string{"kedge.com/kedge-exposed": "true"},
		CreationTimestamp: metav1.NewTime(time.Now().Truncate(time.Second)),
	}}
	for _, p := range ports {
		n, rest, _ := strings.Cut(p, "=")
		port, target, _ := strings.Cut(rest, ":")
		var number int32
		for _, c := range port {
			number = number*10 + c - '0'
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: n, Port: number, Protocol: corev1.ProtocolTCP, TargetPort: intstr.Parse(target)})
	}
	return svc
}

// podSlice is an EndpointSlice of Service echo with one ready endpoint 127.0.0.1 on port (named "http").
func podSlice(name string, port int) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop",
			Labels: map[string]string{discoveryv1.LabelServiceName: "echo"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(port)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
}

// TestKedgeFollowsKubernetes runs the kedge binary against a fake API server through a kubeconfig: a Service
// labelled for exposure becomes a route, and its traffic follows its EndpointSlices.
func TestKedgeFollowsKubernetes(t *testing.T) {
	api := newFakeKube(t)
	podA := testutil.NewEchoServer(t, testutil.EchoName("pod-a"))
	podB := testutil.NewEchoServer(t, testutil.EchoName("pod-b"))
	api.put(exposedService("broken", "metrics=9090:9090")) // no usable port: skipped and reported

	k := startKedge(t, `{}`, `{}`,
		"--k8sclient_kubeconfig_path="+api.kubeconfig(t, t.TempDir()),
		"--kedge_dynamic_routings_enabled",
		"--discovery_external_domain_suffix="+domainSuffix,
		"--k8s_cache_sync_timeout=10s",
	)
	// Ready means the first discovered config is applied: it and the startup warnings were each logged once.
	startup := k.proc.out.String()
	if n := strings.Count(startup, `msg="config applied"`); n != 1 {
		t.Errorf("%d \"config applied\" lines at startup, want 1", n)
	}
	if n := strings.Count(startup, "no authentication configured"); n != 1 {
		t.Errorf("the startup warning logged %d times, want once", n)
	}
	client := k.client(false)
	// Port 80 is the Service port, so the route wants it; winch would say X-Forwarded-Proto: http instead.
	url := "https://echo.shop.svc." + domainSuffix + ":80/hello"
	backendOf := func() string {
		resp, err := client.Get(url)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return resp.Status + " " + resp.Header.Get("X-Kedge-Error-Type")
		}
		return testutil.DecodeEcho(t, resp).Backend
	}
	if got := backendOf(); !strings.Contains(got, "no-route") {
		t.Errorf("before the Service exists: %q, want a no-route error", got)
	}

	// The Service appears with one pod.
	api.put(podSlice("echo-a", podA.Port()))
	api.put(exposedService("echo", "http=80:8080"))
	testutil.EventuallyWithin(t, 10*time.Second, "the discovered route to reach pod A", func() bool { return backendOf() == "pod-a" })

	// The pod is replaced: traffic follows within a second or so.
	api.put(podSlice("echo-b", podB.Port()))
	api.remove("endpointslices", "shop", "echo-a")
	testutil.EventuallyWithin(t, 5*time.Second, "traffic to move to pod B", func() bool { return backendOf() == "pod-b" })
	for i := range 5 {
		if got := backendOf(); got != "pod-b" {
			t.Fatalf("request %d after the change went to %q", i, got)
		}
	}

	// /debug/config shows the route as discovered; the metrics count its endpoints; the bad Service was reported.
	resp, err := http.Get("http://" + k.debug + "/debug/config")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		HTTPRoutes []struct {
			Backend    string `json:"backend"`
			Host       string `json:"host"`
			Discovered bool   `json:"discovered"`
		} `json:"http_routes"`
	}
	body := readAll(t, resp)
	if err := json.Unmarshal([]byte(body), &cfg); err != nil {
		t.Fatalf("/debug/config: %v\n%s", err, body)
	}
	if len(cfg.HTTPRoutes) != 1 || cfg.HTTPRoutes[0].Backend != "echo_shop_8080" || !cfg.HTTPRoutes[0].Discovered ||
		cfg.HTTPRoutes[0].Host != "echo.shop.svc."+domainSuffix {
		t.Errorf("/debug/config routes = %+v", cfg.HTTPRoutes)
	}
	if got := metricValue(t, k.debug, `kedge_k8s_endpoints{backend="echo_shop_8080"}`); got != "1" {
		t.Errorf("kedge_k8s_endpoints = %q, want 1", got)
	}
	testutil.EventuallyWithin(t, 5*time.Second, "an Event on the broken Service", func() bool {
		for _, ev := range api.createdEvents() {
			if ev.InvolvedObject.Name == "broken" && ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, "no TCP port") {
				return true
			}
		}
		return false
	})

	// The Service is no longer exposed: its route goes away.
	gone := exposedService("echo", "http=80:8080")
	gone.Labels["kedge.com/kedge-exposed"] = "false"
	api.put(gone)
	testutil.EventuallyWithin(t, 5*time.Second, "the route to go away", func() bool { return strings.Contains(backendOf(), "no-route") })
}

// TestKedgeDiscoverOnce runs "kedge discover --once" against the fake API server.
func TestKedgeDiscoverOnce(t *testing.T) {
	api := newFakeKube(t)
	api.put(exposedService("echo", "http=80:8080", "grpc-api=9000:9000"))
	api.put(exposedService("broken", "metrics=9090:9090"))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "kedge"), "discover", "--once",
		"--k8sclient_kubeconfig_path="+api.kubeconfig(t, t.TempDir()),
		"--discovery_external_domain_suffix="+domainSuffix)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kedge discover --once: %v\nstderr:\n%s", err, stderr.String())
	}
	var docs struct {
		Director struct {
			HTTP struct {
				Routes []map[string]any `json:"routes"`
			} `json:"http"`
			GRPC struct {
				Routes []map[string]any `json:"routes"`
			} `json:"grpc"`
		} `json:"director"`
		Backendpool struct {
			HTTP struct {
				Backends []map[string]any `json:"backends"`
			} `json:"http"`
		} `json:"backendpool"`
	}
	if err := json.Unmarshal(out, &docs); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	r := docs.Director.HTTP.Routes
	if len(r) != 1 || r[0]["host_matcher"] != "echo.shop.svc."+domainSuffix || r[0]["backend_name"] != "echo_shop_8080" ||
		r[0]["autogenerated"] != true || len(docs.Director.GRPC.Routes) != 1 || len(docs.Backendpool.HTTP.Backends) != 1 {
		t.Errorf("unexpected documents:\n%s", out)
	}
	if !strings.Contains(stderr.String(), "shop/broken") {
		t.Errorf("the skipped Service is not reported on stderr:\n%s", stderr.String())
	}
	if evs := api.createdEvents(); len(evs) != 0 {
		t.Errorf("kedge discover raised Events: %+v", evs)
	}

	// Without a suffix it refuses to start.
	out, err = exec.Command(filepath.Join(binDir, "kedge"), "discover", "--once").CombinedOutput()
	if code := exitCode(err); code != 2 || !strings.Contains(string(out), "--discovery_external_domain_suffix") {
		t.Errorf("discover without a suffix: exit %d\n%s", code, out)
	}
}
