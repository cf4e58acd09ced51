package socks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// RFC 1928 constants.
const (
	version5 = 0x05

	methodNoAuth       = 0x00
	methodNoAcceptable = 0xFF

	cmdConnect      = 0x01
	cmdBind         = 0x02
	cmdUDPAssociate = 0x03

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04
)

// Reply codes (RFC 1928 §6).
const (
	replySucceeded           byte = 0x00
	replyGeneralFailure      byte = 0x01
	replyNotAllowed          byte = 0x02
	replyHostUnreachable     byte = 0x04
	replyConnectionRefused   byte = 0x05
	replyCommandNotSupported byte = 0x07
	replyAddressNotSupported byte = 0x08
)

// replyNames label the replies in metrics and logs.
var replyNames = map[byte]string{
	replySucceeded:           "succeeded",
	replyGeneralFailure:      "general-failure",
	replyNotAllowed:          "not-allowed",
	replyHostUnreachable:     "host-unreachable",
	replyConnectionRefused:   "connection-refused",
	replyCommandNotSupported: "command-not-supported",
	replyAddressNotSupported: "address-type-not-supported",
}

// errBadVersion is a greeting or request that is not SOCKS5 (a SOCKS4 or HTTP client, or noise): the connection is
// closed without a reply, since the client would not understand one.
var errBadVersion = errors.New("socks: not a SOCKS5 client")

// requestError is a request that gets a failure reply before the connection is closed.
type requestError struct {
	reply byte
	msg   string
}

func (e *requestError) Error() string { return "socks: " + e.msg }

// request is a parsed SOCKS5 request.
type request struct {
	cmd  byte
	atyp byte
	host string // a domain name exactly as sent (never resolved here), or an IP address
	port uint16
}

// hostport is the destination as "host:port" (IPv6 in brackets): what winch maps, as for an HTTP CONNECT.
func (r request) hostport() string { return net.JoinHostPort(r.host, strconv.Itoa(int(r.port))) }

// readGreeting reads the client's method selection message (VER NMETHODS METHODS) and reports whether it offers
// "no authentication required", the only method winch serves on its loopback-only port. It reads exactly the
// message: at most 257 bytes.
func readGreeting(r io.Reader) (noAuth bool, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return false, fmt.Errorf("socks: reading the greeting: %w", err)
	}
	if hdr[0] != version5 {
		return false, errBadVersion
	}
	var methods [255]byte
	n := int(hdr[1])
	if _, err := io.ReadFull(r, methods[:n]); err != nil {
		return false, fmt.Errorf("socks: reading the methods: %w", err)
	}
	for _, m := range methods[:n] {
		if m == methodNoAuth {
			return true, nil
		}
	}
	return false, nil
}

// readRequest reads one request (VER CMD RSV ATYP DST.ADDR DST.PORT), exactly its bytes (at most 262), so that
// whatever the client sends next (a TLS ClientHello, sent early) stays for the tunnel. A *requestError names the
// reply a malformed or unsupported request gets; other errors close the connection without one. The whole request
// is read before BIND and UDP ASSOCIATE are refused, so that the reply is not lost to a reset from unread bytes.
func readRequest(r io.Reader) (request, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return request{}, fmt.Errorf("socks: reading the request: %w", err)
	}
	if hdr[0] != version5 {
		return request{}, errBadVersion
	}
	req := request{cmd: hdr[1], atyp: hdr[3]}
	var addr [255]byte
	switch req.atyp {
	case atypIPv4:
		if _, err := io.ReadFull(r, addr[:4]); err != nil {
			return request{}, fmt.Errorf("socks: reading the IPv4 address: %w", err)
		}
		req.host = netip.AddrFrom4([4]byte(addr[:4])).String()
	case atypIPv6:
		if _, err := io.ReadFull(r, addr[:16]); err != nil {
			return request{}, fmt.Errorf("socks: reading the IPv6 address: %w", err)
		}
		req.host = netip.AddrFrom16([16]byte(addr[:16])).String()
	case atypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return request{}, fmt.Errorf("socks: reading the name length: %w", err)
		}
		if _, err := io.ReadFull(r, addr[:n[0]]); err != nil {
			return request{}, fmt.Errorf("socks: reading the name: %w", err)
		}
		req.host = string(addr[:n[0]])
	default:
		// The address's length is unknown: nothing more can be read.
		return request{}, &requestError{replyAddressNotSupported, fmt.Sprintf("address type %#x is not supported", req.atyp)}
	}
	var port [2]byte
	if _, err := io.ReadFull(r, port[:]); err != nil {
		return request{}, fmt.Errorf("socks: reading the port: %w", err)
	}
	req.port = binary.BigEndian.Uint16(port[:])
	if req.cmd != cmdConnect {
		return request{}, &requestError{replyCommandNotSupported, fmt.Sprintf("command %s is not supported; winch serves CONNECT only", cmdName(req.cmd))}
	}
	if req.atyp == atypDomain && !validName(req.host) {
		return request{}, &requestError{replyGeneralFailure, fmt.Sprintf("%q is not a host name", req.host)}
	}
	if req.port == 0 {
		return request{}, &requestError{replyGeneralFailure, "port 0 is not a destination"}
	}
	return req, nil
}

