package wire

import (
	"net/http"
	"strings"
)

// connectionHeaders are the header fields that describe one connection rather than the message (RFC 9110 §7.6.1),
// plus Keep-Alive and Proxy-Connection, which older clients send. It is a function, not a variable, so that no
// caller can change the list.
func connectionHeaders() [7]string {
	return [...]string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}
}

// ConnectionHeader reports whether name (in any case) is a header field that describes one connection rather than the
// message: Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding or Upgrade. A proxy never
// forwards one, in HTTP or as gRPC metadata. Proxy-Authorization and Proxy-Authenticate are hop-by-hop too, but they
// are credentials each side handles itself.
func ConnectionHeader(name string) bool {
	for _, h := range connectionHeaders() {
		if strings.EqualFold(name, h) {
			return true
		}
	}
	return false
}

// RemoveConnectionHeaders deletes from h the connection header fields (ConnectionHeader) and every field the
// Connection header names. With keepUpgrade, Connection and Upgrade and the fields Connection names stay: a request
// that switches protocols (WebSocket) needs them end to end.
func RemoveConnectionHeaders(h http.Header, keepUpgrade bool) {
	if !keepUpgrade {
		for _, v := range h.Values("Connection") {
			for _, name := range strings.Split(v, ",") {
				if name = strings.TrimSpace(name); name != "" {
					h.Del(name)
				}
			}
		}
	}
	for _, name := range connectionHeaders() {
		if keepUpgrade && (name == "Connection" || name == "Upgrade") {
			continue
		}
		h.Del(name)
	}
}

// HopMetadata reports whether a proxy (kedge or winch) must not pass an incoming gRPC metadata key (lower case, as
// in metadata.MD) on to the next hop: pseudo headers, connection headers and Host, the headers the proxy's own gRPC
// client sets (content-type, content-length, user-agent), gRPC's transport keys (compression, deadline, status,
// retry bookkeeping), which the proxy's client negotiates with the next hop itself, and proxy-authorization, the
// credential meant for the proxy.
func HopMetadata(key string) bool {
	if strings.HasPrefix(key, ":") || ConnectionHeader(key) {
		return true
	}
	switch key {
	case MetadataProxyAuthz, "host", "content-type", "content-length", "user-agent",
		"grpc-accept-encoding", "grpc-encoding", "grpc-timeout", "grpc-status", "grpc-message",
		"grpc-status-details-bin", "grpc-message-type", "grpc-previous-rpc-attempts", "grpc-retry-pushback-ms":
		return true
	}
	return false
}
