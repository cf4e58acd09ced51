//go:build kube

package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// kedgeSA is the identity of the kedge ServiceAccount of docs/deploy.
const kedgeSA = "system:serviceaccount:kedge:kedge"

// applyDeploy applies docs/deploy as the admin and requires no warnings from the real API server. As a user does, it
// first puts a serving certificate and key next to kustomization.yaml (tls.crt, tls.key: its secretGenerator's
// files), in a copy of the directory.
func applyDeploy(t *testing.T, k *realKube) {
	t.Helper()
	dir := t.TempDir()
	manifests, _ := filepath.Glob("../docs/deploy/*.yaml")
	for _, f := range manifests {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, dir, filepath.Base(f), string(raw))
	}
	certPEM, keyPEM := testutil.EncodePEM(t, testutil.NewCA(t).Server(t, "kedge.example.com"))
	writeFile(t, dir, "tls.crt", string(certPEM))
	writeFile(t, dir, "tls.key", string(keyPEM))
	out, errOut, err := k.kubectl(t, "apply", "-k", dir)
	if err != nil {
		t.Fatalf("kubectl apply -k docs/deploy: %v\n%s%s", err, out, errOut)
	}
	if strings.Contains(strings.ToLower(errOut), "warning") {
		t.Errorf("kubectl apply -k docs/deploy warned:\n%s", errOut)
	}
}

// applyKedgeRBAC applies only docs/deploy's namespace, ServiceAccount and RBAC, for the tests whose subject is not
// the deployment.
func applyKedgeRBAC(t *testing.T, k *realKube) {
	t.Helper()
	k.mustKubectl(t, "apply", "-f", "../docs/deploy/namespace.yaml", "-f", "../docs/deploy/serviceaccount.yaml", "-f", "../docs/deploy/rbac.yaml")
}

// kedgeKubeconfig returns a kubeconfig with a token of the kedge ServiceAccount (kubectl create token), so that
// kedge runs out of cluster under exactly the shipped RBAC.
func kedgeKubeconfig(t *testing.T, k *realKube) string {
	t.Helper()
	token := strings.TrimSpace(k.mustKubectl(t, "create", "token", "kedge", "-n", "kedge", "--duration=1h"))
	return tokenKubeconfig(t, k.URL, k.CAFile, token)
}

// startDiscoveringKedge runs kedge (binary bin) with discovery against the API server of kubeconfig.
func startDiscoveringKedge(t *testing.T, bin, kubeconfig string) *kedgeEnv {
	t.Helper()
	return startKedgeBinary(t, bin, `{}`, `{}`,
		"--k8sclient_kubeconfig_path="+kubeconfig,
		"--kedge_dynamic_routings_enabled",
		"--discovery_external_domain_suffix="+domainSuffix,
		"--k8s_cache_sync_timeout=10s",
		"--log_level=info")
}

// realService is a Service labelled for kedge with one port named http (80 -> 8080). It has no selector: the test
// writes its EndpointSlices, as the endpointslice controller would.
func realService(ns, name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"kedge.com/kedge-exposed": "true"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(8080)}}},
	}
}

// realSlice is an EndpointSlice of Service svc with ready endpoints at addrs, port http 8080. A real API server
// refuses loopback addresses in EndpointSlices, so the tests use TEST-NET-1 (192.0.2.0/24) addresses, which kedge
// resolves but the tests never dial: they read kedge's routes and endpoint counts instead.
func realSlice(ns, svc, name string, addrs ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	return s
}

// discoveredHosts returns the hosts of kedge's discovered HTTP routes, from /debug/config.
func discoveredHosts(t *testing.T, k *kedgeEnv) map[string]bool {
	t.Helper()
	resp, err := http.Get("http://" + k.debug + "/debug/config")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	var cfg struct {
		HTTPRoutes []struct {
			Host       string `json:"host"`
			Discovered bool   `json:"discovered"`
		} `json:"http_routes"`
	}
	if err := json.Unmarshal([]byte(body), &cfg); err != nil {
		t.Fatalf("/debug/config: %v\n%s", err, body)
	}
	hosts := map[string]bool{}
	for _, r := range cfg.HTTPRoutes {
		if r.Discovered {
			hosts[r.Host] = true
		}
	}
	return hosts
}

