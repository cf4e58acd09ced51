package backend

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// grpcServer starts a gRPC server with the health service on 127.0.0.1 and returns its address.
func grpcServer(t *testing.T, opts ...grpc.ServerOption) (string, *health.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String(), h
}

// checkPeer makes one unary call and returns the address that served it.
func checkPeer(t *testing.T, c healthpb.HealthClient) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		t.Fatalf("Check: %v", err)
	}
	return p.Addr.String()
}

func TestGRPCRoundRobinAndEndpointChange(t *testing.T) {
	t.Parallel()
	var addrs []string
	for range 3 {
		a, _ := grpcServer(t)
		addrs = append(addrs, a)
	}
	dns := sharedtest.NewResolver(nil)
	dns.SetSRV("_grpc._tcp.g.test", srvOf(t, dns, "g", addrs...)...)
	p, _ := newTestPool(t, dns, Options{ResolveInterval: time.Second})
	spec := srvSpec("g", GRPC, "_grpc._tcp.g.test")
	if err := p.Update([]Spec{spec}); err != nil {
		t.Fatal(err)
	}
	conn, ok := p.GRPC("g")
	if !ok {
		t.Fatal("backend g missing")
	}
	c := healthpb.NewHealthClient(conn)

	seen := map[string]int{}
	sharedtest.Eventually(t, "all three endpoints to serve", func() bool {
		seen[checkPeer(t, c)]++
		return len(seen) == 3
	})
	counts := map[string]int{}
	for range 30 {
		counts[checkPeer(t, c)]++
	}
	for _, a := range addrs {
		if counts[a] < 8 || counts[a] > 12 {
			t.Errorf("round robin over 30 calls: %v, want about 10 per endpoint", counts)
			break
		}
	}

	if err := p.Update([]Spec{spec}); err != nil {
		t.Fatal(err)
	}
	if again, _ := p.GRPC("g"); again != conn {
		t.Error("an unchanged spec got a new ClientConn")
	}

	dns.SetSRV("_grpc._tcp.g.test", srvOf(t, dns, "g", addrs[2])...)
	streak := 0
	sharedtest.Eventually(t, "calls to follow the endpoint change", func() bool {
		if checkPeer(t, c) == addrs[2] {
			streak++
		} else {
			streak = 0
		}
		return streak >= 10
	})
}

func TestGRPCTLSAndDrain(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	cert := ca.issue(t, false, "backend.test")
	addr, h := grpcServer(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	host, port, _ := net.SplitHostPort(addr)
	dns := sharedtest.NewResolver(nil)
	dns.SetHost("backend.test", host)
	p, _ := newTestPool(t, dns, Options{})
	spec := Spec{Name: "gt", Protocol: GRPC,
		Resolver: Resolver{Kind: ResolverHost, DNSName: "backend.test", Port: uint32(mustAtoi(t, port))},
		TLS:      TLS{Enabled: true, CAFile: ca.writeCA(t)}}
	if err := p.Update([]Spec{spec}); err != nil {
		t.Fatal(err)
	}
	old, _ := p.GRPC("gt")
	c := healthpb.NewHealthClient(old)
	checkPeer(t, c)

	// A stream open on the old conn survives the swap and the conn closes once it ends.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := c.Watch(ctx, &healthpb.HealthCheckRequest{Service: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	spec.TLS.ServerName = "backend.test"
	if err := p.Update([]Spec{spec}); err != nil {
		t.Fatal(err)
	}
	if cur, _ := p.GRPC("gt"); cur == old {
		t.Fatal("changed spec kept the old ClientConn")
	}
	h.SetServingStatus("svc", healthpb.HealthCheckResponse_SERVING)
	if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("stream on the draining conn: %v, %v; want SERVING", m, err)
	}
	if s := old.GetState(); s == connectivity.Shutdown {
		t.Fatal("old conn closed while a stream was open")
	}
	cancel()
	sharedtest.Eventually(t, "the old conn to close", func() bool { return old.GetState() == connectivity.Shutdown })
}

func TestGRPCNoEndpoints(t *testing.T) {
	t.Parallel()
	dns := sharedtest.NewResolver(nil)
	dns.Fail("gone.test", &net.DNSError{Err: "no such host", Name: "gone.test", IsNotFound: true})
	p, _ := newTestPool(t, dns, Options{})
	if err := p.Update([]Spec{{Name: "gone", Protocol: GRPC, Resolver: Resolver{Kind: ResolverHost, DNSName: "gone.test", Port: 1}}}); err != nil {
		t.Fatal(err)
	}
	conn, _ := p.GRPC("gone")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), `no resolved endpoints for backend "gone"`) {
		t.Errorf("call to an unresolvable backend: %v, want Unavailable naming the backend", err)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int(c-'0')
	}
	return n
}
