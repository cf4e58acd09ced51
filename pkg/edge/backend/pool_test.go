package backend

import (
	"context"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// blockingServer answers once release is closed; started receives a value when a request arrives.
func blockingServer(t *testing.T) (host string, port int, started chan struct{}, release chan struct{}) {
	t.Helper()
	started, release = make(chan struct{}, 16), make(chan struct{})
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case started <- struct{}{}:
		default: // later requests (polls) need no signal
		}
		select {
		case <-release:
			_, _ = io.WriteString(w, "done")
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	host, port = hostPort(t, s)
	return host, port, started, release
}

// inFlight sends a request through rt in a goroutine and returns its outcome on a channel.
func inFlight(t *testing.T, rt http.RoundTripper) <-chan string {
	t.Helper()
	out := make(chan string, 1)
	go func() {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://x/", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		out <- string(b)
	}()
	return out
}

func TestUpdateKeepsUnchangedBackends(t *testing.T) {
	t.Parallel()
	host, port, started, release := blockingServer(t)
	p, reg := newTestPool(t, sharedtest.NewResolver(nil), Options{})
	specs := []Spec{hostSpec("keep", host, port), {Name: "keep", Protocol: GRPC, Resolver: Resolver{Kind: ResolverHost, DNSName: host, Port: uint32(port)}}}
	if err := p.Update(specs); err != nil {
		t.Fatal(err)
	}
	rt, _ := p.HTTP("keep")
	conn, _ := p.GRPC("keep")
	done := inFlight(t, rt)
	<-started
	if err := p.Update(append([]Spec(nil), specs...)); err != nil {
		t.Fatal(err)
	}
	rt2, _ := p.HTTP("keep")
	conn2, _ := p.GRPC("keep")
	if rt2 != rt || conn2 != conn {
		t.Error("an unchanged spec got a new RoundTripper or ClientConn")
	}
	close(release)
	if got := <-done; got != "done" {
		t.Errorf("in-flight request: %q, want done", got)
	}
	if n := testutil.CollectAndCount(reg, "kedge_backend_configuration_changes_total"); n != 2 {
		t.Errorf("%d configuration change series, want 2 (one create per protocol)", n)
	}
}

func TestUpdateSwapsChangedAndDrainsRemoved(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		next func(old Spec) []Spec
	}{
		{"changed", func(old Spec) []Spec { old.TLS.ServerName = "other"; return []Spec{old} }},
		{"removed", func(Spec) []Spec { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			host, port, started, release := blockingServer(t)
			p, reg := newTestPool(t, sharedtest.NewResolver(nil), Options{})
			spec := hostSpec("b", host, port)
			if err := p.Update([]Spec{spec}); err != nil {
				t.Fatal(err)
			}
			old, _ := p.HTTP("b")
			done := inFlight(t, old)
			<-started
			if err := p.Update(tt.next(spec)); err != nil {
				t.Fatal(err)
			}
			cur, ok := p.HTTP("b")
			if tt.name == "removed" && ok {
				t.Error("removed backend still served")
			}
			if tt.name == "changed" && (!ok || cur == old) {
				t.Errorf("changed backend: ok=%v, same RoundTripper=%v; want a new one", ok, cur == old)
			}
			// The old backend still serves while draining, then closes.
			close(release)
			if got := <-done; got != "done" {
				t.Errorf("in-flight request on the replaced backend: %q, want done", got)
			}
			sharedtest.Eventually(t, "the drained backend to close", func() bool {
				resp, err := get(t, old, t.Context())
				if err == nil {
					_ = resp.Body.Close()
				}
				return errType(err) == string(wire.ErrBackendClosed)
			})
			if tt.name == "removed" && testutil.CollectAndCount(reg, "kedge_backend_endpoints") != 0 {
				t.Error("endpoints gauge of a removed backend was not deleted")
			}
		})
	}
}

