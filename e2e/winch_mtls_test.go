package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

const mtlsDirector = `{
  "http": {"routes": [{"backend_name": "plain", "host_matcher": "hello.example.com", "port_matcher": 80}]},
  "grpc": {"routes": [{"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*"}]}
}`

const mtlsPool = `{
  "http": {"backends": [{"name": "plain", "host": {"dns_name": "127.0.0.1", "port": %d}}]},
  "grpc": {"backends": [{"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %d}}]}
}`

// mtlsMapper: %[1]q is kedge's HTTPS URL, %[2]q its gRPC URL.
const mtlsMapper = `{"routes": [
  {"direct": {"key": "hello.example.com", "url": %[1]q}, "protocol": "HTTP"},
  {"direct": {"key": "secure.example.com:443", "url": %[1]q}, "protocol": "HTTP"},
  {"direct": {"key": "greeter.example.com:443", "url": %[2]q}, "protocol": "GRPC"}
]}`

// TestWinchClientCertificate runs kedge requiring client certificates: winch with --client_tls_cert_file gets
// through, winch without one gets a clear error that names the certificate.
func TestWinchClientCertificate(t *testing.T) {
	plain := testutil.NewEchoServer(t, testutil.EchoName("plain"))
	greeter := testutil.NewGRPCBackend(t, "greeter")
	clientCA := testutil.NewCA(t)
	dir := t.TempDir()
	clientCAFile := clientCA.WriteFiles(t, dir)
	certFile, keyFile := testutil.WriteCertFiles(t, dir, "someone", clientCA.Client(t, "someone@example.com", "someone@example.com"))

	k := startKedge(t, mtlsDirector, fmt.Sprintf(mtlsPool, plain.Port(), grpcPort(greeter)),
		"--server_tls_client_ca_files="+clientCAFile, "--server_tls_client_cert_required=true")
	mapper := fmt.Sprintf(mtlsMapper, kedgeURL(k), kedgeGRPCURL(k))
	withCert := startWinch(t, mapper, "", "--client_tls_root_ca_files="+k.caFile,
		"--client_tls_cert_file="+certFile, "--client_tls_key_file="+keyFile)
	without := startWinch(t, mapper, "", "--client_tls_root_ca_files="+k.caFile)

	t.Run("with a client certificate", func(t *testing.T) {
		out, err := withCert.curlVia(t, "-i", "http://hello.example.com/mtls")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		if r := parseCurl(t, out); r.status != http.StatusOK || r.echo(t).Path != "/mtls" {
			t.Errorf("want 200 from the backend:\n%s", out)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer cancel()
		checkUnaryAndBidi(ctx, t, testpb.NewTestServiceClient(winchGRPC(t, withCert, "greeter.example.com:443")), "greeter")
	})

	t.Run("without a client certificate", func(t *testing.T) {
		hits := plain.Hits()
		out, err := without.curlVia(t, "-i", "http://hello.example.com/mtls")
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		r := parseCurl(t, out)
		if r.status != http.StatusBadGateway || r.header.Get("X-Winch-Error-Type") != "transport-unknown-error" ||
			!strings.Contains(r.header.Get("X-Winch-Error"), "certificate") {
			t.Errorf("want 502 transport-unknown-error with an X-Winch-Error about the certificate:\n%s", out)
		}
		resp := without.rawConnect(t, "secure.example.com:443")
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(resp.Header.Get("X-Winch-Error"), "certificate") {
			t.Errorf("CONNECT without a client certificate: %s (%q), want 502 about the certificate", resp.Status, resp.Header.Get("X-Winch-Error"))
		}
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer cancel()
		_, err = testpb.NewTestServiceClient(winchGRPC(t, without, "greeter.example.com:443")).UnaryCall(ctx, &testpb.SimpleRequest{})
		if grpcstatus.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("gRPC without a client certificate: %v; want Unavailable about the certificate", err)
		}
		if plain.Hits() != hits {
			t.Errorf("the backend was reached without a client certificate")
		}
	})
}
