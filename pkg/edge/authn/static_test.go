package authn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// verifiedPeer returns the TLS state of a peer whose certificate (CN cn plus SANs) verified.
func verifiedPeer(t testing.TB, cn string) *tls.ConnectionState {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://example.org/ns/default/sa/" + cn)
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(1),
		Subject:        pkix.Name{CommonName: cn},
		DNSNames:       []string{cn + ".example.com", cn},
		EmailAddresses: []string{cn + "@example.com"},
		URIs:           []*url.URL{u},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(time.Hour),
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}}
}

func TestAuthenticateStaticToken(t *testing.T) {
	t.Parallel()
	a, err := New(Config{StaticToken: "s3cret-token"}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%v %+v", Config{StaticToken: "s3cret-token"}, Config{StaticToken: "s3cret-token"}); strings.Contains(s, "s3cret") {
		t.Errorf("Config formatting leaks the static token: %s", s)
	}
	if !a.Enabled() || a.Ready() != nil {
		t.Fatalf("Enabled=%v Ready=%v", a.Enabled(), a.Ready())
	}
	tests := []struct {
		name   string
		header string
		reason string // "" = allowed
		noCred bool
	}{
		{name: "right", header: "Bearer s3cret-token"},
		{name: "scheme lower case", header: "bearer s3cret-token"},
		{name: "surrounding spaces", header: "  Bearer s3cret-token "},
		{name: "wrong", header: "Bearer s3cret-tokeN", reason: "bearer token is invalid"},
		{name: "prefix", header: "Bearer s3cret", reason: "bearer token is invalid"},
		{name: "longer", header: "Bearer s3cret-token-and-more", reason: "bearer token is invalid"},
		{name: "missing", header: "", reason: "no Proxy-Authorization header", noCred: true},
		{name: "blank", header: "   ", reason: "no Proxy-Authorization header", noCred: true},
		{name: "basic", header: "Basic czNjcmV0LXRva2Vu", reason: "Proxy-Authorization is not a Bearer token"},
		{name: "token without scheme", header: "s3cret-token", reason: "Proxy-Authorization is not a Bearer token"},
		{name: "scheme only", header: "Bearer", reason: "Bearer token is malformed"},
		{name: "scheme and space", header: "Bearer ", reason: "Bearer token is malformed"},
		{name: "double space", header: "Bearer  s3cret-token", reason: "Bearer token is malformed"},
		{name: "extra field", header: "Bearer s3cret-token extra", reason: "Bearer token is malformed"},
		{name: "control character", header: "Bearer s3cret-token\x00", reason: "Bearer token is malformed"},
		{name: "too large", header: "Bearer " + strings.Repeat("a", MaxTokenBytes+1), reason: "bearer token too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id, err := a.Authenticate(t.Context(), tt.header, nil)
			if tt.reason == "" {
				if err != nil || id.Method != MethodStaticToken || id.String() != "static-token" {
					t.Fatalf("Authenticate = %+v, %v", id, err)
				}
				return
			}
			wantDenied(t, err, Unauthenticated, tt.reason, "s3cret-token")
			if errors.Is(err, ErrNoCredentials) != tt.noCred {
				t.Errorf("errors.Is(err, ErrNoCredentials) = %v, want %v", !tt.noCred, tt.noCred)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q echoes the token", err)
			}
		})
	}
}

