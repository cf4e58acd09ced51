package backend

import (
	"net"
	"syscall"
)

// idleConnUsable reports whether a pooled connection may carry a request: the endpoint has neither closed it nor
// sent anything on it since its last response. It peeks at the socket without blocking (one recvfrom).
func idleConnUsable(conn net.Conn) bool {
	if tc, ok := conn.(*trackedConn); ok {
		conn = tc.Conn
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	usable := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		// EAGAIN: nothing to read and not closed. Anything else: closed by the peer (0 bytes), bytes nobody asked
		// for, or a socket error.
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		usable = rerr == syscall.EAGAIN
		return true
	})
	return err == nil && usable
}
