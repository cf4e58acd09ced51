package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// adhocDecision is what kedge did with an adhoc destination, whatever the protocol's way of saying it.
type adhocDecision string

const (
	adhocAllowed adhocDecision = "allowed"  // the backend answered
	adhocRefused adhocDecision = "refused"  // the dial guard refused the address: 403 forbidden / PermissionDenied
	adhocNoRoute adhocDecision = "no-route" // no adhoc rule matched: 502 no-route / Unimplemented
)

// TestAdhocDialPolicy checks that HTTP, gRPC and CONNECT make the same decision for the same adhoc destination:
// they share one dialer with one guard, whose only exemption is an address a rule names exactly.
func TestAdhocDialPolicy(t *testing.T) {
	if addrs, err := net.DefaultResolver.LookupHost(t.Context(), "localhost"); err != nil || len(addrs) == 0 {
		t.Skipf("localhost does not resolve here (%v): no name that resolves to loopback", err)
	}
	web := testutil.NewEchoServer(t, testutil.EchoName("adhoc-web"))
	rpc := testutil.NewGRPCBackend(t, "adhoc-grpc")
	rules := func(port int) string {
		return fmt.Sprintf(`[
      {"dns_name_matcher": "127.0.0.1", "port": {"allowed": [%[1]d]}},
      {"dns_name_matcher": "localhost", "port": {"allowed": [%[1]d]}},
      {"dns_name_matcher": "*", "port": {"allowed": [%[1]d]}}
    ]`, port)
	}
	director := fmt.Sprintf(`{"http": {"adhoc_rules": %s}, "grpc": {"adhoc_rules": %s}}`, rules(web.Port()), rules(grpcPort(rpc)))
	k := startKedge(t, director, `{}`)

	tests := []struct {
		name string
		host string
		want adhocDecision
	}{
		{"IP literal an exact rule names", "127.0.0.1", adhocAllowed},
		{"name an exact rule names, resolving to loopback", "localhost", adhocRefused},
		{"IP literal only a wildcard rule could match", "127.0.0.2", adhocNoRoute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[string]adhocDecision{
				"http":    k.adhocHTTP(t, net.JoinHostPort(tt.host, itoa(web.Port()))),
				"connect": k.adhocConnect(t, net.JoinHostPort(tt.host, itoa(web.Port()))),
				"grpc":    k.adhocGRPC(t, net.JoinHostPort(tt.host, itoa(grpcPort(rpc)))),
			}
			for proto, d := range got {
				if d != tt.want {
					t.Errorf("%s to %s: %s, want %s (all: %v)", proto, tt.host, d, tt.want, got)
				}
			}
		})
	}
}

// adhocHTTP sends a request for hostport to kedge's HTTPS port and classifies the answer.
func (e *kedgeEnv) adhocHTTP(t *testing.T, hostport string) adhocDecision {
	t.Helper()
	c := e.client(false)
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + hostport + "/")
	if err != nil {
		t.Fatalf("HTTP request for %s: %v", hostport, err)
	}
	body := readAll(t, resp)
	return classifyHTTP(t, "HTTP", resp, body)
}

// adhocConnect opens a CONNECT tunnel to hostport through kedge and, when it is established, sends a request
// through it.
func (e *kedgeEnv) adhocConnect(t *testing.T, hostport string) adhocDecision {
	t.Helper()
	conn, err := tls.Dial("tcp", e.https, &tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", hostport, hostport)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", hostport, err)
	}
	if resp.StatusCode != http.StatusOK {
		return classifyHTTP(t, "CONNECT", resp, readAll(t, resp))
	}
	fmt.Fprintf(conn, "GET /through HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", hostport)
	inner, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("request through the tunnel to %s: %v", hostport, err)
	}
	return classifyHTTP(t, "request through the tunnel", inner, readAll(t, inner))
}

// classifyHTTP reads kedge's decision from an HTTP answer.
func classifyHTTP(t *testing.T, what string, resp *http.Response, body string) adhocDecision {
	t.Helper()
	typ := resp.Header.Get("X-Kedge-Error-Type")
	switch {
	case resp.StatusCode == http.StatusOK && typ == "":
		return adhocAllowed
	case resp.StatusCode == http.StatusForbidden && typ == "forbidden":
		return adhocRefused
	case resp.StatusCode == http.StatusBadGateway && typ == "no-route":
		return adhocNoRoute
	}
	return adhocDecision(fmt.Sprintf("%s answered %d %q: %s", what, resp.StatusCode, typ, body))
}

// adhocGRPC makes a call with :authority hostport on kedge's gRPC port and classifies the status.
func (e *kedgeEnv) adhocGRPC(t *testing.T, hostport string) adhocDecision {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// TLS verifies kedge's certificate (localhost) while :authority names the destination, as winch does.
	creds := kedgeNameCreds{credentials.NewTLS(&tls.Config{RootCAs: e.ca.Pool(), ServerName: "localhost"})}
	cc, err := grpc.NewClient(e.grpcAddr, grpc.WithTransportCredentials(creds), grpc.WithAuthority(hostport), grpc.WithNoProxy())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = testpb.NewTestServiceClient(cc).UnaryCall(ctx, &testpb.SimpleRequest{})
	switch grpcstatus.Code(err) {
	case codes.OK:
		return adhocAllowed
	case codes.PermissionDenied:
		return adhocRefused
	case codes.Unimplemented:
		return adhocNoRoute
	}
	return adhocDecision(fmt.Sprintf("gRPC call: %v", err))
}

// kedgeNameCreds are TLS credentials that verify kedge's own name (localhost) whatever the :authority: the
// handshake ignores the authority grpc-go passes, and Info reports no ServerName, so grpc-go lets WithAuthority
// differ from the name the handshake checks.
type kedgeNameCreds struct {
	credentials.TransportCredentials
}

func (c kedgeNameCreds) ClientHandshake(ctx context.Context, _ string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.TransportCredentials.ClientHandshake(ctx, "localhost", raw)
}

func (c kedgeNameCreds) Info() credentials.ProtocolInfo {
	info := c.TransportCredentials.Info()
	info.ServerName = ""
	return info
}

func (c kedgeNameCreds) Clone() credentials.TransportCredentials {
	return kedgeNameCreds{c.TransportCredentials.Clone()}
}