// validName reports whether s can be a DNS name: 1 to 255 bytes of letters, digits, '-', '_' and '.'. Anything else
// (a ':' that would make "host:port" ambiguous, '/', spaces, control bytes) is refused before it reaches the
// mapper, which sees the same kind of name as from an HTTP CONNECT.
func validName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

func cmdName(cmd byte) string {
	switch cmd {
	case cmdConnect:
		return "CONNECT"
	case cmdBind:
		return "BIND"
	case cmdUDPAssociate:
		return "UDP ASSOCIATE"
	}
	return fmt.Sprintf("%#x", cmd)
}

// appendReply appends a reply (VER REP RSV ATYP BND.ADDR BND.PORT) to b. bound is the address winch connects to
// the destination from (the upstream connection's local address); nil, or not a TCP address, sends 0.0.0.0:0.
func appendReply(b []byte, code byte, bound net.Addr) []byte {
	b = append(b, version5, code, 0x00)
	var ip netip.Addr
	var port uint16
	if tcp, ok := bound.(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(tcp.IP); ok {
			ip, port = a.Unmap(), uint16(tcp.Port)
		}
	}
	switch {
	case ip.Is6():
		a := ip.As16()
		b = append(append(b, atypIPv6), a[:]...)
	case ip.Is4():
		a := ip.As4()
		b = append(append(b, atypIPv4), a[:]...)
	default:
		b = append(b, atypIPv4, 0, 0, 0, 0)
		port = 0
	}
	return binary.BigEndian.AppendUint16(b, port)
}

// replyFor maps the refusal of a tunnel (kedge's answer to the CONNECT, relayed, or winch's own error) to a SOCKS
// reply code:
//
//	401, 403, 407, 429 (kedge: unauthorized, forbidden, rate-limited;
//	  winch: --unmatched=reject, a MITM route)                          -> 0x02 connection not allowed by ruleset
//	winch's other errors (kedge unreachable, auth source failed,
//	  direct dial failed)                                                -> 0x01 general SOCKS server failure
//	kedge 5xx tunnel-dial-error, no-connection-to-all-resolved-addresses,
//	  backend-transport-closed (the backend did not take the connection) -> 0x05 connection refused
//	any other kedge 5xx (502 no-route, no-backend, no-resolution-available,
//	  503 shutting-down, 504)                                            -> 0x04 host unreachable
//	anything else (a 400)                                                -> 0x01 general SOCKS server failure
func replyFor(resp *http.Response) byte {
	switch resp.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusProxyAuthRequired, http.StatusTooManyRequests:
		return replyNotAllowed
	}
	if resp.Header.Get(wire.HeaderWinchErrorType) != "" {
		return replyGeneralFailure
	}
	if resp.StatusCode < 500 {
		return replyGeneralFailure
	}
	switch wire.ErrorType(resp.Header.Get(wire.HeaderKedgeErrorType)) {
	case wire.ErrTunnelDial, wire.ErrNoConnection, wire.ErrBackendClosed:
		return replyConnectionRefused
	}
	return replyHostUnreachable
}
