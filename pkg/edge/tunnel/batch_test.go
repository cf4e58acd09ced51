package tunnel

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// tlsPair is a TLS connection over real loopback TCP: server is kedge's side, client the peer.
func tlsPair(t *testing.T) (server *tls.Conn, client *tls.Conn) {
	t.Helper()
	ca := testutil.NewCA(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		sc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "127.0.0.1")}})
		_ = sc.SetDeadline(time.Now().Add(10 * time.Second))
		if sc.Handshake() != nil {
			sc.Close()
			accepted <- nil
			return
		}
		_ = sc.SetDeadline(time.Time{})
		accepted <- sc
	}()
	cc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		cc.Close()
		t.Fatal("server handshake failed")
	}
	t.Cleanup(func() { server.Close(); cc.Close() })
	return server, cc
}

// TestReadBuffered: after one blocking Read (one TLS record), readBuffered hands out the records that have arrived
// without waiting for more, and the connection reads and writes normally afterwards (the expired deadline was a
// temporary error for crypto/tls and is cleared).
func TestReadBuffered(t *testing.T) {
	t.Parallel()
	server, client := tlsPair(t)
	// Three full records and a short one, in one write: they arrive together.
	want := bytes.Repeat([]byte("0123456789abcdef"), 3*1024+7)
	go func() { _, _ = client.Write(want) }()

	end := &connEnd{conn: server}
	if !end.canBatch() {
		t.Fatal("a TLS connection does not batch")
	}
	got := make([]byte, 0, len(want))
	buf := make([]byte, 32<<10)
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		n, err := end.Read(buf)
		if err != nil {
			t.Fatalf("Read after %d bytes: %v", len(got), err)
		}
		got = append(got, buf[:n]...)
		big := make([]byte, batchSize)
		m, err := end.readBuffered(big)
		if err != nil {
			t.Fatalf("readBuffered after %d bytes: %v", len(got), err)
		}
		got = append(got, big[:m]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want the %d written, in order", len(got), len(want))
	}

	// Nothing is buffered now: readBuffered returns at once with nothing.
	start := time.Now()
	if n, err := end.readBuffered(buf); n != 0 || err != nil {
		t.Fatalf("readBuffered with nothing sent = %d, %v; want 0, nil", n, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("readBuffered with nothing sent waited %v", d)
	}

	// The connection still works both ways, and a read blocks again until bytes come.
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _ = client.Write([]byte("later"))
	}()
	n, err := end.Read(buf)
	if err != nil || string(buf[:n]) != "later" {
		t.Fatalf("Read after readBuffered = %q, %v; want \"later\"", buf[:n], err)
	}
	if _, err := server.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, buf[:4]); err != nil || string(buf[:4]) != "pong" {
		t.Fatalf("the peer read %q, %v", buf[:4], err)
	}

	// The end of the stream comes back from readBuffered with the bytes before it.
	go func() {
		_, _ = client.Write([]byte("last"))
		_ = client.CloseWrite()
	}()
	var tail []byte
	for time.Now().Before(deadline) {
		n, err := end.Read(buf)
		tail = append(tail, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		m, err := end.readBuffered(buf)
		tail = append(tail, buf[:m]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if string(tail) != "last" {
		t.Fatalf("read %q before EOF, want \"last\"", tail)
	}
}
