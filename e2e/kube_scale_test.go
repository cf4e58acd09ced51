//go:build kube

package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// Scale: 1,000 exposed Services in 10 namespaces, each with 3 EndpointSlices of one endpoint.
const (
	scaleNamespaces = 10
	scaleServices   = 1000
	scaleSlices     = 3
)

// TestKubeScale creates the Services and slices on a real API server and requires a kedge (built without -race,
// so that its memory is representative) to have all of them as routes with 3 endpoints each within 30 s of the
// last write. The figures (creation and convergence times, kedge's RSS) are logged for docs/kubernetes.md.
func TestKubeScale(t *testing.T) {
	k := startRealKube(t)
	applyKedgeRBAC(t, k)
	kd := startDiscoveringKedge(t, plainKedge(t), kedgeKubeconfig(t, k))
	admin := kubeClient(t, k.Kubeconfig)
	for n := range scaleNamespaces {
		createNamespace(t, admin, fmt.Sprintf("scale-%d", n))
	}
	rssBefore := procStatusBytes(t, kd.proc.cmd.Process.Pid, "VmRSS")

	// Eight writers: the API server, not the client, is the limit.
	began := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ns, name := fmt.Sprintf("scale-%d", i%scaleNamespaces), fmt.Sprintf("svc-%d", i)
				var err error
				for s := range scaleSlices {
					addr := fmt.Sprintf("192.0.2.%d", 1+s)
					if _, err = admin.DiscoveryV1().EndpointSlices(ns).Create(t.Context(), realSlice(ns, name, fmt.Sprintf("%s-%d", name, s), addr), metav1.CreateOptions{}); err != nil {
						break
					}
				}
				if err == nil {
					_, err = admin.CoreV1().Services(ns).Create(t.Context(), realService(ns, name), metav1.CreateOptions{})
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range scaleServices {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d creates failed, first: %v", len(errs), errs[0])
	}
	written := time.Now()

	converged := func() bool {
		resp, err := http.Get("http://" + kd.debug + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		full := 0
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "kedge_k8s_endpoints{") && strings.HasSuffix(line, fmt.Sprintf(" %d", scaleSlices)) {
				full++
			}
		}
		return full == scaleServices && strings.Contains(body, fmt.Sprintf("kedge_discovery_services{state=\"exposed\"} %d\n", scaleServices))
	}
	testutil.EventuallyWithin(t, 30*time.Second, "1,000 routes with 3 endpoints each", converged)
	done := time.Now()
	if hosts := discoveredHosts(t, kd); len(hosts) != scaleServices {
		t.Errorf("/debug/config has %d discovered routes, want %d", len(hosts), scaleServices)
	}
	pid := kd.proc.cmd.Process.Pid
	t.Logf("scale: %d Services + %d EndpointSlices written in %v; kedge converged %v after the last write (%v after the first); "+
		"kedge RSS %d MiB before, %d MiB after (peak %d MiB); kube-apiserver RSS %d MiB",
		scaleServices, scaleServices*scaleSlices, written.Sub(began).Round(100*time.Millisecond), done.Sub(written).Round(10*time.Millisecond),
		done.Sub(began).Round(100*time.Millisecond), rssBefore>>20, procStatusBytes(t, pid, "VmRSS")>>20, procStatusBytes(t, pid, "VmHWM")>>20,
		procStatusBytes(t, k.APIServerPID, "VmRSS")>>20)
}

// procStatusBytes reads one memory field of /proc/<pid>/status, in bytes.
func procStatusBytes(t *testing.T, pid int, field string) int64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	n, err := parseProcField(status, field)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
