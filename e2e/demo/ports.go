package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ports are the demo's listening ports. The documented defaults are the binaries' own defaults (kedge 8080, 8443,
// 8444; winch 8070, 8071) and the backend ports docs/examples/backendpool.yaml names.
type ports struct {
	KedgeDebug, KedgeHTTPS, KedgeGRPC    int
	WinchHTTP, WinchGRPC                 int
	BackendHTTP, BackendGRPC, BackendTLS int
}

var defaultPorts = ports{
	KedgeDebug: 8080, KedgeHTTPS: 8443, KedgeGRPC: 8444,
	WinchHTTP: 8070, WinchGRPC: 8071,
	BackendHTTP: 18080, BackendGRPC: 18081, BackendTLS: 18443,
}

// fields lists the ports with their names, in a fixed order, for choosing and printing them.
func (p *ports) fields() []struct {
	name string
	port *int
} {
	return []struct {
		name string
		port *int
	}{
		{"kedge debug", &p.KedgeDebug}, {"kedge HTTPS", &p.KedgeHTTPS}, {"kedge gRPC", &p.KedgeGRPC},
		{"winch HTTP", &p.WinchHTTP}, {"winch gRPC", &p.WinchGRPC},
		{"backend HTTP", &p.BackendHTTP}, {"backend gRPC", &p.BackendGRPC}, {"backend TLS", &p.BackendTLS},
	}
}

// choosePorts decides the demo's ports. base < 0: the defaults, each one that is taken replaced by a free port (and
// said so on notes). base == 0: free ports only (what the tests use). base > 0: base, base+1, ... base+7.
// The processes bind the ports right after; a port taken in between makes that process fail to start with a clear
// "address already in use".
func choosePorts(base int) (p ports, notes []string, err error) {
	p = defaultPorts
	for i, f := range p.fields() {
		switch {
		case base > 0:
			*f.port = base + i
			if !portFree(*f.port) {
				return p, nil, fmt.Errorf("%s port %d (base port %d + %d) is already in use; choose another --base_port", f.name, *f.port, base, i)
			}
		case base == 0 || !portFree(*f.port):
			free, err := freePort()
			if err != nil {
				return p, nil, err
			}
			if base < 0 {
				notes = append(notes, fmt.Sprintf("port %d (%s) is taken; using %d instead", *f.port, f.name, free))
			}
			*f.port = free
		}
	}
	return p, notes, nil
}

// parseBasePort reads --base_port's value, or KEDGE_DEMO_BASE_PORT when the flag is not given. "" means the defaults.
func parseBasePort(flagValue, env string) (int, error) {
	s := flagValue
	if s == "" {
		s = env
	}
	if s == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > 65535-8 {
		return 0, fmt.Errorf("base port %q: want 0 (free ports) or a port from 1 to %d", s, 65535-8)
	}
	return n, nil
}

func portFree(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// String prints the ports as the demo shows them at start.
func (p ports) String() string {
	var b strings.Builder
	for _, f := range p.fields() {
		fmt.Fprintf(&b, "%s %d, ", f.name, *f.port)
	}
	return strings.TrimSuffix(b.String(), ", ")
}