func createNamespace(t *testing.T, c *kubernetes.Clientset, name string) {
	t.Helper()
	if _, err := c.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestKubeDeployRBACAndDiscovery applies docs/deploy to a real API server, checks the kedge ServiceAccount's
// permissions with kubectl auth can-i, and runs kedge under exactly them: every discovery change reaches its routes
// within 2 s.
func TestKubeDeployRBACAndDiscovery(t *testing.T) {
	k := startRealKube(t)
	applyDeploy(t, k)
	kubeconfig := kedgeKubeconfig(t, k)

	t.Run("kubectl auth can-i as the kedge ServiceAccount", func(t *testing.T) {
		tests := []struct {
			args []string
			want bool
		}{
			{[]string{"list", "services", "-A"}, true},
			{[]string{"watch", "services", "-A"}, true},
			{[]string{"list", "endpointslices.discovery.k8s.io", "-A"}, true},
			{[]string{"watch", "endpointslices.discovery.k8s.io", "-A"}, true},
			{[]string{"create", "events", "-n", "shop"}, true}, // docs/kubernetes.md#rbac: Events on skipped Services
			{[]string{"get", "secrets", "-n", "kedge"}, false},
			{[]string{"list", "secrets", "-A"}, false},
			{[]string{"list", "pods", "-A"}, false},
			{[]string{"list", "endpoints", "-A"}, false},
			{[]string{"create", "services", "-n", "shop"}, false},
			{[]string{"create", "endpointslices.discovery.k8s.io", "-n", "shop"}, false},
			{[]string{"create", "configmaps", "-n", "kedge"}, false},
			{[]string{"create", "pods", "-n", "kedge"}, false},
			{[]string{"update", "services", "-n", "shop"}, false},
			{[]string{"delete", "services", "-n", "shop"}, false},
			{[]string{"patch", "events", "-n", "shop"}, false},
			{[]string{"create", "events.events.k8s.io", "-n", "shop"}, false},
			{[]string{"create", "serviceaccounts/token", "-n", "kedge"}, false},
		}
		for _, tc := range tests {
			out, errOut, err := k.kubectl(t, append(append([]string{"auth", "can-i"}, tc.args...), "--as="+kedgeSA)...)
			got := strings.TrimSpace(out) == "yes" && err == nil
			if got != tc.want || (!got && strings.TrimSpace(out) != "no") {
				t.Errorf("can-i %s: %q %v %s, want yes=%v", strings.Join(tc.args, " "), out, err, errOut, tc.want)
			}
		}
	})

	admin := kubeClient(t, k.Kubeconfig)
	createNamespace(t, admin, "shop")
	kd := startDiscoveringKedge(t, "kedge", kubeconfig)
	const within = 2 * time.Second
	host := "echo.shop.svc." + domainSuffix
	endpoints := func() string { return metricValue(t, kd.debug, `kedge_k8s_endpoints{backend="echo_shop_8080"}`) }
	ctx := t.Context()

	// A labelled Service with an EndpointSlice becomes a route with its endpoints.
	if _, err := admin.DiscoveryV1().EndpointSlices("shop").Create(ctx, realSlice("shop", "echo", "echo-a", "192.0.2.10"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Services("shop").Create(ctx, realService("shop", "echo"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, within, "the Service's route and its one endpoint", func() bool {
		return discoveredHosts(t, kd)[host] && endpoints() == "1"
	})

	// Endpoint changes: a second slice, then the first slice's endpoint replaced.
	if _, err := admin.DiscoveryV1().EndpointSlices("shop").Create(ctx, realSlice("shop", "echo", "echo-b", "192.0.2.11", "192.0.2.12"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, within, "three endpoints", func() bool { return endpoints() == "3" })
	if err := admin.DiscoveryV1().EndpointSlices("shop").Delete(ctx, "echo-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, within, "one endpoint again", func() bool { return endpoints() == "1" })

	// An invalid annotation: that Service is skipped, logged and given an Event; the others are still served.
	bad := realService("shop", "badanno")
	bad.Annotations = map[string]string{"kedge.com/host-matcher": "not a host!"}
	if _, err := admin.CoreV1().Services("shop").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, within, "the bad Service to be reported in the log", func() bool {
		out := kd.proc.out.String()
		return strings.Contains(out, "service skipped by discovery") && strings.Contains(out, "badanno")
	})
	testutil.EventuallyWithin(t, 10*time.Second, "a Warning Event on the bad Service", func() bool {
		evs, err := admin.CoreV1().Events("shop").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=badanno"})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs.Items {
			if ev.Type == corev1.EventTypeWarning && ev.Reason == "KedgeDiscoveryFailed" {
				return true
			}
		}
		return false
	})
	if hosts := discoveredHosts(t, kd); !hosts[host] || len(hosts) != 1 {
		t.Errorf("with the bad Service: discovered hosts %v, want only %s", hosts, host)
	}

	// Relabelled false: the route goes; true again: it comes back; deleted: it goes.
	relabel := func(v string) {
		t.Helper()
		svc, err := admin.CoreV1().Services("shop").Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Labels["kedge.com/kedge-exposed"] = v
		if _, err := admin.CoreV1().Services("shop").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	relabel("false")
	testutil.EventuallyWithin(t, within, "the route to go when relabelled false", func() bool { return !discoveredHosts(t, kd)[host] })
	relabel("true")
	testutil.EventuallyWithin(t, within, "the route to come back", func() bool { return discoveredHosts(t, kd)[host] })
	if err := admin.CoreV1().Services("shop").Delete(ctx, "echo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, within, "the route to go with the Service", func() bool { return !discoveredHosts(t, kd)[host] })

	// Everything kedge asked of the API server was allowed and within what the ClusterRole grants.
	checkKedgeRequests(t, k)
}

// checkKedgeRequests reads the audit log: kedge made requests, all allowed, all list/watch of Services and
// EndpointSlices or Event creation.
func checkKedgeRequests(t *testing.T, k *realKube) {
	t.Helper()
	n := 0
	for _, ev := range k.auditEvents(t) {
		if ev.User.Username != kedgeSA || ev.Stage != "ResponseComplete" {
			continue
		}
		n++
		allowed := (ev.Verb == "list" || ev.Verb == "watch") && (ev.ObjectRef.Resource == "services" || ev.ObjectRef.Resource == "endpointslices") ||
			ev.Verb == "create" && ev.ObjectRef.Resource == "events"
		if !allowed || ev.ResponseStatus.Code >= 400 {
			t.Errorf("kedge's request %s %s: %d", ev.Verb, ev.RequestURI, ev.ResponseStatus.Code)
		}
	}
	if n == 0 {
		t.Errorf("the audit log has no request of kedge's")
	}
}
