package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// TestKedgeRefusingEndpointsCostNoRequest sends concurrent load straight to kedge at a backend of twelve endpoints,
// eleven of which refuse connections (many, so that concurrent picks overlap often). Ejections expire every 50 ms,
// so refusing endpoints are tried, ejected and retried all the time while requests pick concurrently: every request
// must still reach the healthy endpoint.
func TestKedgeRefusingEndpointsCostNoRequest(t *testing.T) {
	api := newFakeKube(t)
	healthy := testutil.NewEchoServer(t, testutil.EchoName("healthy"))
	api.put(podSlice("echo-healthy", healthy.Port()))
	const nRefusing = 11
	for i, port := range freePorts(t, nRefusing) { // nothing listens there
		api.put(podSlice("echo-refusing-"+itoa(i), port))
	}
	api.put(exposedService("echo", "http=80:8080"))
	k := startKedge(t, `{}`, `{}`,
		"--k8sclient_kubeconfig_path="+api.kubeconfig(t, t.TempDir()),
		"--kedge_dynamic_routings_enabled",
		"--discovery_external_domain_suffix="+domainSuffix,
		"--k8s_cache_sync_timeout=10s",
		"--lbtransport_failed_target_backoff_duration=50ms",
		"--log_level=info",
	)
	const backend = `backend="echo_shop_8080"`
	testutil.EventuallyWithin(t, 10*time.Second, "all endpoints", func() bool {
		return metricValue(t, k.debug, "kedge_k8s_endpoints{"+backend+"}") == itoa(1+nRefusing)
	})

	client := k.client(false)
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	l := startLoad(ctx, client, "https://echo.shop.svc."+domainSuffix+":80/load", 32)
	l.wg.Wait()
	client.CloseIdleConnections()

	ejections, _ := strconv.Atoi(metricValue(t, k.debug, "kedge_backend_ejections_total{"+backend+"}"))
	t.Logf("%d requests succeeded, %d failed; %d ejections", l.ok.Load(), len(l.failures), ejections)
	if len(l.failures) > 0 {
		t.Errorf("%d of %d requests failed, first: %s", len(l.failures), int(l.ok.Load())+len(l.failures), l.failures[0])
	}
	if l.ok.Load() < 50 {
		t.Errorf("only %d requests succeeded; the load did not run", l.ok.Load())
	}
	if ejections < 2 {
		t.Errorf("%d ejections: the refusing endpoints were not exercised", ejections)
	}
}

// rolloutMapper sends hello.example.com to the load balancer in front of the kedges.
const rolloutMapper = `{"routes": [{"direct": {"key": "hello.example.com", "url": %q}, "protocol": "HTTP"}]}`

// TestKedgeRolloutLosesNoRequest rolls two kedges behind a TCP load balancer while winch sends continuous load
// through it: the kedge carrying winch's connections gets SIGTERM and exits, a replacement starts, then the other
// kedge gets SIGTERM. The balancer only learns of each change from /readyz, as a Kubernetes Service does. No
// request may fail.
func TestKedgeRolloutLosesNoRequest(t *testing.T) {
	plain := testutil.NewEchoServer(t, testutil.EchoName("plain"))
	greeter := testutil.NewGRPCBackend(t, "greeter")
	pool := fmt.Sprintf(mtlsPool, plain.Port(), grpcPort(greeter))
	const delay = 2 * time.Second
	kA := startKedge(t, mtlsDirector, pool, "--server_shutdown_delay="+delay.String(), "--log_level=info")
	// Every kedge shows kA's certificate, as the replicas of one Deployment share a Secret.
	sameCert := []string{"--server_shutdown_delay=" + delay.String(), "--log_level=info",
		"--server_tls_cert_file=" + filepath.Join(kA.dir, "kedge.crt"), "--server_tls_key_file=" + filepath.Join(kA.dir, "kedge.key")}
	kB := startKedge(t, mtlsDirector, pool, sameCert...)
	lb := newL4Balancer(t, kA, kB)
	w := startWinch(t, fmt.Sprintf(rolloutMapper, "https://localhost:"+itoa(lb.port())), "",
		"--client_tls_root_ca_files="+kA.caFile, "--log_level=info")

	proxyURL, _ := url.Parse(w.proxyURL)
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), MaxIdleConnsPerHost: 16}, Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	const target = "http://hello.example.com/rollout"
	testutil.EventuallyWithin(t, 10*time.Second, "a first request through winch", func() bool { return status(client, target) == http.StatusOK })

	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second) // a bound; the test cancels far earlier
	defer cancel()
	l := startLoad(ctx, client, target, 8)
	testutil.EventuallyWithin(t, 5*time.Second, "load", func() bool { return l.ok.Load() > 50 })

	// Stop the kedge that carries winch's traffic, then start its replacement.
	first, second := kA, kB
	if lb.active(kB) > lb.active(kA) {
		first, second = kB, kA
	}
	stopKedge(t, first, delay)
	kC := startKedge(t, mtlsDirector, pool, sameCert...)
	lb.add(kC)
	testutil.EventuallyWithin(t, 10*time.Second, "the balancer to take the new kedge in", func() bool { return lb.isReady(kC) })
	servedBefore := l.ok.Load()
	testutil.EventuallyWithin(t, 5*time.Second, "more load", func() bool { return l.ok.Load() > servedBefore+50 })

	// The second kedge goes too: everything moves to the new one.
	stopKedge(t, second, delay)
	servedBefore = l.ok.Load()
	testutil.EventuallyWithin(t, 5*time.Second, "load on the new kedge", func() bool { return l.ok.Load() > servedBefore+50 })
	cancel()
	l.wg.Wait()

	t.Logf("%d requests succeeded, %d failed; connections per kedge: first %d, second %d, new %d",
		l.ok.Load(), len(l.failures), lb.total(first), lb.total(second), lb.total(kC))
	if len(l.failures) > 0 {
		t.Errorf("%d of %d requests failed during the rollout, first: %s", len(l.failures), int(l.ok.Load())+len(l.failures), l.failures[0])
	}
	if lb.total(kC) == 0 {
		t.Error("the new kedge got no connection")
	}
}

