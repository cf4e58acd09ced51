package edge

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/edge/config"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testConfig is a kedge on free loopback ports with a generated certificate and one route.
func testConfig(t *testing.T, ports [3]int) config.Config {
	t.Helper()
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	cert, key := testutil.WriteCertFiles(t, dir, "kedge", ca.Server(t))
	var cfg config.Config
	fs := pflag.NewFlagSet("kedge", pflag.ContinueOnError)
	cfg.RegisterFlags(fs) // the defaults, as the binary gets them
	if err := fs.Parse([]string{"--server_bind_address=127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	cfg.HTTPPort, cfg.HTTPSPort, cfg.GRPCPort = ports[0], ports[1], ports[2]
	cfg.TLSCertFile, cfg.TLSKeyFile = cert, key
	cfg.DrainTimeout = 2 * time.Second
	cfg.ShutdownDelay = 0 // TestRunShutdownDelay sets its own
	cfg.Documents.DirectorInline = `{"http": {"routes": [{"backend_name": "web", "host_matcher": "web.example.com"}]}}`
	cfg.Documents.BackendpoolInline = `{"http": {"backends": [{"name": "web", "host": {"dns_name": "127.0.0.1", "port": 9}}]}}`
	return cfg
}

func freePorts(t *testing.T) [3]int {
	t.Helper()
	var ports [3]int
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	return ports
}

// TestNewFailureReleasesEverything: when a listener cannot bind, New reports it and leaves no goroutine, pool or
// listener behind (goleak in TestMain checks the goroutines).
func TestNewFailureReleasesEverything(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ports := freePorts(t)
	ports[2] = taken.Addr().(*net.TCPAddr).Port
	cfg := testConfig(t, ports)
	if _, err := New(cfg, logging.Discard()); err == nil || !strings.Contains(err.Error(), "grpc listener") {
		t.Fatalf("New with the gRPC port taken: err = %v, want a grpc listener error", err)
	}
	// The debug and HTTPS ports it bound before failing are free again.
	for _, p := range ports[:2] {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Errorf("port %d still held after New failed: %v", p, err)
			continue
		}
		ln.Close()
	}
}

// TestRunServesAndStops: Run reports ready, serves the debug port, and returns nil after the context ends.
func TestRunServesAndStops(t *testing.T) {
	cfg := testConfig(t, freePorts(t))
	srv, err := New(cfg, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	debug, _, _ := srv.Addrs()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + debug + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel", err)
		}
	case <-time.After(cfg.DrainTimeout + 5*time.Second):
		t.Fatal("Run did not return after cancel")
	}
}
