package grpcforward_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/grpcforward"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeKedge is a real gRPC server over TLS standing in for kedge: it serves TestService itself (recording the
// metadata and :authority it saw), counts accepted connections and, when valid is set, rejects calls whose
// proxy-authorization is not "bearer <one of valid>" with Unauthenticated and kedge's x-kedge-error-type trailer, as
// kedge does.
type fakeKedge struct {
	*testutil.GRPCBackend
	url      string
	conns    atomic.Int64
	valid    map[string]bool
	rejected atomic.Int64 // calls refused as Unauthenticated
}

func newFakeKedge(t *testing.T, cert tls.Certificate, valid ...string) *fakeKedge {
	t.Helper()
	k := &fakeKedge{}
	if len(valid) > 0 {
		k.valid = map[string]bool{}
		for _, v := range valid {
			k.valid[v] = true
		}
	}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	k.GRPCBackend = testutil.NewGRPCBackend(t, "kedge", grpc.Creds(creds), grpc.StatsHandler(connCounter{&k.conns}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := k.auth(ctx); err != nil {
				_ = grpc.SetTrailer(ctx, kedgeMarker)
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := k.auth(ss.Context()); err != nil {
				ss.SetTrailer(kedgeMarker)
				return err
			}
			return h(srv, ss)
		}))
	_, port, _ := net.SplitHostPort(k.Addr)
	k.url = "https://localhost:" + port
	return k
}

// kedgeMarker is the trailer metadata kedge adds to its own refusals of the proxy token.
var kedgeMarker = metadata.Pairs(wire.MetadataKedgeErrorType, string(wire.ErrUnauthorized), wire.MetadataKedgeError, "provided bearer token is invalid")

func (k *fakeKedge) auth(ctx context.Context) error {
	if k.valid == nil {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get("proxy-authorization")
	if len(v) == 0 || !strings.HasPrefix(v[0], "bearer ") || !k.valid[strings.TrimPrefix(v[0], "bearer ")] {
		k.rejected.Add(1)
		return status.Error(codes.Unauthenticated, "provided bearer token is invalid")
	}
	return nil
}

type connCounter struct{ n *atomic.Int64 }

func (c connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (c connCounter) HandleRPC(context.Context, stats.RPCStats)                         {}
func (c connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (c connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnBegin); ok {
		c.n.Add(1)
	}
}

type tokenSource struct {
	mu          sync.Mutex
	tokens      []string
	err         error
	next        int
	invalidated []string
}

func (s *tokenSource) Token(context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return "", s.err
	}
	return s.tokens[min(s.next, len(s.tokens)-1)], nil
}

func (s *tokenSource) Invalidate(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.invalidated = append(s.invalidated, tok)
	if s.tokens[min(s.next, len(s.tokens)-1)] == tok {
		s.next++
	}
}

func (s *tokenSource) Invalidated() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.invalidated...)
}

// startWinch runs the proxy on a real gRPC server and returns a function that dials it with an authority.
func startWinch(t *testing.T, ca *testutil.CA, routes []mapper.Route, srcs map[string]grpcforward.TokenSource) func(authority string) testpb.TestServiceClient {
	t.Helper()
	p := grpcforward.New(grpcforward.Deps{
		Log:      logging.Discard(),
		Routes:   mapper.New(routes),
		KedgeTLS: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12},
		Sources: func(name string) (grpcforward.TokenSource, bool) {
			s, ok := srcs[name]
			return s, ok
		},
	})
	srv := grpc.NewServer(p.ServerOptions()...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		<-done
		if err := p.Close(); err != nil {
			t.Errorf("closing the proxy: %v", err)
		}
	})
	return func(authority string) testpb.TestServiceClient {
		cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority(authority))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return testpb.NewTestServiceClient(cc)
	}
}

func staticSource(tok string) *tokenSource { return &tokenSource{tokens: []string{tok}} }