func TestAuthenticateClientCert(t *testing.T) {
	t.Parallel()
	peer := verifiedPeer(t, "alice")
	wantNames := []string{"alice", "alice.example.com", "alice@example.com", "spiffe://example.org/ns/default/sa/alice"}
	unverified := &tls.ConnectionState{PeerCertificates: peer.PeerCertificates}

	none, err := New(Config{}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	static, err := New(Config{StaticToken: "tok"}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		a          *Authenticator
		header     string
		peer       *tls.ConnectionState
		wantMethod string
		wantNames  []string
		wantNoCred bool
		wantString string
	}{
		{name: "no auth configured, verified cert", a: none, peer: peer, wantMethod: MethodClientCert, wantNames: wantNames, wantString: "cert:CN=alice"},
		{name: "no auth configured, header ignored", a: none, header: "Bearer whatever", peer: peer, wantMethod: MethodClientCert, wantNames: wantNames, wantString: "cert:CN=alice"},
		{name: "no auth configured, unverified cert", a: none, peer: unverified, wantMethod: MethodAnonymous, wantString: "anonymous"},
		{name: "no auth configured, no TLS", a: none, wantMethod: MethodAnonymous, wantString: "anonymous"},
		{name: "token required, cert but no token", a: static, peer: peer, wantMethod: MethodClientCert, wantNames: wantNames, wantNoCred: true, wantString: "cert:CN=alice"},
		{name: "token required, nothing", a: static, wantMethod: MethodAnonymous, wantNoCred: true, wantString: "anonymous"},
		{name: "token and cert", a: static, header: "Bearer tok", peer: peer, wantMethod: MethodStaticToken, wantNames: wantNames, wantString: "static-token,cert:name=alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id, err := tt.a.Authenticate(t.Context(), tt.header, tt.peer)
			if tt.wantNoCred {
				if !errors.Is(err, ErrNoCredentials) {
					t.Fatalf("err = %v, want ErrNoCredentials", err)
				}
			} else if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if id.Method != tt.wantMethod || !slices.Equal(id.CertNames, tt.wantNames) || id.String() != tt.wantString {
				t.Errorf("identity = %+v (%q), want method %q names %v string %q", id, id, tt.wantMethod, tt.wantNames, tt.wantString)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := func() *OIDCConfig {
		return &OIDCConfig{IssuerURL: "https://issuer.example.com", ClientID: "kedge", PermsClaim: "perms", RequiredPerms: []string{"p"}}
	}
	tests := []struct {
		name string
		cfg  Config
		want []string // substrings of the error; none = valid
	}{
		{name: "nothing"},
		{name: "static", cfg: Config{StaticToken: "abc"}},
		{name: "oidc", cfg: Config{OIDC: good()}},
		{name: "oidc http loopback", cfg: Config{OIDC: func() *OIDCConfig { c := good(); c.IssuerURL = "http://127.0.0.1:5556/dex"; return c }()}},
		{name: "both", cfg: Config{OIDC: good(), StaticToken: "abc"}, want: []string{"cannot enable both"}},
		{name: "static with space", cfg: Config{StaticToken: "a b"}, want: []string{"visible ASCII"}},
		{name: "everything missing", cfg: Config{OIDC: &OIDCConfig{RequiredPerms: []string{"p"}}},
			want: []string{"issuer URL is required", "client ID is required", "need a permissions claim"}},
		{name: "http issuer", cfg: Config{OIDC: func() *OIDCConfig { c := good(); c.IssuerURL = "http://issuer.example.com"; return c }()}, want: []string{"must use https"}},
		{name: "issuer with query", cfg: Config{OIDC: func() *OIDCConfig { c := good(); c.IssuerURL = "https://issuer.example.com/?x=1"; return c }()}, want: []string{"must not have a query"}},
		{name: "empty permission", cfg: Config{OIDC: func() *OIDCConfig { c := good(); c.RequiredPerms = []string{"p", " "}; return c }()}, want: []string{"empty value"}},
		{name: "negative interval", cfg: Config{OIDC: func() *OIDCConfig { c := good(); c.KeyRefetchInterval = -1; return c }()}, want: []string{"must not be negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %v, want it to contain %q", err, w)
				}
			}
			if _, nerr := New(tt.cfg, logging.Discard(), nil); nerr == nil {
				t.Errorf("New accepted an invalid config")
			}
		})
	}
}

func TestDecisionMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a, err := New(Config{StaticToken: "tok"}, logging.Discard(), reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{StaticToken: "tok"}, logging.Discard(), reg); err != nil {
		t.Fatalf("second Authenticator on the same registry: %v", err)
	}
	for _, h := range []string{"Bearer tok", "Bearer tok", "Bearer nope", ""} {
		_, _ = a.Authenticate(t.Context(), h, nil)
	}
	_, _ = a.Authenticate(t.Context(), "", verifiedPeer(t, "bob"))
	want := map[string]float64{
		"static-token/allowed":         2,
		"static-token/unauthenticated": 1,
		"anonymous/unauthenticated":    1,
		"client-cert/no-token":         1,
	}
	for k, v := range want {
		method, result, _ := strings.Cut(k, "/")
		if got := testutil.MetricValue(t, reg, "kedge_auth_decisions_total", map[string]string{"method": method, "result": result}); got != v {
			t.Errorf("kedge_auth_decisions_total{%s} = %v, want %v", k, got, v)
		}
	}
}
