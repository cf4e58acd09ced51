package serve

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// countingListener signals each connection its inner listener accepted.
type countingListener struct {
	net.Listener
	accepted chan struct{}
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted <- struct{}{}
	}
	return c, err
}

// newTestHandshakeListener is a handshakeListener on 127.0.0.1 without a handshake timeout, so only Close ends a
// stalled handshake, with the channel its inner accepts are signalled on.
func newTestHandshakeListener(t *testing.T, ca *testutil.CA) (*handshakeListener, chan struct{}) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingListener{Listener: inner, accepted: make(chan struct{}, 16)}
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Server(t)}, NextProtos: []string{"http/1.1"}}
	l := newHandshakeListener(counted, cfg, 0, func(string, ...any) {})
	t.Cleanup(func() { _ = l.Close() })
	return l, counted.accepted
}

// Stall opens a TCP connection to addr that never sends a TLS ClientHello, closed when the test ends. Exported for
// the serve_test package's tests too.
func Stall(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestHandshakeListenerClose: Close ends the handshakes in progress and the handshaken connections nobody accepted,
// closing their connections, and leaves no goroutine behind; Accept then reports net.ErrClosed.
func TestHandshakeListenerClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ca := testutil.NewCA(t)
	l, accepted := newTestHandshakeListener(t, ca)
	addr := l.Addr().String()

	// One connection accepted, one handshaken but not accepted, three that never send a ClientHello.
	clientCfg := &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}}
	first, err := tls.Dial("tcp", addr, clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = first.Close() }()
	got, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if tc, ok := got.(*tls.Conn); !ok || !tc.ConnectionState().HandshakeComplete {
		t.Fatalf("Accept returned %T, want a *tls.Conn with its handshake complete", got)
	}
	_ = got.Close()
	second, err := tls.Dial("tcp", addr, clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = second.Close() }()
	clients := []net.Conn{second, Stall(t, addr), Stall(t, addr), Stall(t, addr)}
	for range 1 + len(clients) {
		select {
		case <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatal("the listener did not accept every connection")
		}
	}

	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	for i, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// EOF, or a reset when the server closed with the client's last handshake bytes unread.
		if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("client %d: %v, want the connection closed by the server", i, err)
		}
	}
	if c, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, %v; want net.ErrClosed", c, err)
	}
}

// TestHandshakeListenerCloseUnblocksAccept: an Accept waiting while a client stalls in its handshake returns when the
// listener closes.
func TestHandshakeListenerCloseUnblocksAccept(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	l, accepted := newTestHandshakeListener(t, testutil.NewCA(t))
	Stall(t, l.Addr().String())
	<-accepted
	errc := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		errc <- err
	}()
	_ = l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept = %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept still blocked 10s after Close")
	}
}
