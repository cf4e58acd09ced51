package authz

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// peerOf returns the TLS state of a client whose certificate verified.
func peerOf(t *testing.T, c tls.Certificate) *tls.ConnectionState {
	t.Helper()
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}}
}

func TestGate(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	robot := peerOf(t, ca.Client(t, "robot", "robot.example.com"))
	static, err := authn.New(authn.Config{StaticToken: "t0ken"}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	perms := Requirement{Permissions: []string{"deploy"}}
	robots := Requirement{Identities: []string{"robot.example.com"}}

	tests := []struct {
		name     string
		auth     Authenticator // nil: no token authentication
		req      Request
		result   string
		reason   string // substring of Reason()
		identity string // Identity.String()
	}{
		{name: "no auth, open route", req: Request{Route: "web", Routed: true}, result: ResultAllowed,
			reason: "no credentials required", identity: "anonymous"},
		{name: "no auth, cert on identity route", req: Request{Route: "web", Routed: true, Requirement: robots, Peer: robot},
			result: ResultAllowed, reason: "client certificate robot.example.com", identity: "cert:CN=robot"},
		{name: "no auth, permission route, anonymous", req: Request{Route: "web", Routed: true, Requirement: perms},
			result: ResultUnauthenticated, reason: "credentials required"},
		{name: "no auth, permission route, cert", req: Request{Route: "web", Routed: true, Requirement: perms, Peer: robot},
			result: ResultForbidden, reason: "missing permission: one of [deploy]"},
		{name: "token, valid", auth: static, req: Request{Route: "web", Routed: true, Credentials: []string{"Bearer t0ken"}},
			result: ResultAllowed, reason: "authenticated", identity: "static-token"},
		{name: "token, missing", auth: static, req: Request{Route: "web", Routed: true}, result: ResultUnauthenticated,
			reason: "no Proxy-Authorization header"},
		{name: "token, wrong", auth: static, req: Request{Route: "web", Routed: true, Credentials: []string{"Bearer nope"}},
			result: ResultUnauthenticated, reason: "bearer token is invalid"},
		{name: "token, twice", auth: static, req: Request{Route: "web", Routed: true,
			Credentials: []string{"Bearer t0ken", "Bearer t0ken"}}, result: ResultUnauthenticated, reason: "more than one"},
		{name: "token, static token has no permissions", auth: static, req: Request{Route: "web", Routed: true,
			Requirement: perms, Credentials: []string{"Bearer t0ken"}}, result: ResultForbidden, reason: "missing permission"},
		{name: "token auth, no token, allowed cert", auth: static, req: Request{Route: "web", Routed: true,
			Requirement: robots, Peer: robot}, result: ResultAllowed, reason: "client certificate", identity: "cert:CN=robot"},
		{name: "token auth, no token, cert not allowed", auth: static, req: Request{Route: "web", Routed: true,
			Requirement: Requirement{Identities: []string{"other"}}, Peer: robot}, result: ResultUnauthenticated},
		{name: "unrouted, no token: 401 before no-route", auth: static, req: Request{Routed: false},
			result: ResultUnauthenticated, reason: "no Proxy-Authorization header"},
		{name: "unrouted, no token, cert: still 401", auth: static, req: Request{Routed: false, Peer: robot},
			result: ResultUnauthenticated},
		{name: "unrouted, valid token: the routing error follows", auth: static,
			req: Request{Routed: false, Credentials: []string{"Bearer t0ken"}}, result: ResultAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			g, err := NewGate(tt.auth, reg)
			if err != nil {
				t.Fatal(err)
			}
			d := g.Admit(t.Context(), tt.req)
			if d.Result() != tt.result || !strings.Contains(d.Reason(), tt.reason) || d.Allowed() != (tt.result == ResultAllowed) {
				t.Fatalf("decision %s (%q, err %v), want %s (%q)", d.Result(), d.Reason(), d.Err, tt.result, tt.reason)
			}
			if tt.identity != "" && d.Identity.String() != tt.identity {
				t.Errorf("identity %q, want %q", d.Identity.String(), tt.identity)
			}
			if strings.Contains(d.Reason(), "t0ken") || d.Err != nil && strings.Contains(d.Err.Error(), "t0ken") {
				t.Errorf("decision echoes the token: %q / %v", d.Reason(), d.Err)
			}
			want := 1.0
			if !tt.req.Routed && d.Allowed() {
				want = 0 // nothing was authorized: the routing error follows
			}
			if got := promtest.ToFloat64(g.decisions.WithLabelValues(tt.req.Route, d.Result())); got != want {
				t.Errorf("kedge_authz_decisions_total{route=%q,result=%q} = %v, want %v", tt.req.Route, d.Result(), got, want)
			}
		})
	}
}

func TestGateSharesMetricsOnOneRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a, err := NewGate(nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewGate(nil, reg)
	if err != nil {
		t.Fatalf("second gate on the same registry: %v", err)
	}
	a.Admit(t.Context(), Request{Route: "web", Routed: true})
	b.Admit(t.Context(), Request{Route: "web", Routed: true})
	if n := promtest.ToFloat64(a.decisions.WithLabelValues("web", ResultAllowed)); n != 2 {
		t.Errorf("shared counter = %v, want 2", n)
	}
	if _, err := NewGate(nil, failingRegisterer{}); err == nil {
		t.Error("NewGate ignored a registration error")
	}
}

type failingRegisterer struct{ prometheus.Registerer }

func (failingRegisterer) Register(prometheus.Collector) error { return errors.New("cannot register") }
