package httpproxy

import (
	"bufio"
	"io"
	"net/http"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
)

// marker is a stand-in for the gRPC proxy or the tunnel handler: it answers 200 with X-Handled-By and echoes the
// request ID it was given.
func marker(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Handled-By", name)
		w.Header().Set("X-Seen-Request-Id", r.Header.Get("X-Kedge-Request-Id"))
		w.WriteHeader(http.StatusOK)
	})
}

func TestGRPCDispatch(t *testing.T) {
	t.Parallel()
	b := newBackend(t, "b", nil)
	routes := []route.HTTPRoute{{Backend: "b"}}
	e := newEnv(t, envConfig{routes: routes, backends: []*testBackend{b}, grpc: marker("grpc")})
	noGRPC := newEnv(t, envConfig{routes: routes, backends: []*testBackend{b}})
	tests := []struct {
		name, contentType string
		e                 *env
		header            http.Header
		want              string // "grpc", "backend", or "400"
	}{
		{name: "grpc", contentType: "application/grpc", e: e, want: "grpc"},
		{name: "grpc+proto", contentType: "application/grpc+proto", e: e, want: "grpc"},
		{name: "upper case", contentType: "Application/GRPC", e: e, want: "grpc"},
		{name: "grpc-web is HTTP", contentType: "application/grpc-web", e: e, want: "backend"},
		{name: "grpc-web-text is HTTP", contentType: "application/grpc-web-text", e: e, want: "backend"},
		{name: "lookalike", contentType: "application/grpcfoo", e: e, want: "backend"},
		{name: "plain", contentType: "text/plain", e: e, want: "backend"},
		{name: "no gRPC handler", contentType: "application/grpc", e: noGRPC, want: "backend"},
		{name: "header checks come first", contentType: "application/grpc", e: e, want: "400",
			header: http.Header{"X_user": {"x"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{"Content-Type": {tc.contentType}, "X-Kedge-Request-Id": {"grpc-req"}}
			for k, v := range tc.header {
				h[k] = v
			}
			resp := tc.e.do(t, http.MethodPost, "svc.example.com", "/pkg.Svc/Method", h, nil)
			switch tc.want {
			case "grpc":
				resp.Body.Close()
				if resp.Header.Get("X-Handled-By") != "grpc" || resp.Header.Get("X-Seen-Request-Id") != "grpc-req" ||
					resp.Header.Get("X-Kedge-Request-Id") != "grpc-req" {
					t.Errorf("not handed to the gRPC handler: %d %v", resp.StatusCode, resp.Header)
				}
			case "backend":
				if s := readSeen(t, resp); s.URI != "/pkg.Svc/Method" {
					t.Errorf("backend saw %q", s.URI)
				}
			default:
				expectKedgeError(t, resp, http.StatusBadRequest, "bad-request")
			}
		})
	}
}

func TestConnect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		connect http.Handler
		status  int
	}{
		{"no tunnel handler", nil, http.StatusMethodNotAllowed},
		{"tunnel handler", marker("connect"), http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "b"}}, connect: tc.connect})
			c := e.dialRaw(t)
			io.WriteString(c, "CONNECT db.example.com:5432 HTTP/1.1\r\nHost: db.example.com:5432\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.connect != nil {
				if resp.Header.Get("X-Handled-By") != "connect" {
					t.Errorf("not handed to the tunnel handler: %v", resp.Header)
				}
				return
			}
			if resp.Header.Get("X-Kedge-Error-Type") != "bad-request" || resp.Header.Get("X-Kedge-Error") == "" {
				t.Errorf("headers %v", resp.Header)
			}
		})
	}
}

// TestHTTP2 routes requests that arrive over TLS with HTTP/2: the port-less :authority means 443.
func TestHTTP2(t *testing.T) {
	t.Parallel()
	b443 := newBackend(t, "tls443", nil)
	b80 := newBackend(t, "plain80", nil)
	e := newEnv(t, envConfig{tls: true, backends: []*testBackend{b443, b80}, routes: []route.HTTPRoute{
		{Backend: "plain80", Host: "ports.example.com", Port: 80},
		{Backend: "tls443", Host: "ports.example.com", Port: 443},
	}})
	resp := e.do(t, http.MethodGet, "ports.example.com", "/a/./b", http.Header{"Cookie": {"a=1", "b=2"}}, nil)
	if resp.ProtoMajor != 2 {
		t.Errorf("client spoke %s", resp.Proto)
	}
	s := readSeen(t, resp)
	if s.Backend != "tls443" || s.URI != "/a/b" || s.Header.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("backend %q saw %q, X-Forwarded-Proto %q", s.Backend, s.URI, s.Header.Get("X-Forwarded-Proto"))
	}
}
