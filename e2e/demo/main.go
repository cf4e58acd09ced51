// Command demo runs kedge, winch and a demo backend on loopback, then runs real clients through them and prints
// each command with its output: curl with HTTP_PROXY, curl with HTTPS_PROXY through a CONNECT tunnel, kubectl through
// HTTPS_PROXY (when kubectl is installed), one denied request and a gRPC call through winch. It then keeps everything
// running until Ctrl-C (or exits at once with --once), stopping the processes cleanly and exiting 0.
//
// Run it with `make demo`, which builds the binaries first. It writes the files the README's tutorial names
// (kedge.crt, ca.crt, backend-ca.crt, demo.kubeconfig, the example documents...) into a directory it prints and runs
// every command there, so each one can be rerun by hand while the demo runs. It uses the documented default ports
// (kedge 8080, 8443, 8444; winch 8070, 8071; backend 18080, 18081, 18443) and replaces each one that is taken by a
// free port; --base_port (or KEDGE_DEMO_BASE_PORT) moves them all to base, base+1, ...; 0 picks free ports only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding the kedge and winch binaries")
	examples := flag.String("examples", "docs/examples", "directory holding the example config documents")
	once := flag.Bool("once", false, "exit after the demonstration instead of running until Ctrl-C")
	base := flag.String("base_port", "", "first of 8 consecutive ports to use instead of the defaults (also KEDGE_DEMO_BASE_PORT); 0 = free ports")
	flag.Parse()
	basePort, err := parseBasePort(*base, os.Getenv("KEDGE_DEMO_BASE_PORT"))
	if err == nil {
		err = run(*bin, *examples, basePort, *once)
	}
	if err != nil {
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

func run(bin, examples string, basePort int, once bool) error {
	// Signals first, so a Ctrl-C during start-up also ends in a clean stop. The binaries run in their own process
	// group: the terminal's Ctrl-C reaches only the demo, which stops them in order and exits 0.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	p, notes, err := choosePorts(basePort)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "kedge-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	backendCert, err := writeFiles(dir, examples, p)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Println(n)
	}
	fmt.Printf("ports: %s\n", p)
	fmt.Printf("files: %s\n", dir)

	backend, err := startBackend(addr(p.BackendHTTP), addr(p.BackendGRPC), addr(p.BackendTLS), backendCert)
	if err != nil {
		return err
	}
	defer backend.close()

	procs := &processes{dir: dir, bin: bin}
	defer procs.stopAll()
	kedgeCmd, winchCmd := kedgeCommand(p), winchCommand(p)
	fmt.Printf("\n$ %s\n$ %s\n", kedgeCmd.shell(), winchCmd.shell())
	kedge, err := procs.start(kedgeCmd, filepath.Join(dir, "kedge.log"))
	if err != nil {
		return err
	}
	winch, err := procs.start(winchCmd, filepath.Join(dir, "winch.log"))
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, kedge, fmt.Sprintf("http://127.0.0.1:%d/readyz", p.KedgeDebug)); err != nil {
		return stopped(ctx, procs.withLogs(err))
	}
	if err := waitHTTP(ctx, winch, fmt.Sprintf("http://127.0.0.1:%d/_healthz", p.WinchHTTP)); err != nil {
		return stopped(ctx, procs.withLogs(err))
	}
	fmt.Printf("kedge: HTTPS 127.0.0.1:%d, gRPC 127.0.0.1:%d, debug http://127.0.0.1:%d  (log %s)\n", p.KedgeHTTPS, p.KedgeGRPC, p.KedgeDebug, kedge.logPath)
	fmt.Printf("winch: HTTP proxy 127.0.0.1:%d, gRPC 127.0.0.1:%d  (log %s)\n", p.WinchHTTP, p.WinchGRPC, winch.logPath)
	fmt.Printf("backend: HTTP 127.0.0.1:%d, gRPC 127.0.0.1:%d, TLS 127.0.0.1:%d\n", p.BackendHTTP, p.BackendGRPC, p.BackendTLS)

	if err := demonstrate(ctx, dir, p); err != nil {
		return stopped(ctx, procs.withLogs(err))
	}
	fmt.Println("\nAll demo steps passed.")
	if once {
		return procs.stopAll()
	}
	fmt.Printf("\nStill running. To rerun the commands above yourself:\n    cd %s\n    export PATH=%s:$PATH\nCtrl-C stops everything.\n", dir, bin)
	select {
	case <-ctx.Done():
	case p := <-procs.exited():
		if ctx.Err() == nil {
			return procs.withLogs(fmt.Errorf("%s exited unexpectedly", p.name))
		}
	}
	fmt.Println("\nstopping...")
	return procs.stopAll()
}

// stopped turns a failure caused by the user's Ctrl-C (or SIGTERM) into a clean stop: interrupting the demo is not
// an error.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		fmt.Println("\nstopping...")
		return nil
	}
	return err
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

// command is one binary's argv as the tutorial shows it: flag groups, one per shown line.
type command struct {
	name  string
	lines [][]string
}

func (c command) args() []string {
	var out []string
	for _, l := range c.lines {
		out = append(out, l...)
	}
	return out
}

// shell is the command as a user types it, with the README's line breaks.
func (c command) shell() string {
	parts := make([]string, len(c.lines))
	for i, l := range c.lines {
		parts[i] = strings.Join(l, " ")
	}
	return c.name + " " + strings.Join(parts, " \\\n    ")
}

// kedgeCommand is step 1 of the README's tutorial; flags for ports other than the defaults come last.
func kedgeCommand(p ports) command {
	c := command{name: "kedge", lines: [][]string{
		{"--server_bind_address=127.0.0.1"},
		{"--server_tls_cert_file=" + fileKedgeCert, "--server_tls_key_file=" + fileKedgeKey},
		{"--kedge_config_director_config_path=" + fileDirector},
		{"--kedge_config_backendpool_config_path=" + fileBackendpool},
		{"--unsafe_bearer_token_proxy_auth_file=" + fileProxyToken},
		{"--server_shutdown_delay=0"},
	}}
	d := defaultPorts
	if p.KedgeDebug != d.KedgeDebug || p.KedgeHTTPS != d.KedgeHTTPS || p.KedgeGRPC != d.KedgeGRPC {
		c.lines = append(c.lines, []string{"--server_http_port=" + strconv.Itoa(p.KedgeDebug),
			"--server_http_tls_port=" + strconv.Itoa(p.KedgeHTTPS), "--server_grpc_tls_port=" + strconv.Itoa(p.KedgeGRPC)})
	}
	return c
}

// winchCommand is step 2 of the README's tutorial.
func winchCommand(p ports) command {
	c := command{name: "winch", lines: [][]string{
		{"--server_mapper_config_path=" + fileMapper},
		{"--server_auth_config_path=" + fileAuth},
		{"--client_tls_root_ca_files=" + fileKedgeCA},
		{"--state_dir=winch-state"},
	}}
	if p.WinchHTTP != defaultPorts.WinchHTTP || p.WinchGRPC != defaultPorts.WinchGRPC {
		c.lines = append(c.lines, []string{"--server_http_port=" + strconv.Itoa(p.WinchHTTP), "--server_grpc_port=" + strconv.Itoa(p.WinchGRPC)})
	}
	return c
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
			if errors.Is(context.Cause(ctx), context.Canceled) {
				return ctx.Err()
			}
			return fmt.Errorf("%s not ready at %s within 30s", p.name, url)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
