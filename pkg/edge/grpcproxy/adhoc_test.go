package grpcproxy

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/backend"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// adhocEnv is a proxy with no routes and adhoc rules for *.adhoc.test, in front of backend "adhoc", which the fake
// DNS gives the name svc.adhoc.test (127.0.0.1).
func adhocEnv(t *testing.T, guard backend.DialGuard, idle time.Duration) (*env, *testBackend, string) {
	t.Helper()
	b, _ := startBackend(t, "adhoc")
	_, port, _ := net.SplitHostPort(b.addr)
	e := newEnv(t, envConfig{
		adhoc: []route.Adhoc{
			{NamePattern: "*.adhoc.test", AllowedRanges: []route.PortRange{{From: 1024, To: 65535}}},
			{NamePattern: "*.replace.test", AllowedRanges: []route.PortRange{{From: 1024, To: 65535}},
				Replace: &route.NameReplace{Pattern: "absent", Substitution: "x"}},
			{NamePattern: "127.0.0.1", AllowedRanges: []route.PortRange{{From: 1024, To: 65535}}},
		},
		guard: guard,
		dns:   map[string][]string{"svc.adhoc.test": {"127.0.0.1"}},
		idle:  idle,
	})
	return e, b, port
}

func TestAdhoc(t *testing.T) {
	t.Parallel()
	allowLoopback := backend.DefaultDialGuard(netip.MustParsePrefix("127.0.0.0/8"))
	tests := []struct {
		name      string
		guard     backend.DialGuard
		authority func(port string) string
		wantCode  codes.Code
		wantMsg   string // substring
		wantCalls int64
		errType   wire.ErrorType
	}{
		{name: "loopback refused by default guard", authority: func(p string) string { return "svc.adhoc.test:" + p },
			wantCode: codes.PermissionDenied, wantMsg: "adhoc: destination svc.adhoc.test:", errType: wire.ErrForbidden},
		{name: "loopback allowed by prefix", guard: allowLoopback,
			authority: func(p string) string { return "svc.adhoc.test:" + p }, wantCalls: 1},
		{name: "port not allowed", guard: allowLoopback, authority: func(string) string { return "svc.adhoc.test:80" },
			wantCode: codes.InvalidArgument, wantMsg: "adhoc: port 80 is not allowed", errType: wire.ErrUnknownRouteError},
		{name: "replace fails", guard: allowLoopback, authority: func(p string) string { return "svc.replace.test:" + p },
			wantCode: codes.NotFound, wantMsg: "replace pattern", errType: wire.ErrUnknownRouteError},
		{name: "unresolvable", guard: allowLoopback, authority: func(p string) string { return "nxdomain.adhoc.test:" + p },
			wantCode: codes.Unavailable, wantMsg: "cannot resolve nxdomain.adhoc.test"},
		{name: "no rule", guard: allowLoopback, authority: func(p string) string { return "svc.other.test:" + p },
			wantCode: codes.Unimplemented, wantMsg: "unknown route to service", errType: wire.ErrNoRoute},
		{name: "loopback literal a rule names", authority: func(p string) string { return "127.0.0.1:" + p }, wantCalls: 1},
		{name: "loopback literal no rule names", authority: func(p string) string { return "127.0.0.2:" + p },
			wantCode: codes.Unimplemented, wantMsg: "unknown route to service", errType: wire.ErrNoRoute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, b, port := adhocEnv(t, tt.guard, 0)
			authority := tt.authority(port)
			resp, err := e.client(t, authority).UnaryCall(callCtx(t), &testgrpc.SimpleRequest{})
			st := status.Convert(err)
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantMsg) {
				t.Fatalf("status = %v %q, want %v containing %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
			if got := b.calls.Load(); got != tt.wantCalls {
				t.Errorf("backend got %d calls, want %d", got, tt.wantCalls)
			}
			if tt.wantCode == codes.OK {
				if resp.GetServerId() != "adhoc" {
					t.Errorf("served by %q, want adhoc", resp.GetServerId())
				}
				// The adhoc backend sees the destination as :authority (the original sent the method name).
				if got := waitSeen(t, b).md.Get(":authority"); len(got) != 1 || got[0] != authority {
					t.Errorf("backend :authority = %q, want %q", got, authority)
				}
			}
			if tt.errType != "" {
				backendLabel := admission.AdhocLabel
				if tt.errType == wire.ErrNoRoute {
					backendLabel = ""
				}
				if got := sharedtest.MetricValue(t, e.reg, "kedge_proxy_errors_total", map[string]string{"backend": backendLabel, "type": string(tt.errType)}); got != 1 {
					t.Errorf("kedge_proxy_errors_total{%q,%s} = %v, want 1", backendLabel, tt.errType, got)
				}
			}
		})
	}
}

