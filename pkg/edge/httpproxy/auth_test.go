package httpproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

// startGate runs an Authenticator for cfg until the test ends, waits until it is ready, and returns a Gate over it
// registered on reg.
func startGate(t *testing.T, cfg authn.Config, reg prometheus.Registerer) *authz.Gate {
	t.Helper()
	a, err := authn.New(cfg, logging.Discard(), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, "authenticator ready", func() bool { return a.Ready() == nil })
	g, err := authz.NewGate(a, reg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func oidcConfig(iss *oidcissuer.Issuer, required ...string) authn.Config {
	return authn.Config{OIDC: &authn.OIDCConfig{
		IssuerURL: iss.URL(), ClientID: "kedge", PermsClaim: "perms", RequiredPerms: required,
		HTTPClient: iss.HTTPClient(), KeyRefetchInterval: time.Millisecond,
	}}
}

// bearer returns a Proxy-Authorization header for token (and an Authorization meant for the backend).
func bearer(token string) http.Header {
	return http.Header{"Proxy-Authorization": {"Bearer " + token}, "Authorization": {"Bearer backend-token"}}
}

func TestOIDCThroughTheHandler(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	gateReg := prometheus.NewRegistry()
	gate := startGate(t, oidcConfig(iss, "proxy"), gateReg)
	b := newBackend(t, "web", nil)
	e := newEnv(t, envConfig{
		routes: []route.HTTPRoute{
			{Backend: "web", Host: "deploy.example.com", RequiredPermissions: []string{"deploy"}},
			{Backend: "web", Host: "web.example.com"},
		},
		backends: []*testBackend{b},
		gate:     gate,
	})
	sign := func(mutate func(map[string]any), opts ...oidcissuer.SignOption) string {
		c := iss.Claims("kedge")
		c["perms"] = []string{"proxy"}
		c["email"] = "user@example.com"
		if mutate != nil {
			mutate(c)
		}
		return iss.Sign(t, c, opts...)
	}
	valid := sign(nil)

	t.Run("valid token reaches the backend without Proxy-Authorization", func(t *testing.T) {
		s := readSeen(t, e.do(t, "GET", "web.example.com", "/x", bearer(valid), nil))
		if v := s.Header.Get("Proxy-Authorization"); v != "" {
			t.Errorf("backend saw Proxy-Authorization %q", v)
		}
		if v := s.Header.Get("Authorization"); v != "Bearer backend-token" {
			t.Errorf("backend saw Authorization %q, want it untouched", v)
		}
	})

	denied := []struct {
		name, host string
		hdr        http.Header
		status     int
		typ, msg   string
	}{
		{"no token", "web.example.com", nil, 401, "unauthorized", "no Proxy-Authorization header"},
		{"not bearer", "web.example.com", http.Header{"Proxy-Authorization": {"Basic dTpw"}}, 401, "unauthorized", "not a Bearer token"},
		{"expired", "web.example.com", bearer(sign(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })), 401, "unauthorized", "expired"},
		{"wrong audience", "web.example.com", bearer(sign(func(c map[string]any) { c["aud"] = "someone-else" })), 401, "unauthorized", "audience"},
		{"unknown key", "web.example.com", bearer(sign(nil, oidcissuer.WithUnknownKey())), 401, "unauthorized", ""},
		{"missing global permission", "web.example.com", bearer(sign(func(c map[string]any) { c["perms"] = []string{"other"} })), 403, "forbidden", "missing permission: one of [proxy]"},
		{"missing route permission", "deploy.example.com", bearer(valid), 403, "forbidden", "missing permission: one of [deploy]"},
		{"no token on an unknown host: 401, not no-route", "nowhere.example.com", nil, 401, "unauthorized", "no Proxy-Authorization header"},
		{"bad token on an unknown host", "nowhere.example.com", bearer("x.y.z"), 401, "unauthorized", ""},
	}
	for _, tt := range denied {
		t.Run(tt.name, func(t *testing.T) {
			hits := b.hits.Load()
			resp := e.do(t, "GET", tt.host, "/x", tt.hdr, nil)
			if tt.status == 401 && resp.Header.Get("Proxy-Authenticate") != "Bearer" {
				t.Errorf("401 without Proxy-Authenticate: Bearer: %q", resp.Header.Get("Proxy-Authenticate"))
			}
			if v := resp.Header.Get("X-Kedge-Backend-Name"); v != "" {
				t.Errorf("denied response names the backend %q", v)
			}
			msg := resp.Header.Get("X-Kedge-Error")
			expectKedgeError(t, resp, tt.status, tt.typ)
			if !strings.Contains(msg, tt.msg) {
				t.Errorf("X-Kedge-Error %q lacks %q", msg, tt.msg)
			}
			if p := tt.hdr.Get("Proxy-Authorization"); len(p) > 20 && strings.Contains(msg, p[len("Bearer "):]) {
				t.Errorf("X-Kedge-Error echoes the token: %q", msg)
			}
			if b.hits.Load() != hits {
				t.Error("a denied request reached the backend")
			}
		})
	}

	t.Run("valid token on an unknown host learns no-route", func(t *testing.T) {
		expectKedgeError(t, e.do(t, "GET", "nowhere.example.com", "/", bearer(valid), nil), 502, "no-route")
	})
	t.Run("route permission present", func(t *testing.T) {
		tok := sign(func(c map[string]any) { c["perms"] = []string{"proxy", "deploy"} })
		readSeen(t, e.do(t, "GET", "deploy.example.com", "/", bearer(tok), nil))
	})
	t.Run("key rotation: a token signed by a new key verifies without restart", func(t *testing.T) {
		iss.RotateKey(t)
		readSeen(t, e.do(t, "GET", "web.example.com", "/", bearer(sign(nil)), nil))
	})

	t.Run("audit: one log line per request with identity, route, decision and reason; no token", func(t *testing.T) {
		var allowed, forbidden map[string]any
		for _, l := range e.logs.JSONLines(t) {
			if l["msg"] != "http request" {
				continue
			}
			switch {
			case l["decision"] == "allowed" && l["host"] == "deploy.example.com":
				allowed = l
			case l["decision"] == "forbidden" && l["host"] == "deploy.example.com":
				forbidden = l
			}
		}
		if allowed == nil || allowed["identity"] != "oidc:sub=user-1,email=user@example.com" || allowed["route"] != "web" ||
			allowed["reason"] != "permission deploy" {
			t.Errorf("allowed line = %v", allowed)
		}
		if forbidden == nil || forbidden["reason"] != "missing permission: one of [deploy]" || forbidden["status"] != 403.0 {
			t.Errorf("forbidden line = %v", forbidden)
		}
		all := e.logs.String()
		if strings.Contains(all, valid) || strings.Contains(all, strings.Split(valid, ".")[2]) {
			t.Error("the log contains a token")
		}
	})
	t.Run("metric", func(t *testing.T) {
		if n := testutil.MetricValue(t, gateReg, "kedge_authz_decisions_total", map[string]string{"route": "web", "result": "forbidden"}); n < 2 {
			t.Errorf("forbidden decisions for web = %v, want >= 2", n)
		}
		if n := testutil.MetricValue(t, gateReg, "kedge_authz_decisions_total", map[string]string{"route": "", "result": "unauthenticated"}); n < 2 {
			t.Errorf("unrouted unauthenticated decisions = %v, want >= 2", n)
		}
	})
}

func TestClientCertificateIdentities(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	other := testutil.NewCA(t)
	b := newBackend(t, "web", nil)
	static := startGate(t, authn.Config{StaticToken: "t0ken"}, prometheus.NewRegistry())
	routes := []route.HTTPRoute{
		{Backend: "web", Host: "robots.example.com", AllowedIdentities: []string{"robot.example.com"}},
		{Backend: "web", Host: "ops.example.com", RequiredPermissions: []string{"ops"}},
		{Backend: "web", Host: "open.example.com"},
	}
	tlsCfg := &tls.Config{ClientCAs: ca.Pool(), ClientAuth: tls.VerifyClientCertIfGiven}
	tokenEnv := newEnv(t, envConfig{routes: routes, backends: []*testBackend{b}, gate: static, tls: true, tlsCfg: tlsCfg})
	noTokenEnv := newEnv(t, envConfig{routes: routes, backends: []*testBackend{b}, tls: true, tlsCfg: tlsCfg.Clone()})

	robot := ca.Client(t, "robot", "robot.example.com")
	intruder := ca.Client(t, "intruder", "intruder.example.com")
	tests := []struct {
		name   string
		e      *env
		cert   *tls.Certificate
		host   string
		hdr    http.Header
		status int
		typ    string
	}{
		{"allowed identity, no token needed", tokenEnv, &robot, "robots.example.com", nil, 200, ""},
		{"allowed identity with a token too", tokenEnv, &robot, "robots.example.com", bearer("t0ken"), 200, ""},
		{"other identity, no token", tokenEnv, &intruder, "robots.example.com", nil, 401, "unauthorized"},
		{"other identity with a token", tokenEnv, &intruder, "robots.example.com", bearer("t0ken"), 403, "forbidden"},
		{"no certificate, token", tokenEnv, nil, "robots.example.com", bearer("t0ken"), 403, "forbidden"},
		{"certificate on an open route still needs the token", tokenEnv, &robot, "open.example.com", nil, 401, "unauthorized"},
		{"token on an open route", tokenEnv, nil, "open.example.com", bearer("t0ken"), 200, ""},
		{"without token auth: allowed identity", noTokenEnv, &robot, "robots.example.com", nil, 200, ""},
		{"without token auth: other identity", noTokenEnv, &intruder, "robots.example.com", nil, 403, "forbidden"},
		{"without token auth: no certificate", noTokenEnv, nil, "robots.example.com", nil, 401, "unauthorized"},
		{"without token auth: permission route refuses a certificate", noTokenEnv, &robot, "ops.example.com", nil, 403, "forbidden"},
		{"without token auth: permission route, anonymous", noTokenEnv, nil, "ops.example.com", nil, 401, "unauthorized"},
		{"without token auth: open route", noTokenEnv, nil, "open.example.com", nil, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp := tt.e.doTLS(t, tt.cert, tt.host, tt.hdr)
			if tt.status == 200 {
				readSeen(t, resp)
				return
			}
			expectKedgeError(t, resp, tt.status, tt.typ)
		})
	}

	t.Run("a certificate from another CA is refused by the handshake", func(t *testing.T) {
		t.Parallel()
		c := other.Client(t, "robot", "robot.example.com")
		client := tokenEnv.clientWith(&c)
		defer client.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(t.Context(), "GET", tokenEnv.proxy.URL+"/", nil)
		req.Host = "robots.example.com"
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("request with an unknown CA's certificate got %d", resp.StatusCode)
		}
	})
}