func TestUnaryAndStreamingOverOneKedgeConnection(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	k := newFakeKedge(t, ca.Server(t, "localhost"), "proxy-token")
	dial := startWinch(t, ca, []mapper.Route{
		{Direct: "svc.example.com:443", URL: k.url, ProxyAuth: "proxy", BackendAuth: "backend"},
	}, map[string]grpcforward.TokenSource{"proxy": staticSource("proxy-token"), "backend": staticSource("backend-token")})
	client := dial("svc.example.com:443")
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "bearer client-token", "x-custom", "kept")

	for i := range 100 {
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if len(resp.GetPayload().GetBody()) != 10 {
			t.Fatalf("call %d: payload %d bytes", i, len(resp.GetPayload().GetBody()))
		}
	}
	md := k.LastMetadata()
	want := map[string]string{
		":authority":          "svc.example.com:443",
		"proxy-authorization": "bearer proxy-token",
		"authorization":       "bearer backend-token",
		"x-custom":            "kept",
	}
	for key, v := range want {
		if got := md.Get(key); len(got) != 1 || got[0] != v {
			t.Errorf("kedge saw %s = %q, want %q", key, got, v)
		}
	}
	if id := md.Get("x-kedge-request-id"); len(id) != 1 || !strings.HasPrefix(id[0], "winch-") {
		t.Errorf("kedge saw request id %q", id)
	}

	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i + 1)}}}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv %d: %v", i, err)
		}
		if len(resp.GetPayload().GetBody()) != i+1 {
			t.Fatalf("recv %d: payload %d bytes", i, len(resp.GetPayload().GetBody()))
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
	if hdr, err := stream.Header(); err != nil || len(hdr.Get("x-backend")) != 1 {
		t.Errorf("header metadata did not come through: %v, %v", hdr, err)
	}
	if tr := stream.Trailer(); len(tr.Get("x-trailer")) != 1 {
		t.Errorf("trailer metadata did not come through: %v", tr)
	}
	if n := k.conns.Load(); n != 1 {
		t.Errorf("kedge accepted %d connections for 101 calls, want 1", n)
	}
}

func TestCallErrors(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	k := newFakeKedge(t, ca.Server(t, "localhost"))
	_, kport, _ := net.SplitHostPort(k.Addr)
	dial := startWinch(t, ca, []mapper.Route{
		{Direct: "error.ext.example.com", URL: k.url, BackendAuth: "error-dummy"},
		{Direct: "noauth.ext.example.com", URL: k.url},
		{Direct: "http-only.ext.example.com", URL: k.url, Protocol: mapper.ProtocolHTTP},
		// The certificate names localhost only: verification against 127.0.0.1 must fail.
		{Direct: "wrong-name.ext.example.com", URL: "https://127.0.0.1:" + kport},
	}, map[string]grpcforward.TokenSource{"error-dummy": &tokenSource{err: errors.New("Error dummy auth source. No TokenValue specified")}})

	tests := []struct {
		authority string
		code      codes.Code
		msg       string
	}{
		{"resourceXXX.ext.example.com", codes.Unimplemented, ":authority resourceXXX.ext.example.com is not a kedge destination; a client of winch's gRPC port must set :authority"},
		{"http-only.ext.example.com", codes.Unimplemented, "http-only.ext.example.com is not a kedge destination"},
		{"error.ext.example.com", codes.Internal, "transport: cannot get token: Error dummy auth source. No TokenValue specified"},
		{"127.0.0.1:" + kport, codes.InvalidArgument, `:authority "127.0.0.1:` + kport + `": `},
		{"127.0.0.1:" + kport, codes.InvalidArgument, "IP address"},
		{"127.0.0.1:" + kport, codes.InvalidArgument, "(grpcurl -authority svc.example.com:443"},
		{"wrong-name.ext.example.com", codes.Unavailable, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.authority, func(t *testing.T) {
			_, err := dial(tt.authority).EmptyCall(t.Context(), &testpb.Empty{})
			st := status.Convert(err)
			if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("got %v, want code %v with %q", err, tt.code, tt.msg)
			}
		})
	}
	t.Run("client authorization passes when the route injects none", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "bearer test-token", "proxy-authorization", "bearer for-winch",
			"grpc-previous-rpc-attempts", "3", "grpc-retry-pushback-ms", "10")
		if _, err := dial("noauth.ext.example.com").EmptyCall(ctx, &testpb.Empty{}); err != nil {
			t.Fatal(err)
		}
		md := k.LastMetadata()
		if got := md.Get("authorization"); len(got) != 1 || got[0] != "bearer test-token" {
			t.Errorf("authorization %q", got)
		}
		// Neither the client's credential for winch nor its retry bookkeeping with winch reaches kedge.
		for _, key := range []string{"proxy-authorization", "grpc-previous-rpc-attempts", "grpc-retry-pushback-ms"} {
			if got := md.Get(key); len(got) != 0 {
				t.Errorf("the client's %s reached kedge: %q", key, got)
			}
		}
	})
	if n := k.Calls(); n != 1 {
		t.Errorf("kedge saw %d calls, want only the successful one", n)
	}
}