// stopKedge sends k SIGTERM and waits for a clean exit; /readyz must turn 503 while the process is still serving.
func stopKedge(t *testing.T, k *kedgeEnv, delay time.Duration) {
	t.Helper()
	if err := k.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Not fatal: without a delay the port closes at once, and the failed requests tell the rest of the story.
	notReady := false
	for deadline := time.Now().Add(delay); !notReady && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		notReady = status(http.DefaultClient, "http://"+k.debug+"/readyz") == http.StatusServiceUnavailable
	}
	if !notReady {
		t.Errorf("/readyz did not answer 503 within %v of SIGTERM", delay)
	}
	select {
	case <-k.proc.done:
		if k.proc.err != nil {
			t.Fatalf("kedge exited uncleanly after SIGTERM: %v", k.proc.err)
		}
	case <-time.After(delay + k.drain + 5*time.Second):
		t.Fatal("kedge did not exit after SIGTERM")
	}
}

// l4Balancer stands in for a cloud TCP load balancer in front of kedge pods: it spreads new connections round robin
// over the kedges whose /readyz answered 200 at the last check (every 100 ms) and leaves the connections it made
// alone when a kedge leaves the rotation, as an L4 balancer does.
type l4Balancer struct {
	ln   net.Listener
	stop chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	members []*lbMember
	next    int
	conns   map[net.Conn]struct{}
}

type lbMember struct {
	k      *kedgeEnv
	ready  atomic.Bool
	active atomic.Int64 // proxied connections open now
	total  atomic.Int64 // proxied connections ever
}

func newL4Balancer(t *testing.T, ks ...*kedgeEnv) *l4Balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &l4Balancer{ln: ln, stop: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	for _, k := range ks {
		lb.add(k)
	}
	lb.wg.Go(lb.check)
	lb.wg.Go(lb.accept)
	t.Cleanup(func() {
		close(lb.stop)
		_ = ln.Close()
		lb.mu.Lock()
		for c := range lb.conns {
			_ = c.Close()
		}
		lb.mu.Unlock()
		lb.wg.Wait()
	})
	testutil.EventuallyWithin(t, 10*time.Second, "the balancer's first checks", func() bool {
		for _, k := range ks {
			if !lb.isReady(k) {
				return false
			}
		}
		return true
	})
	return lb
}

func (lb *l4Balancer) port() int { return lb.ln.Addr().(*net.TCPAddr).Port }

func (lb *l4Balancer) add(k *kedgeEnv) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.members = append(lb.members, &lbMember{k: k})
}

func (lb *l4Balancer) member(k *kedgeEnv) *lbMember {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, m := range lb.members {
		if m.k == k {
			return m
		}
	}
	return nil
}

func (lb *l4Balancer) isReady(k *kedgeEnv) bool { return lb.member(k).ready.Load() }
func (lb *l4Balancer) active(k *kedgeEnv) int64 { return lb.member(k).active.Load() }
func (lb *l4Balancer) total(k *kedgeEnv) int64  { return lb.member(k).total.Load() }

// check polls every member's /readyz until the balancer stops.
func (lb *l4Balancer) check() {
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		lb.mu.Lock()
		members := append([]*lbMember(nil), lb.members...)
		lb.mu.Unlock()
		for _, m := range members {
			m.ready.Store(status(client, "http://"+m.k.debug+"/readyz") == http.StatusOK)
		}
		select {
		case <-lb.stop:
			return
		case <-tick.C:
		}
	}
}

// pick returns the next ready member, or nil.
func (lb *l4Balancer) pick() *lbMember {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for range lb.members {
		m := lb.members[lb.next%len(lb.members)]
		lb.next++
		if m.ready.Load() {
			return m
		}
	}
	return nil
}

func (lb *l4Balancer) accept() {
	for {
		c, err := lb.ln.Accept()
		if err != nil {
			return // closed at cleanup
		}
		m := lb.pick()
		if m == nil {
			_ = c.Close() // no ready kedge: the client sees a reset, as behind a real balancer
			continue
		}
		lb.wg.Go(func() { lb.proxy(c, m) })
	}
}

// proxy copies bytes between the client connection c and a new connection to m's HTTPS port until both sides end.
func (lb *l4Balancer) proxy(c net.Conn, m *lbMember) {
	defer c.Close()
	up, err := net.Dial("tcp", m.k.https)
	if err != nil {
		return
	}
	defer up.Close()
	if !lb.track(c, up) {
		return
	}
	defer lb.untrack(c, up)
	m.active.Add(1)
	m.total.Add(1)
	defer m.active.Add(-1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, c)
		_ = up.(*net.TCPConn).CloseWrite()
	}()
	_, _ = io.Copy(c, up)
	_ = c.(*net.TCPConn).CloseWrite()
	<-done
}

// track registers both connections for the cleanup; false means the balancer is stopping.
func (lb *l4Balancer) track(cs ...net.Conn) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	select {
	case <-lb.stop:
		return false
	default:
	}
	for _, c := range cs {
		lb.conns[c] = struct{}{}
	}
	return true
}

func (lb *l4Balancer) untrack(cs ...net.Conn) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, c := range cs {
		delete(lb.conns, c)
	}
}
