// Package testutil holds test fixtures shared by kedge's and winch's tests: certificates generated at run time, an
// HTTP echo backend and a gRPC TestService backend, all on 127.0.0.1 with ephemeral ports and stopped by t.Cleanup;
// and the helpers every package's tests use instead of a copy of their own: Eventually (wait for a condition with a
// deadline), MetricValue, a fake DNS Resolver, a concurrent log Buffer and RefusedPort.
// Only tests and the demo program (e2e/demo) import it; no private key is ever written into the repository.
package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// certValidity is short on purpose: a certificate that leaks from a test run is useless a day later.
const certValidity = 24 * time.Hour

// CA is a throw-away certificate authority (ECDSA P-256) that signs server and client leaf certificates.
// T is the part of testing.TB the certificate helpers use, so the demo program can generate its throwaway PKI with
// the same code as the tests.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
}

type CA struct {
	// Cert is the self-signed CA certificate.
	Cert *x509.Certificate
	// CertPEM is Cert in PEM form, as a CA bundle file would hold it.
	CertPEM []byte

	key *ecdsa.PrivateKey
}

// NewCA generates a fresh CA.
func NewCA(t T) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: "kedge test CA", Organization: []string{"kedge tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testutil: creating CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testutil: parsing CA certificate: %v", err)
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// Pool returns a new pool holding only this CA, for RootCAs or ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Server issues a server certificate (ExtKeyUsageServerAuth) for names: IP literals become IP SANs, everything else
// DNS SANs (wildcards such as "*.example.com" included). Without names it covers localhost, 127.0.0.1 and ::1.
func (ca *CA) Server(t T, names ...string) tls.Certificate {
	t.Helper()
	if len(names) == 0 {
		names = []string{"localhost", "127.0.0.1", "::1"}
	}
	tmpl := ca.leafTemplate(t, names[0])
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return ca.issue(t, tmpl)
}

// Client issues a client certificate (ExtKeyUsageClientAuth) with commonName as subject CN. Each of sans becomes an
// email SAN when it contains "@" and no "://", a URI SAN when it contains "://", an IP SAN when it parses as an IP,
// and a DNS SAN otherwise.
func (ca *CA) Client(t T, commonName string, sans ...string) tls.Certificate {
	t.Helper()
	tmpl := ca.leafTemplate(t, commonName)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	for _, s := range sans {
		switch {
		case strings.Contains(s, "://"):
			u, err := url.Parse(s)
			if err != nil {
				t.Fatalf("testutil: URI SAN %q: %v", s, err)
			}
			tmpl.URIs = append(tmpl.URIs, u)
		case strings.Contains(s, "@"):
			tmpl.EmailAddresses = append(tmpl.EmailAddresses, s)
		case net.ParseIP(s) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(s))
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	return ca.issue(t, tmpl)
}

// WriteFiles writes the CA certificate as a PEM bundle into dir and returns its path. Each call writes a new file,
// so several CAs can share a directory.
func (ca *CA) WriteFiles(t T, dir string) (caFile string) {
	t.Helper()
	f, err := os.CreateTemp(dir, "ca-*.pem")
	if err != nil {
		t.Fatalf("testutil: %v", err)
	}
	if _, err := f.Write(ca.CertPEM); err != nil {
		_ = f.Close()
		t.Fatalf("testutil: writing %s: %v", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("testutil: closing %s: %v", f.Name(), err)
	}
	return f.Name()
}

// WriteCertFiles writes c as dir/name.crt (the chain, PEM) and dir/name.key (PKCS #8 PEM, mode 0600) and returns both
// paths. Existing files are replaced, which is what certificate-rotation tests want.
func WriteCertFiles(t T, dir, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := EncodePEM(t, c)
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatalf("testutil: %v", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatalf("testutil: %v", err)
	}
	// WriteFile keeps the mode of an existing file; make sure a replaced key is still private.
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatalf("testutil: %v", err)
	}
	return certFile, keyFile
}

// EncodePEM returns c's certificate chain and private key in PEM form.
func EncodePEM(t T, c tls.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatalf("testutil: marshalling private key: %v", err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func (ca *CA) leafTemplate(t T, commonName string) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: newSerial(t),
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"kedge tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
}

func (ca *CA) issue(t T, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	key := newKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testutil: issuing certificate for %q: %v", tmpl.Subject.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testutil: parsing issued certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func newKey(t T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testutil: generating key: %v", err)
	}
	return key
}

func newSerial(t T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("testutil: serial number: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}
