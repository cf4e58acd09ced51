package httpproxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// h2Answer is what rawH2 read back for its one stream.
type h2Answer struct {
	status int
	header http.Header
	body   []byte
	reset  bool          // the server reset the stream (or the connection) instead of answering
	code   http2.ErrCode // the RST_STREAM or GOAWAY error code, when reset by one
}

// rawH2 sends one HTTP/2 request with exactly the given pseudo and regular header fields (in order), which Go's
// client would refuse to send, and reads the answer. The server must be e.proxy with TLS and h2.
func (e *env) rawH2(t testing.TB, fields [][2]string) h2Answer {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(e.proxy.Certificate())
	conn, err := tls.Dial("tcp", e.proxy.Listener.Addr().String(),
		&tls.Config{RootCAs: roots, ServerName: "example.com", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q, want h2", p)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range fields {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	var ans h2Answer
	for range 1000 {
		f, err := fr.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				ans.reset = true
				return ans
			}
			t.Fatalf("reading frames: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			ans.header = http.Header{}
			for _, hf := range f.RegularFields() {
				ans.header.Add(hf.Name, hf.Value)
			}
			ans.status, _ = strconv.Atoi(f.PseudoValue("status"))
			if f.StreamEnded() {
				return ans
			}
		case *http2.DataFrame:
			if f.StreamID != 1 {
				continue
			}
			ans.body = append(ans.body, f.Data()...)
			if f.StreamEnded() {
				return ans
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				ans.reset, ans.code = true, f.ErrCode
				return ans
			}
		case *http2.GoAwayFrame:
			ans.reset, ans.code = true, f.ErrCode
			return ans
		}
	}
	t.Fatal("no complete answer in 1000 frames")
	return ans
}

// TestH2AuthorityMatchesRoutedHost checks that an HTTP/2 request cannot be routed by one host and reach the backend
// with another: HTTP/2 carries the target twice (an absolute-form :path and :authority), and net/http routes
// nothing by itself, so kedge must route, authorize and forward one and the same host.
//
// An absolute-form :path is malformed in HTTP/2 (RFC 9113 §8.3.1: path and query only). Go's HTTP/2 server refuses
// it from go1.27 on, with a PROTOCOL_ERROR stream reset before any handler runs; go1.26 hands it to kedge. Both
// outcomes are safe, so a request that kedge would forward may instead be reset, and only so.
func TestH2AuthorityMatchesRoutedHost(t *testing.T) {
	t.Parallel()
	// One name-based virtual-hosting backend (an ingress controller, say) behind two routes with different
	// requirements.
	ingress := newBackend(t, "ingress", nil)
	e := newEnv(t, envConfig{
		routes: []route.HTTPRoute{
			{Backend: "ingress", Host: "admin.example.com", RequiredPermissions: []string{"admin"}},
			{Backend: "ingress", Host: "public.example.com"},
		},
		backends: []*testBackend{ingress},
		tls:      true,
	})
	tests := []struct {
		name     string
		fields   [][2]string
		wantHost string // the Host the backend must see; "" means kedge must refuse the request (4xx)
		mayReset bool   // an absolute-form :path: Go's HTTP/2 server may reset the stream first (go1.27 on)
	}{
		{
			name: "absolute :path names the public host, :authority the admin one",
			fields: [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "admin.example.com"},
				{":path", "https://public.example.com/secret"}},
		},
		{
			name: "absolute :path and a different Host field without :authority",
			fields: [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "https://public.example.com/secret"},
				{"host", "admin.example.com"}},
		},
		{
			name: "absolute :path and :authority agree",
			fields: [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "public.example.com"},
				{":path", "https://public.example.com/x"}},
			wantHost: "public.example.com", mayReset: true,
		},
		{
			name: "absolute :path and :authority agree but for case",
			fields: [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "PUBLIC.example.com"},
				{":path", "https://public.example.com/x"}},
			wantHost: "public.example.com", mayReset: true,
		},
		{
			name:     "origin-form :path",
			fields:   [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "public.example.com"}, {":path", "/x"}},
			wantHost: "public.example.com",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ans := e.rawH2(t, tc.fields)
			if ans.reset && tc.mayReset {
				if ans.code != http2.ErrCodeProtocol {
					t.Fatalf("reset with %v, want PROTOCOL_ERROR (Go's refusal of an absolute-form :path)", ans.code)
				}
				return
			}
			if tc.wantHost == "" {
				if ans.reset {
					return
				}
				if ans.status < 400 || ans.status >= 500 {
					t.Fatalf("status %d (body %q), want the request refused with 4xx", ans.status, ans.body)
				}
				if ans.header.Get("X-Test-Backend") != "" {
					t.Fatalf("a kedge refusal came from the backend: %q", ans.body)
				}
				return
			}
			if ans.status != http.StatusOK {
				t.Fatalf("status %d (%s: %s), want 200", ans.status, ans.header.Get("X-Kedge-Error-Type"), ans.header.Get("X-Kedge-Error"))
			}
			if !bytes.Contains(ans.body, []byte(`"host":"`+tc.wantHost+`"`)) {
				t.Fatalf("backend saw %s, want host %q", ans.body, tc.wantHost)
			}
		})
	}
}
