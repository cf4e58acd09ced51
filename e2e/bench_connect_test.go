package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchChunk is what one b.N iteration of a CONNECT benchmark writes through the tunnel.
const benchChunk = 64 << 10

// startBenchSink runs a byte sink on 127.0.0.1 (TLS when cert is set): per connection it reads an 8-byte big-endian
// length, discards that many bytes and answers with the same 8 bytes, so the sender knows everything arrived.
// Cleanup closes the listener and every connection and waits for the handlers.
func startBenchSink(tb testing.TB, cert *tls.Certificate) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: []string{"sink"}})
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				var hdr [8]byte
				for {
					if _, err := io.ReadFull(c, hdr[:]); err != nil {
						return
					}
					n := int64(binary.BigEndian.Uint64(hdr[:]))
					if got, err := io.CopyN(io.Discard, c, n); err != nil || got != n {
						return
					}
					if _, err := c.Write(hdr[:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// benchConnect sends b.N chunks through one connection to the sink that dial returns (a direct TLS connection or
// a CONNECT tunnel) and waits for the sink's acknowledgement.
func benchConnect(b *testing.B, dial func(b *testing.B) (io.Writer, io.Reader, func())) {
	w, r, closeConn := dial(b)
	defer closeConn()
	chunk := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(b.N)*benchChunk)
	if _, err := w.Write(hdr[:]); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		if _, err := w.Write(chunk); err != nil {
			b.Fatalf("writing chunk %d: %v", i, err)
		}
	}
	var ack [8]byte
	if _, err := io.ReadFull(r, ack[:]); err != nil || ack != hdr {
		b.Fatalf("sink acknowledgement %x, %v; want %x", ack, err, hdr)
	}
	b.StopTimer()
}

// dialDirect connects to the TLS sink itself.
func (e *benchEnv) dialDirect(b *testing.B) (io.Writer, io.Reader, func()) {
	c, err := tls.Dial("tcp", e.directSink, e.tlsConfig("sink"))
	if err != nil {
		b.Fatal(err)
	}
	return c, c, func() { c.Close() }
}

// dialKedge opens a CONNECT tunnel to the sink through kedge's HTTPS port.
func (e *benchEnv) dialKedge(b *testing.B) (io.Writer, io.Reader, func()) {
	c, err := tls.Dial("tcp", e.kedgeHTTPS, e.tlsConfig("http/1.1"))
	if err != nil {
		b.Fatal(err)
	}
	return benchConnectThrough(b, c, "Proxy-Authorization: Bearer "+benchToken+"\r\n")
}

// dialWinch opens a CONNECT tunnel through winch (HTTPS_PROXY form), which tunnels through kedge.
func (e *benchEnv) dialWinch(b *testing.B) (io.Writer, io.Reader, func()) {
	c, err := net.Dial("tcp", strings.TrimPrefix(e.winchProxy, "http://"))
	if err != nil {
		b.Fatal(err)
	}
	return benchConnectThrough(b, c, "")
}

func benchConnectThrough(b *testing.B, c net.Conn, extra string) (io.Writer, io.Reader, func()) {
	target := benchSink + ":443"
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", target, target, extra); err != nil {
		c.Close()
		b.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		b.Fatalf("reading the answer to CONNECT: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		b.Fatalf("CONNECT %s: %s (%s %s)", target, resp.Status, resp.Header.Get("X-Kedge-Error-Type"), resp.Header.Get("X-Kedge-Error"))
	}
	_ = c.SetDeadline(time.Time{})
	return c, br, func() { c.Close() }
}
