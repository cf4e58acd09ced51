package testutil

import (
	"net"
	"testing"
)

// RefusedPort returns a 127.0.0.1 port that nothing listens on, for tests of a refused connection: it binds an
// ephemeral port and frees it again. Use it only for a port nobody is meant to bind; a server a test starts takes its
// port from its own listener on 127.0.0.1:0, never from a port reserved and freed before.
func RefusedPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return port
}

// TCPPair returns the two ends of a TCP connection on 127.0.0.1, for code that serves a net.Conn; both are closed
// when the test ends.
func TCPPair(t testing.TB) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		_ = client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}
