package backend

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// tlsServer starts an h2-capable TLS server with a certificate for backend.test issued by ca; it answers with the
// request's protocol major version and, when a client certificate was presented, its common name.
func tlsServer(t *testing.T, ca *testCA, requireClientCert bool) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Proto-Major", strconv.Itoa(r.ProtoMajor))
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			w.Header().Set("X-Client", r.TLS.PeerCertificates[0].Subject.CommonName)
		}
	}))
	s.EnableHTTP2 = true
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are what some cases test
	s.TLS = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, false, "backend.test")}}
	if requireClientCert {
		s.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		s.TLS.ClientCAs = ca.pool()
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func TestTLSBackends(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	caFile := ca.writeCA(t)
	clientCert, clientKey := writeKeyPair(t, ca.issue(t, true, "kedge-client"))
	otherCA := newTestCA(t).writeCA(t)
	tests := []struct {
		name       string
		mtls       bool
		dnsName    bool // resolve through the name backend.test instead of the IP
		tls        TLS
		wantType   wire.ErrorType // "" means success
		wantClient string
	}{
		{name: "CA file and explicit server name", tls: TLS{Enabled: true, CAFile: caFile, ServerName: "backend.test"}},
		{name: "server name from the DNS name", dnsName: true, tls: TLS{Enabled: true, CAFile: caFile}},
		{name: "insecure skip verify", tls: TLS{Enabled: true, InsecureSkipVerify: true}},
		{name: "client certificate", mtls: true, tls: TLS{Enabled: true, CAFile: caFile, ServerName: "backend.test", CertFile: clientCert, KeyFile: clientKey}, wantClient: "kedge-client"},
		{name: "unknown authority", tls: TLS{Enabled: true, CAFile: otherCA, ServerName: "backend.test"}, wantType: wire.ErrTransportUnknown},
		{name: "wrong server name", tls: TLS{Enabled: true, CAFile: caFile, ServerName: "other.test"}, wantType: wire.ErrTransportUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := tlsServer(t, ca, tt.mtls)
			host, port := hostPort(t, s)
			dns := sharedtest.NewResolver(nil)
			spec := hostSpec("tls", host, port)
			if tt.dnsName {
				dns.SetHost("backend.test", host)
				spec.Resolver.DNSName = "backend.test"
			}
			spec.TLS = tt.tls
			p, _ := newTestPool(t, dns, Options{})
			if err := p.Update([]Spec{spec}); err != nil {
				t.Fatal(err)
			}
			rt, _ := p.HTTP("tls")
			resp, err := get(t, rt, t.Context())
			if tt.wantType != "" {
				if got := errType(err); got != string(tt.wantType) {
					t.Fatalf("error %v (type %q), want type %q", err, got, tt.wantType)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if got := resp.Header.Get("X-Proto-Major"); got != "2" {
				t.Errorf("backend saw HTTP/%s, want HTTP/2 over TLS", got)
			}
			if got := resp.Header.Get("X-Client"); got != tt.wantClient {
				t.Errorf("client certificate %q, want %q", got, tt.wantClient)
			}
		})
	}
}

func TestPlaintextStaysHTTP1(t *testing.T) {
	t.Parallel()
	s := serve(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Proto-Major", strconv.Itoa(r.ProtoMajor))
	})
	host, port := hostPort(t, s)
	p, _ := newTestPool(t, sharedtest.NewResolver(nil), Options{})
	if err := p.Update([]Spec{hostSpec("plain", host, port)}); err != nil {
		t.Fatal(err)
	}
	rt, _ := p.HTTP("plain")
	resp, err := get(t, rt, t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if got := resp.Header.Get("X-Proto-Major"); got != "1" {
		t.Errorf("plaintext backend saw HTTP/%s, want HTTP/1.1", got)
	}
}

func TestServerNameOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		res  Resolver
		want string
	}{
		{Resolver{Kind: ResolverHost, DNSName: "api.example.com."}, "api.example.com"},
		{Resolver{Kind: ResolverSRV, DNSName: "_https._tcp.api.example.com"}, "api.example.com"},
		{Resolver{Kind: ResolverSRV, DNSName: "_grpc"}, ""},
		{Resolver{Kind: ResolverK8s, K8sTarget: "svc.ns:80"}, ""},
	}
	for _, tt := range tests {
		if got := serverNameOf(tt.res); got != tt.want {
			t.Errorf("serverNameOf(%+v) = %q, want %q", tt.res, got, tt.want)
		}
	}
}
