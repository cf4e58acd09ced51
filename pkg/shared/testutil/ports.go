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
