//go:build kube

package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// outageFor is how long the API server, then etcd, stay down.
const outageFor = 30 * time.Second

// TestKubeOutage stops the real API server for 30 s, then etcd for 30 s: kedge keeps its routes and stays ready
// throughout, and after each restart discovery resumes without restarting kedge. Before the API server comes back,
// etcd's history is compacted past kedge's last resourceVersion, so kedge's resumed watches end with 410 Gone and
// it must list again (without the compaction the real API server resumes them: no 410 happens by itself).
func TestKubeOutage(t *testing.T) {
	k := startRealKube(t)
	applyKedgeRBAC(t, k)
	kd := startDiscoveringKedge(t, "kedge", kedgeKubeconfig(t, k))
	admin := kubeClient(t, k.Kubeconfig)
	createNamespace(t, admin, "shop")
	expose := func(t *testing.T, name string) {
		t.Helper()
		ctx := t.Context()
		if _, err := admin.DiscoveryV1().EndpointSlices("shop").Create(ctx, realSlice("shop", name, name, "192.0.2.10"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.CoreV1().Services("shop").Create(ctx, realService("shop", name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	host := func(name string) string { return name + ".shop.svc." + domainSuffix }
	expose(t, "before")
	testutil.EventuallyWithin(t, 5*time.Second, "the first route", func() bool { return discoveredHosts(t, kd)[host("before")] })

	// outage keeps down stopped for outageFor while checking every 100 ms that kedge stays ready with its routes,
	// and returns when it was started again.
	outage := func(t *testing.T, down string) time.Time {
		t.Helper()
		want := discoveredHosts(t, kd)
		k.do(t, "stop-"+down)
		var problems []string
		checks := 0
		for end := time.Now().Add(outageFor); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			checks++
			resp, err := http.Get("http://" + kd.debug + "/readyz")
			if err != nil {
				problems = append(problems, err.Error())
				continue
			}
			body := readAll(t, resp)
			if resp.StatusCode != http.StatusOK {
				problems = append(problems, resp.Status+": "+body)
			}
			if got := discoveredHosts(t, kd); len(got) != len(want) || !got[host("before")] {
				problems = append(problems, "routes changed")
			}
		}
		if down == "apiserver" {
			k.do(t, "compact-etcd") // the resumed watches start before etcd's history: 410 Gone
		}
		if len(problems) > 0 {
			t.Errorf("during the %s outage %d of %d checks failed, first: %s", down, len(problems), checks, problems[0])
		}
		restarted := time.Now()
		k.do(t, "start-"+down)
		return restarted
	}

	t.Run("API server down", func(t *testing.T) {
		restarted := outage(t, "apiserver")
		start := time.Now()
		expose(t, "after-apiserver")
		// client-go retries a refused watch with backoff growing to 30 s (with jitter): allow for one full step.
		testutil.EventuallyWithin(t, 90*time.Second, "discovery to resume after the API server's restart", func() bool {
			return discoveredHosts(t, kd)[host("after-apiserver")]
		})
		t.Logf("discovery resumed %v after the restart", time.Since(start).Round(100*time.Millisecond))
		// A refused watch is retried with the same resourceVersion; an expired one (410 Gone), or any other
		// error, makes client-go list again: a LIST, or a WATCH with sendInitialEvents (client-go's watch-list),
		// which the audit log records when its response starts.
		// client-go lists each resource again after its own backoff: wait for both.
		for _, resource := range []string{"services", "endpointslices"} {
			testutil.EventuallyWithin(t, 90*time.Second, "kedge to list "+resource+" again after the API server's restart", func() bool {
				for _, ev := range k.auditEvents(t) {
					if ev.User.Username == kedgeSA && ev.ObjectRef.Resource == resource && ev.RequestReceivedTimestamp.After(restarted) &&
						(ev.Verb == "list" || strings.Contains(ev.RequestURI, "sendInitialEvents=true")) {
						return true
					}
				}
				return false
			})
		}
	})

	t.Run("etcd down", func(t *testing.T) {
		outage(t, "etcd")
		start := time.Now()
		expose(t, "after-etcd")
		testutil.EventuallyWithin(t, 90*time.Second, "discovery to resume after etcd's restart", func() bool {
			return discoveredHosts(t, kd)[host("after-etcd")]
		})
		t.Logf("discovery resumed %v after the restart", time.Since(start).Round(100*time.Millisecond))
	})
	if kd.proc.exited() {
		t.Errorf("kedge exited")
	}
	// Not checkKedgeRequests: a request that reaches a restarted API server before its RBAC caches are filled
	// is refused (403), and client-go lists again after that too.
}
