//go:build !linux

package backend

import "net"

// idleConnUsable cannot peek at a socket here: a closed kept-alive connection shows as a failed first read, after
// which the request is sent again on a new connection.
func idleConnUsable(net.Conn) bool { return true }
