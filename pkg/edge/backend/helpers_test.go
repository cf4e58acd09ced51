package backend

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// srvOf returns SRV records pointing at each address ("127.0.0.1:port") through a name "<prefix><i>.test" that
// dns resolves to the address's IP.
func srvOf(t *testing.T, dns *sharedtest.Resolver, prefix string, addrs ...string) []*net.SRV {
	t.Helper()
	var recs []*net.SRV
	for i, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatalf("bad address %q: %v", a, err)
		}
		p, _ := strconv.Atoi(port)
		name := fmt.Sprintf("%s%d.test.", prefix, i)
		dns.SetHost(name[:len(name)-1], host)
		recs = append(recs, &net.SRV{Target: name, Port: uint16(p), Priority: 10, Weight: 10})
	}
	return recs
}

func newTestPool(t *testing.T, dns DNSResolver, o Options) (*Pool, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	p := NewPool(Deps{Log: logging.Discard(), Registerer: reg, DNS: dns, Options: o})
	t.Cleanup(p.Close)
	return p, reg
}

func srvSpec(name string, proto Protocol, srvName string) Spec {
	return Spec{Name: name, Protocol: proto, Resolver: Resolver{Kind: ResolverSRV, DNSName: srvName}}
}

func hostSpec(name, host string, port int) Spec {
	return Spec{Name: name, Protocol: HTTP, Resolver: Resolver{Kind: ResolverHost, DNSName: host, Port: uint32(port)}}
}

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sharedtest.RefusedPort(t)))
}

// namedServer starts an HTTP server answering with its name in X-Server; hits counts its requests.
func namedServer(t *testing.T, name string, hits *atomic.Int64) *httptest.Server {
	t.Helper()
	return serve(t, func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		w.Header().Set("X-Server", name)
		w.Header().Set("X-Host", r.Host)
		_, _ = w.Write([]byte(name))
	})
}

// serve starts a plaintext HTTP server closed at the end of the test.
func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func hostPort(t *testing.T, s *httptest.Server) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

func get(t *testing.T, rt http.RoundTripper, ctx context.Context) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://ignored.example/path", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "front.example"
	return rt.RoundTrip(req)
}

// errType returns the Type of err's *Error, or "".
func errType(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return string(e.Type)
	}
	return ""
}

// testCA is a CA made for one test, able to issue server and client certificates.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pemCrt []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kedge test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pemCrt: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate for the DNS names and IPs.
func (ca *testCA) issue(t *testing.T, client bool, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// writeFiles writes the CA PEM, and cert/key PEM of c when given, into a temp dir.
func (ca *testCA) writeCA(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, ca.pemCrt, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeKeyPair(t *testing.T, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}
