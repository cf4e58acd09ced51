package grpcproxy

import (
	"context"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// routingRoutes is shared by the routing tests; the last route is the service glob.
var routingRoutes = []route.GRPCRoute{
	{AuthorityHost: "b.example.com", Backend: "b"},
	{AuthorityHost: "nobackend.example.com", Backend: "missing"},
	{Metadata: map[string]string{"x-route": "c"}, Backend: "c"},
	{Service: "grpc.testing.TestService/Unary*", Backend: "a"},
}

func TestRouting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a", "b", "c"}})
	tests := []struct {
		name        string
		authority   string
		md          metadata.MD
		empty       bool // call EmptyCall, which only the authority and metadata routes match
		wantBackend string
		wantCode    codes.Code
		wantMsg     string
		wantErrType wire.ErrorType
	}{
		{name: "service glob", wantBackend: "a"},
		{name: "authority", authority: "b.example.com", wantBackend: "b"},
		{name: "authority with port", authority: "b.example.com:8444", wantBackend: "b"},
		{name: "metadata", md: metadata.Pairs("x-route", "c"), wantBackend: "c"},
		{name: "metadata wrong value", md: metadata.Pairs("x-route", "d"), wantBackend: "a"},
		{name: "unknown backend", authority: "nobackend.example.com", wantCode: codes.Unimplemented,
			wantMsg: "unknown backend", wantErrType: wire.ErrNoBackend},
		{name: "unknown route", empty: true, wantCode: codes.Unimplemented, wantMsg: "unknown route to service",
			wantErrType: wire.ErrNoRoute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := callCtx(t)
			if tt.md != nil {
				ctx = metadata.NewOutgoingContext(ctx, tt.md)
			}
			client := e.client(t, tt.authority)
			var err error
			var got string
			var trailer metadata.MD
			if tt.empty {
				_, err = client.EmptyCall(ctx, &testgrpc.Empty{}, grpc.Trailer(&trailer))
			} else {
				var resp *testgrpc.SimpleResponse
				resp, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Trailer(&trailer))
				got = resp.GetServerId()
			}
			if st := status.Convert(err); st.Code() != tt.wantCode || (tt.wantMsg != "" && st.Message() != tt.wantMsg) {
				t.Fatalf("status = %v %q, want %v %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
			if got != tt.wantBackend {
				t.Errorf("served by %q, want %q", got, tt.wantBackend)
			}
			if et := trailer.Get(wire.MetadataKedgeErrorType); tt.wantErrType != "" && (len(et) != 1 || et[0] != string(tt.wantErrType)) {
				t.Errorf("trailer %s = %q, want %q", wire.MetadataKedgeErrorType, et, tt.wantErrType)
			}
		})
	}
	// Errors made by kedge are counted by type; the no-route call has no backend.
	if got := sharedtest.MetricValue(t, e.reg, "kedge_proxy_errors_total", map[string]string{"backend": "missing", "type": string(wire.ErrNoBackend)}); got != 1 {
		t.Errorf("kedge_proxy_errors_total{no-backend} = %v, want 1", got)
	}
	if got := sharedtest.MetricValue(t, e.reg, "kedge_proxy_errors_total", map[string]string{"backend": "", "type": string(wire.ErrNoRoute)}); got != 1 {
		t.Errorf("kedge_proxy_errors_total{no-route} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.proxy.m.requests.WithLabelValues("a", "OK")); got != 2 {
		t.Errorf("kedge_grpc_requests_total{a,OK} = %v, want 2", got)
	}
}

func TestMetadataForwarding(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}})
	ctx := metadata.NewOutgoingContext(callCtx(t), metadata.Pairs(
		"proxy-authorization", "Bearer kedge-secret",
		"authorization", "Bearer backend-token",
		"x-custom", "v1",
		"x-custom", "v2",
		"x-blob-bin", "\x00\x01binary",
		// kedge-owned names are kedge's to set, as on the HTTP path; only the info-logs switch passes.
		"x-kedge-backend-name", "spoofed",
		"x-kedge-error-type", "spoofed",
		"x-kedge-identity", "spoofed",
		"x-kedge-info-logs", "1",
	))
	if _, err := e.client(t, "").UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	md := waitSeen(t, e.backends["a"]).md
	for _, k := range []string{"proxy-authorization", "x-kedge-backend-name", "x-kedge-error-type", "x-kedge-identity"} {
		if v := md.Get(k); len(v) != 0 {
			t.Errorf("backend saw %s %q", k, v)
		}
	}
	for k, want := range map[string]string{"authorization": "Bearer backend-token", "x-custom": "v1,v2", "x-blob-bin": "\x00\x01binary",
		"x-kedge-info-logs": "1"} {
		if got := strings.Join(md.Get(k), ","); got != want {
			t.Errorf("backend saw %s = %q, want %q", k, got, want)
		}
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}})
	generated := regexp.MustCompile(`^[0-9a-f]{32}$`)
	tests := []struct {
		name string
		sent string // "" sends none
		keep bool
	}{
		{name: "generated"},
		{name: "kept", sent: "winch-0f1e2d3c", keep: true},
		{name: "invalid replaced", sent: "has space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := callCtx(t)
			if tt.sent != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, wire.MetadataRequestID, tt.sent)
			}
			var header metadata.MD
			if _, err := e.client(t, "").UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&header)); err != nil {
				t.Fatalf("UnaryCall: %v", err)
			}
			got := header.Get(wire.MetadataRequestID)
			if len(got) != 1 {
				t.Fatalf("response header %s = %q, want one value", wire.MetadataRequestID, got)
			}
			switch {
			case tt.keep && got[0] != tt.sent:
				t.Errorf("request ID = %q, want the client's %q", got[0], tt.sent)
			case !tt.keep && !generated.MatchString(got[0]):
				t.Errorf("request ID = %q, want a generated one", got[0])
			}
			if seen := waitSeen(t, e.backends["a"]).md.Get(wire.MetadataRequestID); len(seen) != 1 || seen[0] != got[0] {
				t.Errorf("backend saw request ID %q, want %q", seen, got[0])
			}
			lines := e.log.callLines()
			if !containsLine(lines, logging.FieldRequestID, got[0]) {
				t.Errorf("no log line with request_id %q in %v", got[0], lines)
			}
		})
	}
}

