package httpproxy

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

// oneBackendEnv routes every host to one describing backend, "b".
func oneBackendEnv(t *testing.T) (*env, *testBackend) {
	t.Helper()
	b := newBackend(t, "b", nil)
	return newEnv(t, envConfig{routes: []route.HTTPRoute{{Backend: "b"}}, backends: []*testBackend{b}}), b
}

// headers returns n header fields X-H-0...; with the User-Agent the test sets explicitly that makes n+1.
func headers(n int) http.Header {
	h := http.Header{"User-Agent": {"test"}}
	for i := range n {
		h.Set(fmt.Sprintf("X-H-%d", i), "v")
	}
	return h
}

func TestRequestRejected(t *testing.T) {
	t.Parallel()
	e, b := oneBackendEnv(t)
	tests := []struct {
		name   string
		path   string
		header http.Header
		status int
		typ    string
	}{
		{name: "101 header fields", path: "/", header: headers(100), status: 431, typ: "request-header-too-large"},
		{name: "101 values of one header", path: "/", status: 431, typ: "request-header-too-large",
			header: http.Header{"User-Agent": {"test"}, "X-Many": strings.Split(strings.Repeat("v,", 99)+"v", ",")}},
		{name: "underscore in a header name", path: "/", header: http.Header{"X_auth_user": {"mallory"}}, status: 400, typ: "bad-request"},
		{name: "encoded slash", path: "/a%2Fb", status: 400, typ: "bad-request"},
		{name: "encoded slash lower case", path: "/a%2fb", status: 400, typ: "bad-request"},
		{name: "dot-semicolon segment", path: "/a/..;/b", status: 400, typ: "bad-request"},
		{name: "encoded NUL", path: "/a%00b", status: 400, typ: "bad-request"},
		{name: "encoded backslash", path: "/a%5c..%5cb", status: 400, typ: "bad-request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp := e.do(t, http.MethodGet, "any.example.com", tc.path, tc.header, nil)
			expectKedgeError(t, resp, tc.status, tc.typ)
		})
	}
	t.Run("at the limits", func(t *testing.T) {
		t.Parallel()
		// 99 + User-Agent = 100 fields: accepted.
		readSeen(t, e.do(t, http.MethodGet, "any.example.com", "/", headers(99), nil))
	})
	// Not parallel: it runs while the parallel subtests above wait for this function to return, so none of their
	// requests (the accepted one "at the limits") is counted as a hit here.
	t.Run("rejected requests never reach the backend", func(t *testing.T) {
		before := b.hits.Load()
		expectKedgeError(t, e.do(t, http.MethodGet, "any.example.com", "/", http.Header{"X_a": {"1"}}, nil), 400, "bad-request")
		if got := b.hits.Load(); got != before {
			t.Errorf("backend got %d requests", got-before)
		}
	})
}

// TestAmbiguousFraming sends requests whose body framing net/http resolves on its own, each with a second request
// pipelined behind it. net/http removes a Content-Length sent next to Transfer-Encoding before a handler can see it
// (transfer.go, fixLength), and ignores Transfer-Encoding on HTTP/1.0, so kedge cannot answer 400; what it
// guarantees: no Content-Length reaches the backend next to a chunked body, and the connection closes after the
// answer, so the pipelined request is never parsed or forwarded.
func TestAmbiguousFraming(t *testing.T) {
	t.Parallel()
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: any.example.com\r\n\r\n"
	tests := []struct {
		name    string
		request string
		bodyLen int64
	}{
		{"Content-Length with Transfer-Encoding", "POST /first HTTP/1.1\r\nHost: any.example.com\r\nContent-Length: 4\r\n" +
			"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n" + smuggled, 4},
		{"Transfer-Encoding on HTTP/1.0", "POST /first HTTP/1.0\r\nHost: any.example.com\r\nConnection: keep-alive\r\n" +
			"Transfer-Encoding: chunked\r\n\r\n" + smuggled, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, b := oneBackendEnv(t)
			c := e.dialRaw(t)
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			s := readSeen(t, resp)
			if !resp.Close {
				t.Errorf("response does not close the connection: %v", resp.Header)
			}
			if cl := s.Header.Get("Content-Length"); s.URI != "/first" || s.BodyLen != tc.bodyLen ||
				cl != "" && cl != strconv.FormatInt(tc.bodyLen, 10) {
				t.Errorf("backend saw %s with %d body bytes, Content-Length %q", s.URI, s.BodyLen, s.Header.Get("Content-Length"))
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Errorf("after the answer: %q, %v; want EOF", rest, err)
			}
			if got := b.hits.Load(); got != 1 {
				t.Errorf("backend got %d requests, want 1 (the pipelined one must not be processed)", got)
			}
		})
	}
}

