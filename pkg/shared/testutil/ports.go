package testutil

import (
	"net"
	"sync"
	"sync/atomic"
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

// RawServer is a plain TCP server on 127.0.0.1 that runs its handler for every connection (on a goroutine of its
// own, closing the connection when the handler returns) until the test ends; then it closes the listener and every
// connection and waits for the handlers.
type RawServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	count atomic.Int64
}

// NewRawServer starts a RawServer running handle.
func NewRawServer(t testing.TB, handle func(net.Conn)) *RawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &RawServer{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.count.Add(1)
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() { _ = c.Close() }()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// Addr is the server's "127.0.0.1:port".
func (s *RawServer) Addr() string { return s.ln.Addr().String() }

// Port is the server's port.
func (s *RawServer) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Accepted is the number of connections accepted so far.
func (s *RawServer) Accepted() int64 { return s.count.Load() }
