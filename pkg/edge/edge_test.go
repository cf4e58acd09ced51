package edge

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
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

// testConfig is a kedge with a generated certificate and one route, and Deps whose listeners the test bound on
// 127.0.0.1:0: the ports kedge serves are the ones the listeners got, never reserved and bound again. The config's
// ports are 0, so a listener a test removes from Deps is disabled rather than bound.
func testConfig(t *testing.T) (config.Config, Deps) {
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
	cfg.HTTPPort, cfg.HTTPSPort, cfg.GRPCPort = 0, 0, 0
	cfg.TLSCertFile, cfg.TLSKeyFile = cert, key
	cfg.DrainTimeout = 2 * time.Second
	cfg.ShutdownDelay = 0 // TestRunShutdownDelay sets its own
	cfg.Documents.DirectorInline = `{"http": {"routes": [{"backend_name": "web", "host_matcher": "web.example.com"}]}}`
	cfg.Documents.BackendpoolInline = `{"http": {"backends": [{"name": "web", "host": {"dns_name": "127.0.0.1", "port": 9}}]}}`
	deps := Deps{Log: logging.Discard(), Listeners: Listeners{Debug: listenLocal(t), HTTPS: listenLocal(t), GRPC: listenLocal(t)}}
	return cfg, deps
}

// listenLocal binds an ephemeral port on 127.0.0.1. New takes the listener over; the cleanup only matters when the
// test ends before New was called.
func listenLocal(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// runServer runs srv until the test ends and checks that Run then returns nil.
func runServer(t *testing.T, srv *Server, drain time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel", err)
			}
		case <-time.After(drain + 5*time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

// TestNewFailureReleasesEverything: when New fails, early (bad documents) or late (a port it must bind is taken), it
// closes the listeners it was given and the ones it bound, and leaves no goroutine or pool behind (goleak in
// TestMain checks the goroutines).
func TestNewFailureReleasesEverything(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(t *testing.T, cfg *config.Config, deps *Deps)
		want    string
	}{
		{"bad documents", func(_ *testing.T, cfg *config.Config, _ *Deps) { cfg.Documents.DirectorInline = "{" }, "loading config documents"},
		{"gRPC port taken", func(t *testing.T, cfg *config.Config, deps *Deps) {
			taken := listenLocal(t) // held by the test until it ends
			deps.Listeners.GRPC = nil
			cfg.GRPCPort = taken.Addr().(*net.TCPAddr).Port
		}, "grpc listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, deps := testConfig(t)
			tt.breakIt(t, &cfg, &deps)
			if _, err := New(cfg, deps); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: err = %v, want one containing %q", err, tt.want)
			}
			for name, ln := range map[string]net.Listener{"debug": deps.Listeners.Debug, "https": deps.Listeners.HTTPS} {
				_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Second)) // an open listener must not hang the test
				if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
					t.Errorf("%s listener still open after New failed: Accept = %v", name, err)
				}
			}
		})
	}
}

// TestRunServesAndStops: Run reports ready, serves the debug port, and returns nil after the context ends.
func TestRunServesAndStops(t *testing.T) {
	cfg, deps := testConfig(t)
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	debug, https, grpc := srv.Addrs()
	for _, a := range []struct{ got, want string }{
		{debug, deps.Listeners.Debug.Addr().String()},
		{https, deps.Listeners.HTTPS.Addr().String()},
		{grpc, deps.Listeners.GRPC.Addr().String()},
	} {
		if a.got != a.want {
			t.Errorf("Addrs gave %s, want the given listener's %s", a.got, a.want)
		}
	}
	runServer(t, srv, cfg.DrainTimeout)
	waitStatus(t, http.DefaultClient, "http://"+debug+"/readyz", http.StatusOK)
}

// TestReloadRereadsTLSFiles: Reload (SIGHUP) serves a rotated certificate at once, without waiting for a handshake to
// notice the files changed; files that do not load are a warning and the running certificate stays.
func TestReloadRereadsTLSFiles(t *testing.T) {
	cfg, deps := testConfig(t)
	logs := &testutil.Buffer{}
	log, err := logging.New(logging.Options{Level: "warn", Output: logs, FlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	deps.Log = log
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	runServer(t, srv, cfg.DrainTimeout)
	first := srv.tls.Leaf()

	rotated := testutil.NewCA(t).Server(t)
	testutil.WriteCertFiles(t, filepath.Dir(cfg.TLSCertFile), strings.TrimSuffix(filepath.Base(cfg.TLSCertFile), ".crt"), rotated)
	srv.Reload()
	if got := srv.tls.Leaf(); !got.Equal(rotated.Leaf) {
		t.Fatalf("after Reload the served certificate has serial %v, want the rotated one's %v", got.SerialNumber, rotated.Leaf.SerialNumber)
	}
	if first.Equal(rotated.Leaf) {
		t.Fatal("the rotated certificate is the first one: the test proves nothing")
	}

	if err := os.WriteFile(cfg.TLSCertFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.Reload()
	if got := srv.tls.Leaf(); !got.Equal(rotated.Leaf) {
		t.Errorf("a broken certificate file replaced the served certificate: %v", got.SerialNumber)
	}
	testutil.Eventually(t, "the warning about the TLS files", func() bool {
		return strings.Contains(logs.String(), "TLS files not loaded")
	})
}