func TestHeadersForwarded(t *testing.T) {
	t.Parallel()
	e, _ := oneBackendEnv(t)
	resp := e.do(t, http.MethodGet, "App.example.com", "/", http.Header{
		"Authorization":        {"Bearer backend-token"},
		"Proxy-Authorization":  {"Bearer kedge-token"},
		"X-Kedge-Backend-Name": {"spoofed"},
		"X-Kedge-Error":        {"spoofed"},
		"X-Kedge-Identity":     {"mallory"},
		"X-Kedge-Info-Logs":    {"me"},
		"X-Forwarded-For":      {"6.6.6.6"},
		"X-Forwarded-Host":     {"evil.example.com"},
		"Forwarded":            {"for=6.6.6.6"},
		"Connection":           {"X-Custom, Upgrade"},
		"Upgrade":              {"h2c"},
		"X-Custom":             {"dropped via Connection"},
		"Te":                   {"trailers"},
		"X-Other":              {"kept"},
	}, nil)
	s := readSeen(t, resp)
	want := map[string]string{
		"Authorization":     "Bearer backend-token",
		"X-Kedge-Info-Logs": "me",
		"X-Forwarded-For":   "127.0.0.1",
		"X-Forwarded-Host":  "App.example.com",
		"X-Forwarded-Proto": "http",
		"X-Other":           "kept",
		"Te":                "trailers",
	}
	for k, v := range want {
		if got := s.Header.Values(k); len(got) != 1 || got[0] != v {
			t.Errorf("backend saw %s %q, want %q", k, got, v)
		}
	}
	for _, k := range []string{"Proxy-Authorization", "X-Kedge-Backend-Name", "X-Kedge-Error", "X-Kedge-Identity",
		"Forwarded", "X-Custom", "Upgrade", "Connection"} {
		if got, ok := s.Header[k]; ok {
			t.Errorf("backend saw %s %q", k, got)
		}
	}
	if s.Host != "App.example.com" {
		t.Errorf("backend saw Host %q", s.Host)
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	e, _ := oneBackendEnv(t)
	tests := []struct {
		name, sent string
		keep       bool
	}{
		{name: "kept", sent: "winch-1234", keep: true},
		{name: "generated", sent: ""},
		{name: "invalid replaced", sent: "has space"},
		{name: "too long replaced", sent: strings.Repeat("a", 129)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var h http.Header
			if tc.sent != "" {
				h = http.Header{"X-Kedge-Request-Id": {tc.sent}}
			}
			resp := e.do(t, http.MethodGet, "any.example.com", "/", h, nil)
			got := resp.Header.Get("X-Kedge-Request-Id")
			s := readSeen(t, resp)
			if tc.keep && got != tc.sent || !tc.keep && (got == tc.sent || !wire.ValidRequestID(got)) {
				t.Errorf("response request ID %q (sent %q)", got, tc.sent)
			}
			if fwd := s.Header.Values("X-Kedge-Request-Id"); len(fwd) != 1 || fwd[0] != got {
				t.Errorf("backend saw request ID %q, response has %q", fwd, got)
			}
		})
	}
	t.Run("on kedge errors too", func(t *testing.T) {
		t.Parallel()
		resp := e.do(t, http.MethodGet, "any.example.com", "/%2F", http.Header{"X-Kedge-Request-Id": {"abc"}}, nil)
		if got := resp.Header.Get("X-Kedge-Request-Id"); got != "abc" {
			t.Errorf("request ID %q", got)
		}
		expectKedgeError(t, resp, 400, "bad-request")
	})
}

func TestCheckName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		want int
	}{
		{"X-Auth-User", nameOK},
		{"x-auth-user", nameOK},
		{"X_Auth_User", nameUnderscore},
		{"_", nameUnderscore},
		{"", nameInvalid},
		{"X Auth", nameInvalid},
		{"X:Auth", nameInvalid},
		{"X\x00", nameInvalid},
		{"X_\n", nameInvalid},
		{"Ä", nameInvalid},
	}
	for _, tc := range tests {
		if got := checkName(tc.name); got != tc.want {
			t.Errorf("checkName(%q) = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestCheckHeadersHTTP2ConnectionSpecific(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		proto  int
		header http.Header
		want   int
	}{
		{"h2 plain", 2, http.Header{"Accept": {"*/*"}}, 0},
		{"h2 TE trailers", 2, http.Header{"Te": {"trailers"}}, 0},
		{"h2 TE gzip", 2, http.Header{"Te": {"gzip"}}, http.StatusBadRequest},
		{"h2 TE twice", 2, http.Header{"Te": {"trailers", "trailers"}}, http.StatusBadRequest},
		{"h2 Connection", 2, http.Header{"Connection": {"close"}}, http.StatusBadRequest},
		{"h2 Keep-Alive", 2, http.Header{"Keep-Alive": {"timeout=5"}}, http.StatusBadRequest},
		{"h2 Proxy-Connection", 2, http.Header{"Proxy-Connection": {"keep-alive"}}, http.StatusBadRequest},
		{"h2 Transfer-Encoding", 2, http.Header{"Transfer-Encoding": {"chunked"}}, http.StatusBadRequest},
		{"h2 Upgrade", 2, http.Header{"Upgrade": {"websocket"}}, http.StatusBadRequest},
		{"h3 Connection", 3, http.Header{"Connection": {"close"}}, http.StatusBadRequest},
		{"HTTP/1.1 Connection and TE", 1, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Te": {"gzip"}}, 0},
	}
	for _, tt := range tests {
		r := &http.Request{ProtoMajor: tt.proto, Header: tt.header}
		if got, _, msg := checkHeaders(r, 100); got != tt.want {
			t.Errorf("%s: status %d (%s), want %d", tt.name, got, msg, tt.want)
		}
	}
}