func TestDrainIsBounded(t *testing.T) {
	t.Parallel()
	host, port, started, _ := blockingServer(t)
	p, _ := newTestPool(t, sharedtest.NewResolver(nil), Options{DrainTimeout: 100 * time.Millisecond})
	if err := p.Update([]Spec{hostSpec("b", host, port)}); err != nil {
		t.Fatal(err)
	}
	rt, _ := p.HTTP("b")
	done := inFlight(t, rt)
	<-started
	if err := p.Update(nil); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		if !strings.HasPrefix(got, "error") {
			t.Errorf("request outliving the drain bound: %q, want an error", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drain bound not enforced")
	}
}

func TestUpdateErrorsChangeNothing(t *testing.T) {
	t.Parallel()
	p, _ := newTestPool(t, sharedtest.NewResolver(nil), Options{})
	good := hostSpec("good", "127.0.0.1", 1)
	if err := p.Update([]Spec{good}); err != nil {
		t.Fatal(err)
	}
	rt, _ := p.HTTP("good")
	badCA := hostSpec("badca", "127.0.0.1", 1)
	badCA.TLS = TLS{Enabled: true, CAFile: filepath.Join(t.TempDir(), "missing.pem")}
	k8s := Spec{Name: "kube", Protocol: GRPC, Resolver: Resolver{Kind: ResolverK8s, K8sTarget: "svc.ns:80"}}
	certOnly := hostSpec("certonly", "127.0.0.1", 1)
	certOnly.TLS = TLS{Enabled: true, CertFile: "x.pem"}
	tests := []struct {
		name  string
		specs []Spec
		want  string
	}{
		{"unreadable CA", []Spec{badCA}, `http backend "badca": reading CA file`},
		{"k8s without source", []Spec{k8s}, `grpc backend "kube": the k8s resolver is not available`},
		{"cert without key", []Spec{certOnly}, `"certonly": a client certificate needs both`},
		{"duplicate", []Spec{good, good}, `"good" is defined twice`},
	}
	for _, tt := range tests {
		err := p.Update(tt.specs)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Update error %v, want it to contain %q", tt.name, err, tt.want)
		}
		if cur, ok := p.HTTP("good"); !ok || cur != rt {
			t.Errorf("%s: a failed Update changed the running backends", tt.name)
		}
	}
}

func TestPoolCloseAndSnapshot(t *testing.T) {
	t.Parallel()
	host, port, started, _ := blockingServer(t)
	p := NewPool(Deps{Log: logging.Discard(), Registerer: prometheus.NewRegistry(), DNS: sharedtest.NewResolver(nil)})
	specs := []Spec{hostSpec("b", host, port), hostSpec("a", host, port)}
	if err := p.Update(specs); err != nil {
		t.Fatal(err)
	}
	rt, _ := p.HTTP("b")
	st := p.Snapshot()
	if len(st) != 2 || st[0].Name != "a" || st[1].Name != "b" || st[0].Spec != specs[1] {
		t.Errorf("snapshot %+v, want a then b with their specs", st)
	}
	done := inFlight(t, rt)
	<-started
	p.Close() // aborts requests in flight and waits for its goroutines
	if got := <-done; !strings.HasPrefix(got, "error") {
		t.Errorf("request in flight at Close: %q, want an error", got)
	}
	if err := p.Update(specs); err == nil {
		t.Error("Update after Close succeeded")
	}
	if _, ok := p.HTTP("b"); ok {
		t.Error("closed pool still serves backends")
	}
	p.Close() // idempotent
}

func TestTwoPoolsShareARegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	p1 := NewPool(Deps{Registerer: reg, DNS: sharedtest.NewResolver(nil)})
	p2 := NewPool(Deps{Registerer: reg, DNS: sharedtest.NewResolver(nil)})
	defer p1.Close()
	defer p2.Close()
	if err := errors.Join(p1.Update([]Spec{hostSpec("one", "127.0.0.1", 1)}), p2.Update([]Spec{hostSpec("two", "127.0.0.1", 1)})); err != nil {
		t.Fatal(err)
	}
	sharedtest.Eventually(t, "both gauges", func() bool { return testutil.CollectAndCount(reg, "kedge_backend_endpoints") == 2 })
}

func TestPoolKeepsEndpointsWhenDNSFails(t *testing.T) {
	t.Parallel()
	s := namedServer(t, "dns", nil)
	host, port := hostPort(t, s)
	dns := sharedtest.NewResolver(nil)
	dns.SetHost("svc.test", host)
	p, _ := newTestPool(t, dns, Options{ResolveInterval: time.Second})
	if err := p.Update([]Spec{hostSpec("d", "svc.test", port)}); err != nil {
		t.Fatal(err)
	}
	rt, _ := p.HTTP("d")
	if resp, err := get(t, rt, t.Context()); err != nil {
		t.Fatal(err)
	} else {
		_ = resp.Body.Close()
	}
	dns.Fail("svc.test", errors.New("SERVFAIL"))
	errs := p.metrics.resolverErrors.WithLabelValues("d", "host")
	sharedtest.Eventually(t, "a counted resolver error", func() bool { return testutil.ToFloat64(errs) >= 1 })
	resp, err := get(t, rt, t.Context())
	if err != nil {
		t.Fatalf("request after a DNS failure: %v, want the last good endpoints used", err)
	}
	_ = resp.Body.Close()
	if st := p.Snapshot(); len(st[0].Endpoints) != 1 {
		t.Errorf("endpoints after a DNS failure: %v", st[0].Endpoints)
	}
}