// clientWith returns an HTTP client for a TLS env that presents cert (nil: none).
func (e *env) clientWith(cert *tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(e.proxy.Certificate())
	cfg := &tls.Config{RootCAs: pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}

// doTLS sends GET / with Host host to a TLS env, presenting cert.
func (e *env) doTLS(t *testing.T, cert *tls.Certificate, host string, hdr http.Header) *http.Response {
	t.Helper()
	client := e.clientWith(cert)
	t.Cleanup(client.CloseIdleConnections)
	req, err := http.NewRequestWithContext(t.Context(), "GET", e.proxy.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestProxyAuthorizationNeverForwarded(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "web", nil)
	gate := startGate(t, authn.Config{StaticToken: "t0ken"}, nil)
	e := newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "web"}}, backends: []*testBackend{b}, gate: gate})
	for _, hdr := range []http.Header{
		bearer("t0ken"),
		{"Proxy-Authorization": {"Bearer t0ken"}, "Connection": {"keep-alive"}},
		{"proxy-authorization": {"Bearer t0ken"}},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", e.proxy.URL+"/", nil)
		req.Host = "any.example.com"
		for k, v := range hdr {
			req.Header[http.CanonicalHeaderKey(k)] = v
		}
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		s := readSeen(t, resp)
		for k := range s.Header {
			if strings.EqualFold(k, "Proxy-Authorization") {
				t.Errorf("backend saw %s: %q", k, s.Header[k])
			}
		}
	}
	// Two Proxy-Authorization values are refused rather than guessed at.
	resp := e.do(t, "GET", "any.example.com", "/", http.Header{"Proxy-Authorization": {"Bearer t0ken", "Bearer t0ken"}}, nil)
	expectKedgeError(t, resp, 401, "unauthorized")
}