// TestAdhocConnCache checks that adhoc calls to one destination share a connection, that an idle connection is
// closed, and that Close ends the pool.
func TestAdhocConnCache(t *testing.T) {
	t.Parallel()
	e, b, port := adhocEnv(t, backend.DefaultDialGuard(netip.MustParsePrefix("127.0.0.1/32")), 200*time.Millisecond)
	client := e.client(t, "svc.adhoc.test:"+port)
	for i := range 3 {
		if _, err := client.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if n := e.proxy.adhoc.len(); n != 1 {
			t.Fatalf("after call %d: %d cached adhoc connections, want 1", i, n)
		}
	}
	if got := b.calls.Load(); got != 3 {
		t.Errorf("backend got %d calls, want 3", got)
	}
	sharedtest.Eventually(t, "the idle adhoc connection to close", func() bool { return e.proxy.adhoc.len() == 0 })

	// A stream in flight keeps its connection past the idle timeout.
	stream, err := client.FullDuplexCall(callCtx(t))
	if err != nil {
		t.Fatalf("FullDuplexCall: %v", err)
	}
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload("x")}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Recv: %v", err)
	}
	time.Sleep(400 * time.Millisecond) // twice the idle timeout, with the stream open
	if n := e.proxy.adhoc.len(); n != 1 {
		t.Fatalf("adhoc connection with a stream open: %d cached, want 1 (closed although in use)", n)
	}
	if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload("y")}); err != nil {
		t.Fatalf("Send after the idle timeout: %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Recv after the idle timeout: %v", err)
	}

	e.proxy.Close()
	if _, err := stream.Recv(); err == nil {
		t.Error("stream on an adhoc connection survived Close")
	}
	_, err = client.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{})
	if code := status.Code(err); code != codes.Unavailable {
		t.Errorf("adhoc call after Close = %v, want Unavailable", err)
	}
	if n := e.proxy.adhoc.len(); n != 0 {
		t.Errorf("%d cached adhoc connections after Close, want 0", n)
	}
}

// TestAdhocPoolBounded checks that client-chosen adhoc destinations cannot grow the connection cache without bound:
// a full pool gives an idle connection's place to a new destination, and refuses one when every connection is busy.
func TestAdhocPoolBounded(t *testing.T) {
	t.Parallel()
	const max = 4
	a := newAdhocPool(backend.NewAdhocDialer(backend.Deps{DNS: sharedtest.NewResolver(nil)}, nil), time.Hour, max)
	t.Cleanup(a.close)
	target := func(i int) route.Target {
		return route.Target{Host: "svc" + strconv.Itoa(i) + ".adhoc.test", Port: 9000}
	}

	// Many destinations, each used once and released: the pool keeps at most max of them.
	for i := range 3 * max {
		_, release, err := a.get(target(i))
		if err != nil {
			t.Fatalf("get %d: %v", i, err)
		}
		release()
		if n := a.len(); n > max {
			t.Fatalf("after %d destinations: %d cached connections, want at most %d", i+1, n, max)
		}
	}

	// Every cached connection busy: a new destination is refused, a cached one still works.
	var releases []func()
	for i := range max {
		_, release, err := a.get(target(100 + i))
		if err != nil {
			t.Fatalf("busy get %d: %v", i, err)
		}
		releases = append(releases, release)
	}
	if _, _, err := a.get(target(200)); !errors.Is(err, errTooManyAdhoc) {
		t.Fatalf("get with a full, busy pool: %v, want errTooManyAdhoc", err)
	}
	_, release, err := a.get(target(100))
	if err != nil {
		t.Fatalf("get of a cached destination with a full pool: %v", err)
	}
	release()
	for _, r := range releases {
		r()
	}
	if _, release, err := a.get(target(200)); err != nil {
		t.Fatalf("get after releases: %v", err)
	} else {
		release()
	}
	if n := a.len(); n != max {
		t.Errorf("%d cached connections, want %d", n, max)
	}
}

// TestAdhocDialTimeout checks that adhoc calls connect with the timeout kedge was configured with
// (--backend_dial_timeout), as HTTP and CONNECT do: a destination that never answers the handshake fails the call
// after that long, not after a timeout of the gRPC proxy's own.
func TestAdhocDialTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	addr := unansweredAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	e := newEnv(t, envConfig{
		adhoc: []route.Adhoc{{NamePattern: "127.0.0.1", AllowedRanges: []route.PortRange{{From: 1024, To: 65535}}}},
		dial:  timeout,
	})
	start := time.Now()
	_, err := e.client(t, "127.0.0.1:"+port).UnaryCall(callCtx(t), &testgrpc.SimpleRequest{})
	took := time.Since(start)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("call to a destination that never answers: %v, want Unavailable", err)
	}
	// The bound is generous against a slow machine and still below the default timeout (2 s).
	if limit := backend.DefaultDialTimeout * 3 / 4; took >= limit {
		t.Errorf("call failed after %v, want less than %v with a %v dial timeout", took, limit, timeout)
	}
}

// unansweredAddr returns a loopback address whose TCP handshakes never complete: a listener with a backlog of zero
// whose one queued connection is never accepted, so the kernel drops further SYNs. It skips the test where the
// system completes handshakes anyway.
func unansweredAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), 0) }); err != nil || lerr != nil {
		t.Skipf("cannot shrink the listen backlog: %v %v", err, lerr)
	}
	// Fill the queue until a handshake times out.
	for range 4 {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 200*time.Millisecond)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return ln.Addr().String()
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
	}
	t.Skip("this system completes TCP handshakes beyond the listen backlog")
	return ""
}