func TestReplayAfterUnauthenticated(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	k := newFakeKedge(t, ca.Server(t, "localhost"), "fresh-unary", "fresh-stream", "fresh-bidi")
	srcs := map[string]grpcforward.TokenSource{
		"unary":  &tokenSource{tokens: []string{"stale", "fresh-unary"}},
		"stream": &tokenSource{tokens: []string{"stale", "fresh-stream"}},
		"bidi":   &tokenSource{tokens: []string{"stale", "fresh-bidi"}},
		"stuck":  staticSource("refused"), // Invalidate gives no fresher token (a source within its refresh limit)
	}
	dial := startWinch(t, ca, []mapper.Route{
		{Direct: "unary.example.com", URL: k.url, ProxyAuth: "unary"},
		{Direct: "stream.example.com", URL: k.url, ProxyAuth: "stream"},
		{Direct: "bidi.example.com", URL: k.url, ProxyAuth: "bidi"},
		{Direct: "stuck.example.com", URL: k.url, ProxyAuth: "stuck"},
	}, srcs)

	t.Run("unary is replayed", func(t *testing.T) {
		resp, err := dial("unary.example.com").UnaryCall(t.Context(), &testpb.SimpleRequest{ResponseSize: 3})
		if err != nil {
			t.Fatalf("unary call after a stale token: %v", err)
		}
		if len(resp.GetPayload().GetBody()) != 3 {
			t.Errorf("payload %d bytes", len(resp.GetPayload().GetBody()))
		}
		if got := srcs["unary"].(*tokenSource).Invalidated(); len(got) != 1 || got[0] != "stale" {
			t.Errorf("invalidated %v", got)
		}
	})
	t.Run("server streaming is replayed", func(t *testing.T) {
		stream, err := dial("stream.example.com").StreamingOutputCall(t.Context(), &testpb.StreamingOutputCallRequest{
			ResponseParameters: []*testpb.ResponseParameters{{Size: 1}, {Size: 2}}})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("recv %d: %v", i, err)
			}
		}
	})
	t.Run("no replay with the same token", func(t *testing.T) {
		before := k.rejected.Load()
		_, err := dial("stuck.example.com").UnaryCall(t.Context(), &testpb.SimpleRequest{ResponseSize: 3})
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("unary call with a refused token: %v, want Unauthenticated", err)
		}
		if n := k.rejected.Load() - before; n != 1 {
			t.Errorf("kedge saw the call %d times; replaying it with the token it refused is pointless", n)
		}
	})
	t.Run("open bidi stream is not replayed, the next call heals", func(t *testing.T) {
		client := dial("bidi.example.com")
		stream, err := client.FullDuplexCall(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			_ = stream.Send(&testpb.StreamingOutputCallRequest{})
		}
		if _, err := stream.Recv(); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("recv: %v, want kedge's Unauthenticated", err)
		}
		if _, err := client.EmptyCall(t.Context(), &testpb.Empty{}); err != nil {
			t.Fatalf("next call with the fresh token: %v", err)
		}
	})
}

