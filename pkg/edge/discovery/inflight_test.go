package discovery

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// TestEndpointChangeKeepsInFlightRequests runs a real backend.Pool on the k8s resolver: when a pod's endpoint
// leaves the Service, new requests go to the remaining pods while the request in flight on the old one finishes.
func TestEndpointChangeKeepsInFlightRequests(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	podA := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		io.WriteString(w, "A")
	}))
	defer podA.Close()
	podB := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "B") }))
	defer podB.Close()
	portOf := func(s *httptest.Server) string {
		_, p, _ := net.SplitHostPort(s.Listener.Addr().String())
		return p
	}

	cs := fakeClientset(slice("echo-a", "echo", "shop", []string{"http=" + portOf(podA)}, readyEP("127.0.0.1")))
	c := NewCluster(cs, ClusterOptions{}, logging.Discard(), nil)
	pool := backend.NewPool(backend.Deps{K8s: c, Options: backend.Options{DrainTimeout: 10 * time.Second}})
	defer pool.Close()
	runInBackground(t, c.Run)
	spec := backend.Spec{Name: "echo_shop_http", Protocol: backend.HTTP,
		Resolver: backend.Resolver{Kind: backend.ResolverK8s, K8sTarget: "echo.shop:http"}}
	if err := pool.Update([]backend.Spec{spec}); err != nil {
		t.Fatal(err)
	}
	rt, ok := pool.HTTP(spec.Name)
	if !ok {
		t.Fatal("backend missing")
	}
	client := &http.Client{Transport: rt, Timeout: 10 * time.Second}
	get := func(path string) (string, error) {
		resp, err := client.Get("http://echo.shop.svc.example.com" + path)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return string(b), &statusError{resp.StatusCode}
		}
		return string(b), err
	}

	slow := make(chan string, 1)
	go func() {
		body, err := get("/slow")
		if err != nil {
			body = err.Error()
		}
		slow <- body
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never reached pod A")
	}

	// Pod A leaves, pod B arrives.
	ctx := t.Context()
	if _, err := cs.DiscoveryV1().EndpointSlices("shop").Create(ctx, slice("echo-b", "echo", "shop", []string{"http=" + portOf(podB)}, readyEP("127.0.0.1")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.DiscoveryV1().EndpointSlices("shop").Delete(ctx, "echo-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, time.Second, "traffic on pod B only", func() bool {
		for range 4 {
			if body, err := get("/"); err != nil || body != "B" {
				return false
			}
		}
		return true
	})
	for i := range 10 {
		if body, err := get("/" + strconv.Itoa(i)); err != nil || body != "B" {
			t.Fatalf("request %d after the change: %q, %v", i, body, err)
		}
	}

	close(release)
	select {
	case body := <-slow:
		if body != "A" {
			t.Errorf("the request in flight on the removed pod got %q, want A", body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight never finished")
	}
}

type statusError struct{ code int }

func (e *statusError) Error() string { return "status " + strconv.Itoa(e.code) }
