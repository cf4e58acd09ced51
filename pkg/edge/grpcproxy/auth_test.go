package grpcproxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

// authRoutes route by method: EmptyCall needs permission "deploy", StreamingOutputCall admits the client
// certificate robot.example.com, UnaryCall is open (global check only). UnimplementedService has no route.
var authRoutes = []route.GRPCRoute{
	{Backend: "b", Service: "grpc.testing.TestService/EmptyCall", RequiredPermissions: []string{"deploy"}},
	{Backend: "b", Service: "grpc.testing.TestService/StreamingOutputCall", AllowedIdentities: []string{"robot.example.com"}},
	{Backend: "b", Service: "grpc.testing.TestService/UnaryCall"},
}

// tlsEnv is a proxy served the two ways kedge serves gRPC: on a gRPC TLS port and through net/http on an HTTPS port.
type tlsEnv struct {
	ca             *testutil.CA
	grpcAddr, http string
	backend        *testBackend
	log            *recordLogger
	gateReg        *prometheus.Registry
}

func newTLSEnv(t *testing.T, auth *authn.Authenticator) *tlsEnv {
	t.Helper()
	e := &tlsEnv{ca: testutil.NewCA(t), log: &recordLogger{}, gateReg: prometheus.NewRegistry()}
	b, cc := startBackend(t, "b")
	e.backend = b
	table, err := route.NewGRPCTable(authRoutes, nil)
	if err != nil {
		t.Fatal(err)
	}
	var a authz.Authenticator
	if auth != nil {
		a = auth
	}
	gate, err := authz.NewGate(a, e.gateReg)
	if err != nil {
		t.Fatal(err)
	}
	adm, err := admission.New(gate, e.gateReg)
	if err != nil {
		t.Fatal(err)
	}
	p := New(Deps{Log: e.log, Routes: staticRoutes{table}, Backends: backendMap{"b": cc}, Admission: adm})
	t.Cleanup(p.Close)
	serverTLS := &tls.Config{
		Certificates: []tls.Certificate{e.ca.Server(t, "localhost")},
		ClientCAs:    e.ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
		NextProtos:   []string{"h2"},
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.grpcAddr = lis.Addr().String()
	serve(t, grpc.NewServer(append(p.ServerOptions(), grpc.Creds(credentials.NewTLS(serverTLS)))...), lis)

	viaHTTP := grpc.NewServer(p.ServerOptions()...)
	hs := httptest.NewUnstartedServer(viaHTTP)
	hs.EnableHTTP2 = true
	hs.TLS = serverTLS.Clone()
	hs.StartTLS()
	t.Cleanup(func() {
		hs.Close()
		viaHTTP.Stop()
	})
	e.http = hs.Listener.Addr().String()
	return e
}

// client dials addr with TLS, presenting cert (nil: none).
func (e *tlsEnv) client(t *testing.T, addr string, cert *tls.Certificate) testgrpc.TestServiceClient {
	t.Helper()
	return testgrpc.NewTestServiceClient(e.conn(t, addr, cert))
}

// conn dials addr with TLS, presenting cert (nil: none).
func (e *tlsEnv) conn(t *testing.T, addr string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// startAuthn runs an Authenticator for cfg until the test ends and waits until it is ready.
func startAuthn(t *testing.T, cfg authn.Config) *authn.Authenticator {
	t.Helper()
	a, err := authn.New(cfg, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, "authenticator ready", func() bool { return a.Ready() == nil })
	return a
}

func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "proxy-authorization", "Bearer "+token)
}

// callMethod makes the call named method ("empty", "unary", "stream", "unrouted") on cc and returns its error.
func callMethod(ctx context.Context, cc grpc.ClientConnInterface, method string) error {
	c := testgrpc.NewTestServiceClient(cc)
	switch method {
	case "empty":
		_, err := c.EmptyCall(ctx, &testgrpc.Empty{})
		return err
	case "unary":
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return err
	case "stream":
		s, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{
			ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}}})
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err != nil {
				if err.Error() == "EOF" {
					return nil
				}
				return err
			}
		}
	default:
		_, err := testgrpc.NewUnimplementedServiceClient(cc).UnimplementedCall(ctx, &testgrpc.Empty{})
		return err
	}
}