// TestBackendUnauthenticatedKeepsToken checks that an Unauthenticated without kedge's marker (the backend refused
// the call, or something between posed as kedge without the trailer) neither drops the proxy token nor replays the
// call: the backend sees it once and the client gets the backend's status.
func TestBackendUnauthenticatedKeepsToken(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	k := newFakeKedge(t, ca.Server(t, "localhost"), "good", "fresh")
	src := &tokenSource{tokens: []string{"good", "fresh"}}
	dial := startWinch(t, ca, []mapper.Route{{Direct: "svc.example.com", URL: k.url, ProxyAuth: "proxy"}},
		map[string]grpcforward.TokenSource{"proxy": src})
	client := dial("svc.example.com")

	tests := []struct {
		name string
		call func(ctx context.Context, st *testpb.EchoStatus) error
	}{
		{"unary", func(ctx context.Context, st *testpb.EchoStatus) error {
			_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: st})
			return err
		}},
		{"server streaming", func(ctx context.Context, st *testpb.EchoStatus) error {
			stream, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseStatus: st})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := k.Calls()
			err := tt.call(t.Context(), &testpb.EchoStatus{Code: int32(codes.Unauthenticated), Message: "backend wants a token"})
			if st := status.Convert(err); st.Code() != codes.Unauthenticated || st.Message() != "backend wants a token" {
				t.Fatalf("got %v, want the backend's Unauthenticated", err)
			}
			if n := k.Calls() - before; n != 1 {
				t.Errorf("the backend saw the call %d times, want 1 (no replay)", n)
			}
			if got := src.Invalidated(); len(got) != 0 {
				t.Errorf("the proxy token was invalidated after a backend's Unauthenticated: %v", got)
			}
			if md := k.LastMetadata(); len(md.Get("proxy-authorization")) != 1 || md.Get("proxy-authorization")[0] != "bearer good" {
				t.Errorf("kedge saw proxy-authorization %q, want the cached token", md.Get("proxy-authorization"))
			}
		})
	}
}

// TestIdleKedgeConnectionClosed checks that a kedge connection no call uses is closed after the idle timeout (which
// is how connections to kedges removed by a mapper reload go), that a call in progress keeps it open, and that the
// next call dials again.
func TestIdleKedgeConnectionClosed(t *testing.T) {
	t.Parallel()
	const idle = 50 * time.Millisecond
	ca := testutil.NewCA(t)
	k := newFakeKedge(t, ca.Server(t, "localhost"))
	reg := prometheus.NewRegistry()
	p := grpcforward.New(grpcforward.Deps{
		Registerer:  reg,
		Routes:      mapper.New([]mapper.Route{{Direct: "svc.example.com", URL: k.url}}),
		KedgeTLS:    &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12},
		IdleTimeout: idle,
	})
	srv := grpc.NewServer(p.ServerOptions()...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Stop()
		<-done
		if err := p.Close(); err != nil {
			t.Errorf("closing the proxy: %v", err)
		}
	})
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority("svc.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	client := testpb.NewTestServiceClient(cc)
	conns := func() float64 {
		return testutil.MetricValue(t, reg, "winch_grpc_kedge_connections", nil)
	}
	waitConns := func(want float64) {
		t.Helper()
		testutil.Eventually(t, fmt.Sprintf("winch_grpc_kedge_connections = %v", want), func() bool { return conns() == want })
	}

	stream, err := client.FullDuplexCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	echo := func() {
		t.Helper()
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1}}}); err != nil {
			t.Fatalf("send: %v", err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("recv: %v", err)
		}
	}
	echo()
	// Not synchronisation: several idle timeouts pass while the stream is open, and it must survive them.
	time.Sleep(4 * idle)
	echo()
	if n := conns(); n != 1 {
		t.Fatalf("winch_grpc_kedge_connections = %v while a stream is open, want 1", n)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
	waitConns(0)

	if _, err := client.EmptyCall(t.Context(), &testpb.Empty{}); err != nil {
		t.Fatalf("call after the idle connection was closed: %v", err)
	}
	if n := k.conns.Load(); n != 2 {
		t.Errorf("kedge accepted %d connections, want 2 (one before and one after the idle close)", n)
	}
	waitConns(0)
}
