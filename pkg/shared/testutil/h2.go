package testutil

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// H2Start starts an HTTP/2 connection on c as a client (the preface and empty SETTINGS), sets a 10-second deadline
// on c, and returns a framer over it: for tests that speak HTTP/2 frame by frame.
func H2Start(t testing.TB, c net.Conn) *http2.Framer {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return fr
}