func TestOIDCOnBothPorts(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	auth := startAuthn(t, authn.Config{OIDC: &authn.OIDCConfig{
		IssuerURL: iss.URL(), ClientID: "kedge", PermsClaim: "perms", RequiredPerms: []string{"proxy"},
		HTTPClient: iss.HTTPClient(), KeyRefetchInterval: time.Millisecond,
	}})
	e := newTLSEnv(t, auth)
	sign := func(mutate func(map[string]any)) string {
		c := iss.Claims("kedge")
		c["perms"] = []string{"proxy"}
		if mutate != nil {
			mutate(c)
		}
		return iss.Sign(t, c)
	}
	valid := sign(nil)
	deployer := sign(func(c map[string]any) { c["perms"] = []string{"proxy", "deploy"} })
	robot := e.ca.Client(t, "robot", "robot.example.com")
	intruder := e.ca.Client(t, "intruder", "intruder.example.com")

	tests := []struct {
		name    string
		method  string
		token   string
		cert    *tls.Certificate
		code    codes.Code
		message string
	}{
		{"valid token", "unary", valid, nil, codes.OK, ""},
		{"no token", "unary", "", nil, codes.Unauthenticated, "no Proxy-Authorization header"},
		{"expired", "unary", sign(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }), nil, codes.Unauthenticated, "expired"},
		{"wrong audience", "unary", sign(func(c map[string]any) { c["aud"] = "other" }), nil, codes.Unauthenticated, "audience"},
		{"missing global permission", "unary", sign(func(c map[string]any) { c["perms"] = []string{"x"} }), nil, codes.PermissionDenied, "missing permission: one of [proxy]"},
		{"missing route permission", "empty", valid, nil, codes.PermissionDenied, "missing permission: one of [deploy]"},
		{"route permission present", "empty", deployer, nil, codes.OK, ""},
		{"no route, no token: Unauthenticated before Unimplemented", "unrouted", "", nil, codes.Unauthenticated, ""},
		{"no route, valid token", "unrouted", valid, nil, codes.Unimplemented, "unknown route"},
		{"allowed client certificate, no token", "stream", "", &robot, codes.OK, ""},
		{"other client certificate, no token", "stream", "", &intruder, codes.Unauthenticated, ""},
		{"other client certificate with a token", "stream", valid, &intruder, codes.PermissionDenied, "client certificate not allowed"},
	}
	for _, port := range []struct{ name, addr string }{{"grpc port", e.grpcAddr}, {"https port", e.http}} {
		t.Run(port.name, func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					err := callMethod(withToken(callCtx(t), tt.token), e.conn(t, port.addr, tt.cert), tt.method)
					st := status.Convert(err)
					if st.Code() != tt.code || !strings.Contains(st.Message(), tt.message) {
						t.Fatalf("status %v %q, want %v containing %q", st.Code(), st.Message(), tt.code, tt.message)
					}
					if tt.token != "" && strings.Contains(st.Message(), strings.Split(tt.token, ".")[2]) {
						t.Errorf("status message echoes the token: %q", st.Message())
					}
				})
			}
			t.Run("key rotation", func(t *testing.T) {
				iss.RotateKey(t)
				if _, err := e.client(t, port.addr, nil).UnaryCall(withToken(callCtx(t), sign(nil)), &testgrpc.SimpleRequest{}); err != nil {
					t.Fatalf("token signed by a new key: %v", err)
				}
			})
			t.Run("proxy-authorization is not forwarded", func(t *testing.T) {
				ctx := metadata.AppendToOutgoingContext(withToken(callCtx(t), valid), "authorization", "Bearer backend")
				for len(e.backend.seen) > 0 {
					<-e.backend.seen
				}
				if _, err := e.client(t, port.addr, nil).UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
					t.Fatal(err)
				}
				md := waitSeen(t, e.backend).md
				if v := md.Get("proxy-authorization"); len(v) != 0 {
					t.Errorf("backend saw proxy-authorization %q", v)
				}
				if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer backend" {
					t.Errorf("backend saw authorization %q, want it untouched", v)
				}
			})
		})
	}

	t.Run("audit log and metric", func(t *testing.T) {
		var allowed, denied bool
		for _, l := range e.log.callLines() {
			switch {
			case l.kv["decision"] == "allowed" && l.kv["reason"] == "permission deploy" &&
				l.kv["identity"] == "oidc:sub=user-1" && l.kv["backend"] == "b":
				allowed = true
			case l.kv["decision"] == "forbidden" && l.kv["reason"] == "missing permission: one of [deploy]" &&
				l.kv["error_type"] == "forbidden" && l.kv["code"] == "PermissionDenied":
				denied = true
			}
		}
		if !allowed || !denied {
			t.Errorf("audit lines missing (allowed %v, denied %v): %+v", allowed, denied, e.log.callLines())
		}
		if n := testutil.MetricValue(t, e.gateReg, "kedge_authz_decisions_total", map[string]string{"route": "b", "result": "forbidden"}); n < 6 {
			t.Errorf("forbidden decisions = %v, want >= 6", n)
		}
	})
}

func TestClientCertificateWithoutTokenAuth(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t, nil)
	robot := e.ca.Client(t, "robot", "robot.example.com")
	for _, port := range []struct{ name, addr string }{{"grpc port", e.grpcAddr}, {"https port", e.http}} {
		t.Run(port.name, func(t *testing.T) {
			if err := callMethod(callCtx(t), e.conn(t, port.addr, &robot), "stream"); err != nil {
				t.Errorf("allowed certificate: %v", err)
			}
			if err := callMethod(callCtx(t), e.conn(t, port.addr, nil), "stream"); status.Code(err) != codes.Unauthenticated {
				t.Errorf("no certificate on an identity route: %v, want Unauthenticated", err)
			}
			if err := callMethod(callCtx(t), e.conn(t, port.addr, &robot), "empty"); status.Code(err) != codes.PermissionDenied {
				t.Errorf("certificate on a permission route: %v, want PermissionDenied", err)
			}
			if err := callMethod(callCtx(t), e.conn(t, port.addr, nil), "unary"); err != nil {
				t.Errorf("open route: %v", err)
			}
		})
	}
}
