package socks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// connectRequest encodes a CONNECT request for host (an IPv4 or IPv6 address or a name) and port.
func connectRequest(cmd byte, host string, port uint16) []byte {
	b := []byte{version5, cmd, 0}
	ip := net.ParseIP(host)
	switch {
	case ip != nil && ip.To4() != nil:
		b = append(append(b, atypIPv4), ip.To4()...)
	case ip != nil:
		b = append(append(b, atypIPv6), ip.To16()...)
	default:
		b = append(append(b, atypDomain, byte(len(host))), host...)
	}
	return binary.BigEndian.AppendUint16(b, port)
}

func TestReadGreeting(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      []byte
		noAuth  bool
		wantErr error // nil, errBadVersion, or io.ErrUnexpectedEOF / io.EOF for short input
	}{
		{"no auth offered alone", []byte{5, 1, 0}, true, nil},
		{"no auth among others", []byte{5, 3, 2, 1, 0}, true, nil},
		{"only username/password", []byte{5, 1, 2}, false, nil},
		{"no methods at all", []byte{5, 0}, false, nil},
		{"255 methods, no auth last", append([]byte{5, 255}, append(bytes.Repeat([]byte{0x80}, 254), 0)...), true, nil},
		{"SOCKS4", []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, false, errBadVersion},
		{"HTTP", []byte("GET / HTTP/1.1\r\n\r\n"), false, errBadVersion},
		{"empty", nil, false, io.EOF},
		{"one byte", []byte{5}, false, io.ErrUnexpectedEOF},
		{"methods cut short", []byte{5, 3, 0}, false, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := bytes.NewReader(tc.in)
			noAuth, err := readGreeting(r)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if noAuth != tc.noAuth {
				t.Errorf("noAuth = %v, want %v", noAuth, tc.noAuth)
			}
		})
	}
}

func TestReadRequest(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 63) // 255 bytes
	tests := []struct {
		name      string
		in        []byte
		hostport  string // for a valid request
		reply     byte   // for a *requestError
		wantErr   error  // for other errors
		remaining int    // bytes that must be left unread
	}{
		{name: "IPv4", in: connectRequest(cmdConnect, "192.0.2.7", 443), hostport: "192.0.2.7:443"},
		{name: "IPv6", in: connectRequest(cmdConnect, "2001:db8::1", 8443), hostport: "[2001:db8::1]:8443"},
		{name: "name", in: connectRequest(cmdConnect, "api.example.com", 443), hostport: "api.example.com:443"},
		{name: "name of 255 bytes", in: connectRequest(cmdConnect, long, 1), hostport: long + ":1"},
		{name: "name with underscore and case", in: connectRequest(cmdConnect, "_svc.Example.COM", 65535), hostport: "_svc.Example.COM:65535"},
		{name: "bytes after the request stay unread", in: append(connectRequest(cmdConnect, "a.example", 443), 0x16, 0x03, 0x01),
			hostport: "a.example:443", remaining: 3},
		{name: "BIND", in: connectRequest(cmdBind, "a.example", 443), reply: replyCommandNotSupported},
		{name: "UDP ASSOCIATE", in: connectRequest(cmdUDPAssociate, "0.0.0.0", 0), reply: replyCommandNotSupported},
		{name: "unknown command", in: connectRequest(0x09, "a.example", 443), reply: replyCommandNotSupported},
		{name: "unknown address type", in: []byte{5, 1, 0, 0x02, 1, 2, 3, 4, 0, 80}, reply: replyAddressNotSupported},
		{name: "empty name", in: []byte{5, 1, 0, atypDomain, 0, 1, 187}, reply: replyGeneralFailure},
		{name: "name with a colon", in: connectRequest(cmdConnect, "a.example:22", 443), reply: replyGeneralFailure},
		{name: "name with a NUL", in: connectRequest(cmdConnect, "a.example\x00.evil", 443), reply: replyGeneralFailure},
		{name: "name with a slash", in: connectRequest(cmdConnect, "a.example/x", 443), reply: replyGeneralFailure},
		{name: "name with a space", in: connectRequest(cmdConnect, "a example", 443), reply: replyGeneralFailure},
		{name: "name in brackets", in: connectRequest(cmdConnect, "[::1]", 443), reply: replyGeneralFailure},
		{name: "port 0", in: connectRequest(cmdConnect, "a.example", 0), reply: replyGeneralFailure},
		{name: "SOCKS4 request", in: []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, wantErr: errBadVersion},
		{name: "empty", in: nil, wantErr: io.EOF},
		{name: "header cut short", in: []byte{5, 1, 0}, wantErr: io.ErrUnexpectedEOF},
		{name: "IPv4 cut short", in: []byte{5, 1, 0, atypIPv4, 127, 0}, wantErr: io.ErrUnexpectedEOF},
		{name: "IPv6 cut short", in: append([]byte{5, 1, 0, atypIPv6}, make([]byte, 15)...), wantErr: io.ErrUnexpectedEOF},
		{name: "name length missing", in: []byte{5, 1, 0, atypDomain}, wantErr: io.EOF},
		{name: "name longer than sent", in: []byte{5, 1, 0, atypDomain, 255, 'a', 'b'}, wantErr: io.ErrUnexpectedEOF},
		{name: "port missing", in: []byte{5, 1, 0, atypIPv4, 127, 0, 0, 1}, wantErr: io.EOF},
		{name: "port cut short", in: []byte{5, 1, 0, atypIPv4, 127, 0, 0, 1, 1}, wantErr: io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := bytes.NewReader(tc.in)
			req, err := readRequest(r)
			var re *requestError
			switch {
			case tc.hostport != "":
				if err != nil {
					t.Fatalf("err = %v, want %s", err, tc.hostport)
				}
				if got := req.hostport(); got != tc.hostport {
					t.Errorf("hostport = %q, want %q", got, tc.hostport)
				}
				if r.Len() != tc.remaining {
					t.Errorf("%d bytes left unread, want %d", r.Len(), tc.remaining)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) || errors.As(err, &re) {
					t.Errorf("err = %v, want %v without a reply", err, tc.wantErr)
				}
			default:
				if !errors.As(err, &re) || re.reply != tc.reply {
					t.Fatalf("err = %v, want reply %#x", err, tc.reply)
				}
				if tc.reply != replyAddressNotSupported && r.Len() != 0 {
					t.Errorf("%d bytes of the refused request left unread", r.Len())
				}
			}
		})
	}
}

func TestAppendReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		code  byte
		bound net.Addr
		want  []byte
	}{
		{"IPv4", replySucceeded, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, []byte{5, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40}},
		{"IPv6", replySucceeded, &net.TCPAddr{IP: net.ParseIP("::1"), Port: 443},
			[]byte{5, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 187}},
		{"failure without address", replyNotAllowed, nil, []byte{5, 2, 0, 1, 0, 0, 0, 0, 0, 0}},
		{"not a TCP address", replyGeneralFailure, &net.UnixAddr{Name: "/x", Net: "unix"}, []byte{5, 1, 0, 1, 0, 0, 0, 0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := appendReply(nil, tc.code, tc.bound); !bytes.Equal(got, tc.want) {
				t.Errorf("reply = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReplyFor(t *testing.T) {
	t.Parallel()
	kedge := func(status int, typ wire.ErrorType) *http.Response {
		return &http.Response{StatusCode: status, Header: http.Header{wire.HeaderKedgeErrorType: {string(typ)}}}
	}
	winch := func(status int, typ wire.ErrorType) *http.Response {
		return &http.Response{StatusCode: status, Header: http.Header{wire.HeaderWinchErrorType: {string(typ)}}}
	}
	tests := []struct {
		name string
		resp *http.Response
		want byte
	}{
		{"kedge 401", kedge(401, wire.ErrUnauthorized), replyNotAllowed},
		{"kedge 403", kedge(403, wire.ErrForbidden), replyNotAllowed},
		{"kedge 429", kedge(429, wire.ErrRateLimited), replyNotAllowed},
		{"winch reject", winch(403, wire.ErrNotKedgeDestination), replyNotAllowed},
		{"kedge 502 no route", kedge(502, wire.ErrNoRoute), replyHostUnreachable},
		{"kedge 502 no backend", kedge(502, wire.ErrNoBackend), replyHostUnreachable},
		{"kedge 503 shutting down", kedge(503, wire.ErrShuttingDown), replyHostUnreachable},
		{"kedge 504", &http.Response{StatusCode: 504, Header: http.Header{}}, replyHostUnreachable},
		{"kedge 502 dial error", kedge(502, wire.ErrTunnelDial), replyConnectionRefused},
		{"kedge 502 no connection", kedge(502, wire.ErrNoConnection), replyConnectionRefused},
		{"winch 502 transport", winch(502, wire.ErrTransportUnknown), replyGeneralFailure},
		{"winch 502 auth source", winch(502, wire.ErrAuthSource), replyGeneralFailure},
		{"winch 400", winch(400, wire.ErrBadRequest), replyGeneralFailure},
		{"kedge 400", kedge(400, wire.ErrBadRequest), replyGeneralFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := replyFor(tc.resp); got != tc.want {
				t.Errorf("replyFor = %#x, want %#x", got, tc.want)
			}
		})
	}
}

// FuzzSOCKSRequest feeds arbitrary bytes to the request parser: it never panics, never reads past the request, and
// what it accepts is a well-formed destination that encodes back to exactly the bytes it read.
func FuzzSOCKSRequest(f *testing.F) {
	f.Add(connectRequest(cmdConnect, "api.example.com", 443))
	f.Add(connectRequest(cmdConnect, "192.0.2.1", 80))
	f.Add(connectRequest(cmdConnect, "2001:db8::1", 8443))
	f.Add(connectRequest(cmdBind, "a.example", 1))
	f.Add([]byte{5, 1, 0, atypDomain, 255, 'a'})
	f.Add([]byte{5, 1, 0, 9})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		req, err := readRequest(r)
		read := in[:len(in)-r.Len()]
		if len(read) > 262 {
			t.Fatalf("read %d bytes, more than a request can have", len(read))
		}
		if err != nil {
			var re *requestError
			if errors.As(err, &re) && replyNames[re.reply] == "" {
				t.Fatalf("unknown reply %#x", re.reply)
			}
			return
		}
		host, port, serr := net.SplitHostPort(req.hostport())
		if serr != nil || host != req.host || port == "0" {
			t.Fatalf("accepted %q (host %q port %q): %v", req.hostport(), host, port, serr)
		}
		if req.atyp == atypDomain && (net.ParseIP(host) == nil && !validName(host)) {
			t.Fatalf("accepted name %q", host)
		}
		// The reserved byte (read[2]) is ignored, as RFC 1928 leaves it.
		if enc := connectRequest(req.cmd, req.host, req.port); req.atyp == atypDomain && net.ParseIP(host) == nil &&
			(!bytes.Equal(enc[:2], read[:2]) || !bytes.Equal(enc[3:], read[3:])) {
			t.Fatalf("request %v read from %v", enc, read)
		}
	})
}
