// Command demo runs kedge, winch and a demo backend on loopback, then runs real clients through them and prints
// each command with its output: curl with HTTP_PROXY, curl with HTTPS_PROXY through a CONNECT tunnel, a gRPC call
// through winch, kubectl through HTTPS_PROXY (when kubectl is installed), and one denied request. It then keeps
// everything running until Ctrl-C (or exits at once with --once), stopping the processes cleanly.
//
// Run it with `make demo`, which builds the binaries first. It uses the documented default ports (kedge 8080,
// 8443, 8444; winch 8070, 8071; backend 18080, 18081, 18443) and the files in docs/examples/.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the kedge and winch binaries")
	examples := flag.String("examples", "docs/examples", "directory holding the example config documents")
	once := flag.Bool("once", false, "exit after the demonstration instead of running until Ctrl-C")
	flag.Parse()
	if err := run(*bin, *examples, *once); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		os.Exit(1)
	}
}

// fatal satisfies testutil.T so the demo generates its throwaway PKI with the tests' code.
type fatal struct{}

func (fatal) Helper() {}
func (fatal) Fatalf(format string, args ...any) {
	panic(fmt.Errorf(format, args...))
}

func run(bin, examples string, once bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	dir, err := os.MkdirTemp("", "kedge-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// A throwaway PKI: one CA for kedge (trusted by winch; it also issues winch's client certificate), one for the "cluster" backend (trusted by the clients
	// at the other end of the CONNECT tunnel, as kubectl trusts an API server's CA).
	kedgeCA, backendCA := testutil.NewCA(fatal{}), testutil.NewCA(fatal{})
	f := files{dir: dir}
	f.kedgeCA = kedgeCA.WriteFiles(fatal{}, dir)
	f.kedgeCert, f.kedgeKey = testutil.WriteCertFiles(fatal{}, dir, "kedge", kedgeCA.Server(fatal{}, "localhost", "127.0.0.1"))
	f.clientCert, f.clientKey = testutil.WriteCertFiles(fatal{}, dir, "winch-client", kedgeCA.Client(fatal{}, "demo-user@example.com"))
	f.backendCA = backendCA.WriteFiles(fatal{}, dir)
	backendCert := backendCA.Server(fatal{}, "api.demo.kedge.local", "localhost")

	backend, err := startBackend("127.0.0.1:18080", "127.0.0.1:18081", "127.0.0.1:18443", backendCert)
	if err != nil {
		return err
	}
	defer backend.close()

	procs := &processes{}
	defer procs.stopAll()
	kedge, err := procs.start(filepath.Join(bin, "kedge"), filepath.Join(dir, "kedge.log"),
		"--server_bind_address=127.0.0.1",
		"--server_tls_cert_file="+f.kedgeCert, "--server_tls_key_file="+f.kedgeKey,
		"--kedge_config_director_config_path="+filepath.Join(examples, "director.yaml"),
		"--kedge_config_backendpool_config_path="+filepath.Join(examples, "backendpool.yaml"),
		"--unsafe_bearer_token_proxy_auth=demo-proxy-token",
		// Client certificates are verified when sent (winch sends one) and not required, so step 4 can show a
		// request without credentials being refused by the token check.
		"--server_tls_client_ca_files="+f.kedgeCA, "--server_tls_client_cert_required=false",
		"--server_shutdown_delay=0", // no load balancer to wait for: Ctrl-C stops at once
	)
	if err != nil {
		return err
	}
	winch, err := procs.start(filepath.Join(bin, "winch"), filepath.Join(dir, "winch.log"),
		"--server_mapper_config_path="+filepath.Join(examples, "winch-mapper.yaml"),
		"--server_auth_config_path="+filepath.Join(examples, "winch-auth.yaml"),
		"--client_tls_root_ca_files="+f.kedgeCA,
		"--client_tls_cert_file="+f.clientCert, "--client_tls_key_file="+f.clientKey,
		"--state_dir="+filepath.Join(dir, "winch-state"),
	)
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, kedge, "http://127.0.0.1:8080/readyz"); err != nil {
		return procs.withLogs(err)
	}
	if err := waitHTTP(ctx, winch, "http://127.0.0.1:8070/_healthz"); err != nil {
		return procs.withLogs(err)
	}
	fmt.Printf("kedge: HTTPS 127.0.0.1:8443, gRPC 127.0.0.1:8444, debug http://127.0.0.1:8080  (log %s)\n", kedge.logPath)
	fmt.Printf("winch: HTTP proxy 127.0.0.1:8070, gRPC 127.0.0.1:8071                    (log %s)\n", winch.logPath)
	fmt.Printf("backend: HTTP 127.0.0.1:18080, gRPC 127.0.0.1:18081, TLS 127.0.0.1:18443\n")

	if err := demonstrate(ctx, f); err != nil {
		return procs.withLogs(err)
	}
	fmt.Println("\nAll demo steps passed.")
	if once {
		return procs.stopAll()
	}
	fmt.Printf("\nStill running; try the commands above yourself (certificates in %s). Ctrl-C stops everything.\n", dir)
	select {
	case <-ctx.Done():
	case p := <-procs.exited():
		return procs.withLogs(fmt.Errorf("%s exited unexpectedly", p.name))
	}
	fmt.Println("\nstopping...")
	return procs.stopAll()
}

// files are the paths of the demo's generated certificates.
type files struct {
	dir                   string
	kedgeCA, backendCA    string
	kedgeCert, kedgeKey   string
	clientCert, clientKey string // winch's client certificate, issued by the kedge CA
}

func waitHTTP(ctx context.Context, p *process, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if ok, _ := get(ctx, url); ok {
			return nil
		}
		if p.hasExited() {
			return fmt.Errorf("%s exited during start-up", p.name)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s within 30s", p.name, url)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