func containsLine(lines []logLine, key string, value any) bool {
	for _, l := range lines {
		if l.kv[key] == value {
			return true
		}
	}
	return false
}

func TestBackendStatusPassesThrough(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}})
	tests := []struct {
		code codes.Code
		msg  string
	}{
		{codes.NotFound, "no such thing"},
		{codes.PermissionDenied, "backend says no: ünïcode % and\nnewline"},
		{codes.Internal, "failed proxying s2c: said the backend"},
		{codes.Unavailable, "backend overloaded"},
		{codes.Unauthenticated, "backend wants a token"},
		{codes.ResourceExhausted, "quota"},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			req := &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(tt.code), Message: tt.msg}}
			_, err := e.client(t, "").UnaryCall(callCtx(t), req)
			if st := status.Convert(err); st.Code() != tt.code || st.Message() != tt.msg {
				t.Errorf("status = %v %q, want %v %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
		})
	}
}

func TestDeadlinePropagates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}})
	start := time.Now()
	if _, err := e.client(t, "").UnaryCall(callCtx(t), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	seen := waitSeen(t, e.backends["a"])
	if !seen.hasDeadline {
		t.Fatal("backend saw no deadline")
	}
	if left := seen.deadline.Sub(start); left <= 0 || left > 10*time.Second+time.Second {
		t.Errorf("backend deadline %v after the call started, want within the client's 10s", left)
	}
}

func TestCancelReachesBackend(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: []route.GRPCRoute{{Backend: "a"}}, backends: []string{"a"}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := e.client(t, "").FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall: %v", err)
	}
	waitSeen(t, e.backends["a"])
	cancel()
	select {
	case err := <-e.backends["a"].ended:
		if err == nil {
			t.Error("backend stream ended without its context being done")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("backend stream did not end after the client cancelled")
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("client Recv after cancel = %v, want Canceled", err)
	}
	sharedtest.Eventually(t, "the log line of the cancelled call", func() bool {
		return containsLine(e.log.callLines(), "code", codes.Canceled.String())
	})
}

