package testutil_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestServerCertificateVerifies(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	other := testutil.NewCA(t)
	tests := []struct {
		name   string
		names  []string
		verify string
		pool   *x509.CertPool
		ok     bool
	}{
		{"default localhost", nil, "localhost", ca.Pool(), true},
		{"default IP", nil, "127.0.0.1", ca.Pool(), true},
		{"DNS name", []string{"a.example.com"}, "a.example.com", ca.Pool(), true},
		{"wildcard", []string{"*.example.com"}, "b.example.com", ca.Pool(), true},
		{"other name refused", []string{"a.example.com"}, "c.example.com", ca.Pool(), false},
		{"other CA refused", nil, "localhost", other.Pool(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ca.Server(t, tt.names...)
			_, err := c.Leaf.Verify(x509.VerifyOptions{
				DNSName:   tt.verify,
				Roots:     tt.pool,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if (err == nil) != tt.ok {
				t.Errorf("Verify(%q) error = %v, want ok=%v", tt.verify, err, tt.ok)
			}
		})
	}
}

func TestClientCertificate(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	c := ca.Client(t, "alice", "alice@example.com", "spiffe://example.com/alice", "alice.example.com", "10.0.0.1")
	leaf := c.Leaf
	if leaf.Subject.CommonName != "alice" {
		t.Errorf("CN = %q", leaf.Subject.CommonName)
	}
	if len(leaf.EmailAddresses) != 1 || leaf.EmailAddresses[0] != "alice@example.com" {
		t.Errorf("emails = %v", leaf.EmailAddresses)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://example.com/alice" {
		t.Errorf("URIs = %v", leaf.URIs)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "alice.example.com" {
		t.Errorf("DNS = %v", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("IPs = %v", leaf.IPAddresses)
	}
	opts := x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := leaf.Verify(opts); err != nil {
		t.Errorf("client cert does not verify for client auth: %v", err)
	}
	opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if _, err := leaf.Verify(opts); err == nil {
		t.Error("client cert verifies for server auth; want ClientAuth only")
	}
}

func TestWriteFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	caFile := ca.WriteFiles(t, dir)
	if caFile2 := testutil.NewCA(t).WriteFiles(t, dir); caFile2 == caFile {
		t.Fatalf("two CAs wrote the same file %s", caFile)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(pem) {
		t.Errorf("%s holds no certificate", caFile)
	}

	certFile, keyFile := testutil.WriteCertFiles(t, dir, "server", ca.Server(t))
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode = %v, want 0600", perm)
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Errorf("written pair does not load: %v", err)
	}
}
