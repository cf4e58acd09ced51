package grpcproxy

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// forgingBackend answers every call with Unauthenticated and trailer and header metadata that pose as kedge's
// marker, as a backend (or an attacker controlling one) might.
func forgingBackend(t *testing.T) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		forged := metadata.Pairs(wire.MetadataKedgeErrorType, string(wire.ErrUnauthorized), wire.MetadataKedgeError, "forged", "x-kept", "yes")
		_ = ss.SendHeader(forged)
		ss.SetTrailer(forged)
		return status.Error(codes.Unauthenticated, "backend wants a token")
	}))
	serve(t, srv, lis)
	return dialPlain(t, lis.Addr().String())
}

// TestKedgeErrorMarker checks that every error kedge makes carries x-kedge-error-type (and x-kedge-error) trailer
// metadata, and that no backend status does, even when the backend sends that metadata itself.
func TestKedgeErrorMarker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{
		routes: []route.GRPCRoute{
			{AuthorityHost: "nobackend.example.com", Backend: "missing"},
			{AuthorityHost: "forger.example.com", Backend: "forger"},
			{Service: "grpc.testing.TestService/*", Backend: "a"},
		},
		adhoc:    []route.Adhoc{{NamePattern: "*.adhoc.test", AllowedRanges: []route.PortRange{{From: 1024, To: 65535}}}},
		backends: []string{"a"},
		conns:    map[string]*grpc.ClientConn{"forger": forgingBackend(t)},
		dns:      map[string][]string{"svc.adhoc.test": {"127.0.0.1"}},
	})
	tests := []struct {
		name      string
		authority string
		method    string // default: UnaryCall
		req       *testgrpc.SimpleRequest
		code      codes.Code
		errType   wire.ErrorType // "" means: no marker
	}{
		{name: "backend OK", code: codes.OK},
		{name: "backend Unauthenticated", req: &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{
			Code: int32(codes.Unauthenticated), Message: "backend wants a token"}}, code: codes.Unauthenticated},
		{name: "backend Unavailable", req: &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{
			Code: int32(codes.Unavailable), Message: "overloaded"}}, code: codes.Unavailable},
		{name: "backend forges the marker", authority: "forger.example.com", code: codes.Unauthenticated},
		{name: "no route", method: "/other.Service/Call", code: codes.Unimplemented, errType: wire.ErrNoRoute},
		{name: "unknown backend", authority: "nobackend.example.com", code: codes.Unimplemented, errType: wire.ErrNoBackend},
		{name: "malformed method", method: "/grpc.testing.TestService/x/../UnaryCall", code: codes.Unimplemented, errType: wire.ErrBadRequest},
		{name: "adhoc port refused", authority: "svc.adhoc.test:80", method: "/other.Service/Call", code: codes.InvalidArgument,
			errType: wire.ErrUnknownRouteError},
		{name: "adhoc address refused", authority: "svc.adhoc.test:" + portOf(e.backends["a"].addr), method: "/other.Service/Call",
			code: codes.PermissionDenied, errType: wire.ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var opts []grpc.DialOption
			if tt.authority != "" {
				opts = append(opts, grpc.WithAuthority(tt.authority))
			}
			cc := dialPlain(t, e.addr, opts...)
			method, req := tt.method, tt.req
			if method == "" {
				method = "/grpc.testing.TestService/UnaryCall"
			}
			if req == nil {
				req = &testgrpc.SimpleRequest{}
			}
			var header, trailer metadata.MD
			err := cc.Invoke(callCtx(t), method, req, &testgrpc.SimpleResponse{}, grpc.Header(&header), grpc.Trailer(&trailer))
			if code := status.Code(err); code != tt.code {
				t.Fatalf("status %v, want %v", err, tt.code)
			}
			checkMarker(t, trailer, tt.errType, status.Convert(err).Message())
			if v := header.Get(wire.MetadataKedgeErrorType); len(v) != 0 {
				t.Errorf("header metadata carries %s %q", wire.MetadataKedgeErrorType, v)
			}
			if tt.authority == "forger.example.com" && len(trailer.Get("x-kept")) != 1 {
				t.Errorf("the backend's other trailer metadata was lost: %v", trailer)
			}
		})
	}
}

func checkMarker(t *testing.T, trailer metadata.MD, want wire.ErrorType, msg string) {
	t.Helper()
	gotType, gotMsg := trailer.Get(wire.MetadataKedgeErrorType), trailer.Get(wire.MetadataKedgeError)
	if want == "" {
		if len(gotType) != 0 || len(gotMsg) != 0 {
			t.Errorf("a backend status carries kedge's marker: %s=%q %s=%q", wire.MetadataKedgeErrorType, gotType,
				wire.MetadataKedgeError, gotMsg)
		}
		return
	}
	if len(gotType) != 1 || gotType[0] != string(want) {
		t.Errorf("%s = %q, want %q", wire.MetadataKedgeErrorType, gotType, want)
	}
	if len(gotMsg) != 1 || gotMsg[0] != metadataValue(msg) {
		t.Errorf("%s = %q, want %q", wire.MetadataKedgeError, gotMsg, msg)
	}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}

// TestKedgeErrorMarkerOnAuthRefusals checks the marker on the refusals of the Gate, on both ways kedge serves gRPC.
func TestKedgeErrorMarkerOnAuthRefusals(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t, startAuthn(t, authn.Config{StaticToken: "secret"}))
	tests := []struct {
		name    string
		token   string
		method  string
		code    codes.Code
		errType wire.ErrorType
	}{
		{"no token", "", "unary", codes.Unauthenticated, wire.ErrUnauthorized},
		{"wrong token", "wrong", "unary", codes.Unauthenticated, wire.ErrUnauthorized},
		{"no token, no route", "", "unrouted", codes.Unauthenticated, wire.ErrUnauthorized},
		{"valid token, route permission missing", "secret", "empty", codes.PermissionDenied, wire.ErrForbidden},
		{"valid token", "secret", "unary", codes.OK, ""},
	}
	for _, port := range []struct{ name, addr string }{{"grpc port", e.grpcAddr}, {"https port", e.http}} {
		for _, tt := range tests {
			t.Run(port.name+"/"+tt.name, func(t *testing.T) {
				var trailer metadata.MD
				err := callMethod(withToken(callCtx(t), tt.token), trailerConn{e.conn(t, port.addr, nil), &trailer}, tt.method)
				if code := status.Code(err); code != tt.code {
					t.Fatalf("status %v, want %v", err, tt.code)
				}
				checkMarker(t, trailer, tt.errType, status.Convert(err).Message())
			})
		}
	}
}

// trailerConn records the trailer metadata of the calls made on it.
type trailerConn struct {
	*grpc.ClientConn
	trailer *metadata.MD
}

func (c trailerConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return c.ClientConn.Invoke(ctx, method, args, reply, append(opts, grpc.Trailer(c.trailer))...)
}