func TestBackendDown(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	down := dialPlain(t, addr)
	e := newEnv(t, envConfig{routes: []route.GRPCRoute{{Backend: "down"}}, conns: map[string]*grpc.ClientConn{"down": down}})
	_, err = e.client(t, "").UnaryCall(callCtx(t), &testgrpc.SimpleRequest{})
	if code := status.Code(err); code != codes.Unavailable {
		t.Fatalf("status = %v, want Unavailable", err)
	}
	if got := sharedtest.MetricValue(t, e.reg, "kedge_proxy_errors_total", map[string]string{"backend": "down", "type": string(wire.ErrNoConnection)}); got != 1 {
		t.Errorf("kedge_proxy_errors_total{down,%s} = %v, want 1", wire.ErrNoConnection, got)
	}
}

func TestLogAndMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}, reg: reg})
	client := e.client(t, "")
	if _, err := client.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	if _, err := client.EmptyCall(callCtx(t), &testgrpc.Empty{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("EmptyCall = %v, want Unimplemented", err)
	}

	lines := e.log.callLines()
	if len(lines) != 2 {
		t.Fatalf("got %d call log lines, want 2: %v", len(lines), lines)
	}
	ok := lines[0]
	want := map[string]any{
		logging.FieldGRPC:     "/grpc.testing.TestService/UnaryCall",
		"authority":           e.addr,
		logging.FieldRoute:    "a",
		"route_match":         "grpc.testing.TestService/Unary*",
		logging.FieldBackend:  "a",
		logging.FieldEndpoint: e.backends["a"].addr,
		"code":                "OK",
	}
	for k, v := range want {
		if ok.kv[k] != v {
			t.Errorf("log field %s = %v, want %v (line %v)", k, ok.kv[k], v, ok.kv)
		}
	}
	if ok.level != "info" {
		t.Errorf("log level = %s, want info", ok.level)
	}
	if d, isDur := ok.kv[logging.FieldDuration].(time.Duration); !isDur || d <= 0 {
		t.Errorf("log duration = %v, want a positive time.Duration", ok.kv[logging.FieldDuration])
	}
	if id, _ := ok.kv[logging.FieldRequestID].(string); id == "" {
		t.Error("log line has no request_id")
	}
	if bad := lines[1]; bad.kv["code"] != "Unimplemented" || bad.kv[logging.FieldErrorType] != string(wire.ErrNoRoute) {
		t.Errorf("no-route log line = %v", bad.kv)
	}

	if got := sharedtest.MetricValue(t, reg, "kedge_proxy_errors_total", map[string]string{"backend": "", "type": string(wire.ErrNoRoute)}); got != 1 {
		t.Errorf("shared kedge_proxy_errors_total{no-route} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.proxy.m.requests.WithLabelValues("", "Unimplemented")); got != 1 {
		t.Errorf("kedge_grpc_requests_total{'',Unimplemented} = %v, want 1", got)
	}
	n, err := testutil.GatherAndCount(reg, "kedge_grpc_requests_total", "kedge_grpc_request_duration_seconds", "kedge_proxy_errors_total")
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	if n != 5 { // requests{a,OK}, requests{"",Unimplemented}, duration{a}, duration{""}, errors{"",no-route}
		t.Errorf("gathered %d series, want 5", n)
	}
}

// TestClientReadError checks that a failure to read the client's message is reported with its own status, not
// an Internal error of the relay.
func TestClientReadError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}})
	big := &testgrpc.SimpleRequest{Payload: payload(strings.Repeat("x", 5<<20))} // over the server's 4 MiB limit
	_, err := e.client(t, "").UnaryCall(callCtx(t), big)
	if code := status.Code(err); code != codes.ResourceExhausted {
		t.Errorf("oversized request: %v, want ResourceExhausted", err)
	}
	// gRPC answers the client itself; the proxy's log line must tell the same story.
	sharedtest.Eventually(t, "the log line of the oversized call", func() bool { return len(e.log.callLines()) == 1 })
	if got := e.log.callLines()[0].kv["code"]; got != codes.ResourceExhausted.String() {
		t.Errorf("logged code %v, want ResourceExhausted", got)
	}
}

// TestStatusCodeLabelBounded checks that status codes outside gRPC's 17 cannot create metric series: grpc-go takes
// any number a backend (or an adhoc destination a client picked) sends as grpc-status, and passes it on.
func TestStatusCodeLabelBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}})
	client := e.client(t, "")
	for i := range 20 {
		code := codes.Code(1000 + i)
		req := &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(code), Message: "odd"}}
		if _, err := client.UnaryCall(callCtx(t), req); status.Code(err) != code {
			t.Fatalf("UnaryCall = %v, want the backend's code %d passed through", err, code)
		}
	}
	n, err := testutil.GatherAndCount(e.reg, "kedge_grpc_requests_total")
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	if n != 1 {
		t.Errorf("kedge_grpc_requests_total has %d series after 20 distinct out-of-range codes, want 1", n)
	}
	if got := testutil.ToFloat64(e.proxy.m.requests.WithLabelValues("a", codes.Unknown.String())); got != 20 {
		t.Errorf("kedge_grpc_requests_total{a,Unknown} = %v, want 20", got)
	}
}

// TestMalformedMethodRefused checks that only "/service/method" reaches routing: a method with more segments could
// match one route's service pattern and, at a backend behind a path-normalising sidecar, name another service
// ("/pkg.Public/x/../../pkg.Admin/Delete"); grpc-go itself only insists on the leading slash.
func TestMalformedMethodRefused(t *testing.T) {
	t.Parallel()
	// A backend that accepts any method and reports what it received.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		m, _ := grpc.MethodFromServerStream(ss)
		got <- m
		if err := ss.RecvMsg(&testgrpc.Empty{}); err != nil {
			return err
		}
		return ss.SendMsg(&testgrpc.Empty{})
	}))
	serve(t, srv, lis)
	e := newEnv(t, envConfig{
		routes: []route.GRPCRoute{{Service: "pkg.Public/*", Backend: "any"}},
		conns:  map[string]*grpc.ClientConn{"any": dialPlain(t, lis.Addr().String())},
	})
	cc := dialPlain(t, e.addr)
	call := func(method string) error {
		return cc.Invoke(callCtx(t), method, &testgrpc.Empty{}, &testgrpc.Empty{})
	}
	if err := call("/pkg.Public/Get"); err != nil {
		t.Fatalf("well-formed call: %v", err)
	}
	if m := <-got; m != "/pkg.Public/Get" {
		t.Fatalf("backend saw %q", m)
	}
	for _, method := range []string{
		"/pkg.Public/x/../../pkg.Admin/Delete",
		"/pkg.Public/./Get",
		"/pkg.Public//Get",
		"/pkg.Public/",
		"/pkg.Public/Get/",
		"/pkg.Public/G%65t",
		"pkg.Public/Get", // no leading slash (CVE-2026-33186): grpc-go's server refuses it first
	} {
		err := call(method)
		if code := status.Code(err); code != codes.Unimplemented {
			t.Errorf("%s: %v, want Unimplemented", method, err)
		}
		select {
		case m := <-got:
			t.Errorf("%s reached the backend as %q", method, m)
		default:
		}
	}
}

// TestContentSubtypePassesThrough checks that the client's content type reaches the backend as sent: kedge relays
// messages undecoded, so a codec it does not know (JSON, say) must keep its name on the way.
func TestContentSubtypePassesThrough(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: routingRoutes, backends: []string{"a"}})
	for _, tt := range []struct {
		opts []grpc.CallOption
		want string
	}{
		{nil, "application/grpc"},
		{[]grpc.CallOption{grpc.CallContentSubtype("proto")}, "application/grpc+proto"},
	} {
		if _, err := e.client(t, "").UnaryCall(callCtx(t), &testgrpc.SimpleRequest{}, tt.opts...); err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		if got := waitSeen(t, e.backends["a"]).md.Get("content-type"); len(got) != 1 || got[0] != tt.want {
			t.Errorf("backend saw content-type %v, want %q", got, tt.want)
		}
	}
}
