package httpforward_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/httpforward"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHTTPMappingAndAuth(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	backend := testutil.NewEchoServer(t, testutil.EchoName("backend"))
	k0 := newFakeKedge(t, ca, "kedge0", backend.URL)
	k1 := newFakeKedge(t, ca, "kedge1", backend.URL, validTokens("proxy-test-token"))
	k2 := newFakeKedge(t, ca, "kedge2", backend.URL)
	routes := []mapper.Route{
		directRoute("resource1.ext.example.com", k0.url, withBackendAuth("test-token")),
		directRoute("resource2.ext.example.com:8080", k1.url, withProxyAuth("proxy-test-token")),
		// GRPC-only: the HTTP proxy must skip it and use the next route.
		directRoute("proto.ext.example.com", k0.url, withProtocol(mapper.ProtocolGRPC)),
		directRoute("proto.ext.example.com", k1.url, withProtocol(mapper.ProtocolHTTP), withProxyAuth("proxy-test-token")),
		{
			Regexp:      regexp.MustCompile(`^([a-z0-9-]+)[.]cluster-(?P<port>[0-9]+)[.]internal[.]example[.]com$`),
			URL:         "https://localhost:${port}",
			BackendAuth: "user-password",
		},
	}
	w := startWinch(t, winchSetup{
		routes: routes, ca: ca, infoLogs: "winch-tester",
		sources: sources{
			"test-token":       staticSource("test-token"),
			"proxy-test-token": staticSource("proxy-test-token"),
			"user-password":    staticSource("user:password"),
		},
	})
	c := w.client(t, nil)

	tests := []struct {
		name          string
		url           string
		clientAuthz   string
		kedge         *fakeKedge
		wantHost      string
		wantAuthz     string
		wantProxyAuth string
	}{
		{name: "direct with backend auth replacing the client's", url: "http://resource1.ext.example.com/some/path?q=1",
			clientAuthz: "Bearer client-token", kedge: k0, wantHost: "resource1.ext.example.com", wantAuthz: "Bearer test-token"},
		{name: "direct with proxy auth, client authorization kept", url: "http://resource2.ext.example.com:8080/x",
			clientAuthz: "Bearer client-token", kedge: k1, wantHost: "resource2.ext.example.com:8080",
			wantAuthz: "Bearer client-token", wantProxyAuth: "Bearer proxy-test-token"},
		{name: "protocol list skips the GRPC route", url: "http://proto.ext.example.com/",
			kedge: k1, wantHost: "proto.ext.example.com", wantProxyAuth: "Bearer proxy-test-token"},
		{name: "regexp with templated kedge URL", url: "http://svc.cluster-" + k2.port + ".internal.example.com/a%2Fb/c",
			kedge: k2, wantHost: "svc.cluster-" + k2.port + ".internal.example.com", wantAuthz: "Bearer user:password"},
		{name: "host matched case-insensitively, sent as written", url: "http://Resource1.EXT.example.com/",
			kedge: k0, wantHost: "resource1.ext.example.com", wantAuthz: "Bearer test-token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.clientAuthz != "" {
				hdr = []string{"Authorization", tt.clientAuthz}
			}
			resp := get(t, c, tt.url, hdr...)
			if got := resp.Header.Get("X-Fake-Kedge"); got != tt.kedge.name {
				t.Errorf("answered by kedge %q, want %q", got, tt.kedge.name)
			}
			if resp.Header.Get(wire.HeaderWinchError) != "" || resp.Header.Get(wire.HeaderKedgeError) != "" {
				t.Errorf("unexpected error headers: %v", resp.Header)
			}
			echo := testutil.DecodeEcho(t, resp)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if !strings.EqualFold(echo.Host, tt.wantHost) {
				t.Errorf("backend saw Host %q, want %q", echo.Host, tt.wantHost)
			}
			if got := echo.Header.Get("Authorization"); got != tt.wantAuthz {
				t.Errorf("backend saw Authorization %q, want %q", got, tt.wantAuthz)
			}
			seen := tt.kedge.last(t)
			if got := seen.header.Get(wire.HeaderProxyAuthz); got != tt.wantProxyAuth {
				t.Errorf("kedge saw Proxy-Authorization %q, want %q", got, tt.wantProxyAuth)
			}
			if seen.proto != "HTTP/1.1" {
				t.Errorf("winch spoke %s to kedge, want HTTP/1.1 (a pool of kept-alive connections)", seen.proto)
			}
			if got := echo.Header.Get("X-Seen-Forwarded-Proto"); got != "http" {
				t.Errorf("kedge saw X-Forwarded-Proto %q, want http", got)
			}
			if id := seen.header.Get(wire.HeaderRequestID); !strings.HasPrefix(id, "winch-") {
				t.Errorf("kedge saw request ID %q, want winch-...", id)
			}
			if got := seen.header.Get(wire.HeaderInfoLogs); got != "winch-tester" {
				t.Errorf("kedge saw X-Kedge-Info-Logs %q", got)
			}
			wantPath := strings.SplitN(strings.SplitN(tt.url, "//", 2)[1], "/", 2)[1]
			if got := strings.TrimPrefix(echo.Path, "/"); got != strings.SplitN(wantPath, "?", 2)[0] {
				t.Errorf("backend saw path %q, want /%s", echo.Path, wantPath)
			}
		})
	}
	// The requests, one after the other, reused one pooled connection per kedge.
	for _, k := range []*fakeKedge{k0, k1, k2} {
		if n := k.conns.Load(); n != 1 {
			t.Errorf("kedge %s accepted %d connections, want 1", k.name, n)
		}
	}
}

func TestHTTPErrors(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	backend := testutil.NewEchoServer(t)
	k := newFakeKedge(t, ca, "kedge", backend.URL)
	kNoRoute := newFakeKedge(t, ca, "kedge-noroute", "")
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "https://localhost:" + port(dead.Addr().String())
	_ = dead.Close()
	w := startWinch(t, winchSetup{
		ca: ca,
		routes: []mapper.Route{
			directRoute("error.ext.example.com", k.url, withBackendAuth("error-dummy")),
			directRoute("login.ext.example.com", k.url, withProxyAuth("needs-login")),
			directRoute("dead.ext.example.com", deadURL),
			directRoute("noroute.ext.example.com", kNoRoute.url),
		},
		sources: sources{
			"error-dummy": &tokenSource{err: errors.New("Error dummy auth source. No TokenValue specified")},
			"needs-login": &tokenSource{err: errors.New(`refresh token expired; run "winch login needs-login"`)},
		},
	})
	c := w.client(t, nil)
	tests := []struct {
		name     string
		url      string
		status   int
		winchTyp wire.ErrorType
		kedgeTyp wire.ErrorType
		msg      string
	}{
		{name: "token error", url: "http://error.ext.example.com/", status: http.StatusBadGateway,
			winchTyp: wire.ErrAuthSource, msg: "No TokenValue specified"},
		{name: "token error with hint", url: "http://login.ext.example.com/", status: http.StatusBadGateway,
			winchTyp: wire.ErrAuthSource, msg: `run "winch login needs-login"`},
		{name: "kedge unreachable", url: "http://dead.ext.example.com/", status: http.StatusBadGateway,
			winchTyp: wire.ErrTransportUnknown, msg: "dead.ext.example.com"},
		{name: "kedge error passes through", url: "http://noroute.ext.example.com/", status: http.StatusBadGateway,
			kedgeTyp: wire.ErrNoRoute, msg: "unknown route to service"},
		{name: "invalid destination", url: "http://bad_host!.example.com/", status: http.StatusBadRequest,
			winchTyp: wire.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, c, tt.url)
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			if got := resp.Header.Get(wire.HeaderWinchErrorType); got != string(tt.winchTyp) {
				t.Errorf("X-Winch-Error-Type %q, want %q", got, tt.winchTyp)
			}
			if got := resp.Header.Get(wire.HeaderKedgeErrorType); got != string(tt.kedgeTyp) {
				t.Errorf("X-Kedge-Error-Type %q, want %q", got, tt.kedgeTyp)
			}
			mustContain(t, "error header", resp.Header.Get(wire.HeaderWinchError)+resp.Header.Get(wire.HeaderKedgeError), tt.msg)
		})
	}
	if n := k.requests.Load(); n != 0 {
		t.Errorf("kedge received %d requests although no token could be had", n)
	}
}

func TestUnmatchedDestinations(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	backend := testutil.NewEchoServer(t, testutil.EchoName("local"))
	k := newFakeKedge(t, ca, "kedge", backend.URL)
	// A catch-all route must still never see IP addresses.
	routes := []mapper.Route{
		{Regexp: regexp.MustCompile(`[.]example[.]com$`), URL: k.url, ProxyAuth: "tok"},
	}
	srcs := sources{"tok": staticSource("secret")}
	direct := startWinch(t, winchSetup{ca: ca, routes: routes, sources: srcs})
	reject := startWinch(t, winchSetup{ca: ca, routes: routes, sources: srcs, unmatched: httpforward.UnmatchedReject})

	t.Run("direct hostname", func(t *testing.T) {
		resp := get(t, direct.client(t, nil), "http://localhost:"+port(backend.Addr)+"/direct")
		echo := testutil.DecodeEcho(t, resp)
		if resp.StatusCode != http.StatusOK || echo.Backend != "local" {
			t.Fatalf("status %d backend %q", resp.StatusCode, echo.Backend)
		}
		for _, h := range []string{wire.HeaderRequestID, wire.HeaderProxyAuthz, "Authorization", wire.HeaderForwardedProto} {
			if v := echo.Header.Get(h); v != "" {
				t.Errorf("unmatched destination received %s: %q", h, v)
			}
		}
	})
	t.Run("direct IP literal", func(t *testing.T) {
		resp := get(t, direct.client(t, nil), backend.URL+"/ip")
		echo := testutil.DecodeEcho(t, resp)
		if resp.StatusCode != http.StatusOK || echo.Path != "/ip" {
			t.Fatalf("status %d path %q", resp.StatusCode, echo.Path)
		}
	})
	for _, u := range []string{"http://localhost:" + port(backend.Addr) + "/", backend.URL + "/", "http://[::1]:1/"} {
		t.Run("reject "+u, func(t *testing.T) {
			resp := get(t, reject.client(t, nil), u)
			_ = readBody(t, resp)
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("status %d, want 403", resp.StatusCode)
			}
			if got := resp.Header.Get(wire.HeaderWinchErrorType); got != string(wire.ErrNotKedgeDestination) {
				t.Errorf("X-Winch-Error-Type %q", got)
			}
		})
	}
	t.Run("reject CONNECT", func(t *testing.T) {
		status, hdr := rawConnect(t, reject.addr, "localhost:"+port(backend.Addr))
		if status != http.StatusForbidden || hdr.Get(wire.HeaderWinchErrorType) != string(wire.ErrNotKedgeDestination) {
			t.Fatalf("status %d, headers %v", status, hdr)
		}
	})
	if n := k.requests.Load(); n != 0 {
		t.Errorf("kedge received %d requests for unmatched destinations", n)
	}
	if hits := backend.Hits(); hits != 2 {
		t.Errorf("backend hits %d, want 2 (the rejected requests must not reach it)", hits)
	}
}

func TestSelfHealingRetry(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	backend := testutil.NewEchoServer(t)
	k := newFakeKedge(t, ca, "kedge", backend.URL, validTokens("fresh-1", "fresh-2"))
	getSrc := &tokenSource{tokens: []string{"stale-1", "fresh-1"}}
	postSrc := &tokenSource{tokens: []string{"stale-2", "fresh-2"}}
	w := startWinch(t, winchSetup{ca: ca,
		routes: []mapper.Route{
			directRoute("get.example.com", k.url, withProxyAuth("get")),
			directRoute("post.example.com", k.url, withProxyAuth("post")),
		},
		sources: sources{"get": getSrc, "post": postSrc},
	})
	c := w.client(t, nil)

	resp := get(t, c, "http://get.example.com/")
	_ = readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET after a stale token: status %d, want 200 after one retry", resp.StatusCode)
	}
	if got := getSrc.Invalidated(); len(got) != 1 || got[0] != "stale-1" {
		t.Errorf("invalidated %v, want [stale-1]", got)
	}
	if n := k.requests.Load(); n != 2 {
		t.Errorf("kedge saw %d requests, want 2 (rejected + retried)", n)
	}

	// A request whose body was sent is not replayed: kedge's 401 passes through, and the next request heals.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://post.example.com/", strings.NewReader("payload"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = readBody(t, resp)
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get(wire.HeaderKedgeErrorType) != string(wire.ErrUnauthorized) {
		t.Fatalf("POST with body: status %d, kedge error type %q; want kedge's 401", resp.StatusCode, resp.Header.Get(wire.HeaderKedgeErrorType))
	}
	if got := postSrc.Invalidated(); len(got) != 1 || got[0] != "stale-2" {
		t.Errorf("invalidated %v, want [stale-2]", got)
	}
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodPost, "http://post.example.com/", strings.NewReader("payload"))
	if resp, err = c.Do(req); err != nil {
		t.Fatal(err)
	}
	echo := testutil.DecodeEcho(t, resp)
	if resp.StatusCode != http.StatusOK || echo.BodyLength != int64(len("payload")) {
		t.Fatalf("second POST: status %d, body length %d", resp.StatusCode, echo.BodyLength)
	}
}

func TestStreamingAndWebSocket(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	release := make(chan struct{})
	streamer := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first\n")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "second\n")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = streamer.Serve(ln) }()
	t.Cleanup(func() { _ = streamer.Close() })
	echo := testutil.NewEchoServer(t)
	kStream := newFakeKedge(t, ca, "stream", "http://"+ln.Addr().String())
	kEcho := newFakeKedge(t, ca, "echo", echo.URL)
	w := startWinch(t, winchSetup{ca: ca, routes: []mapper.Route{
		directRoute("stream.example.com", kStream.url),
		directRoute("ws.example.com", kEcho.url),
	}})

	t.Run("stream is not buffered", func(t *testing.T) {
		resp := get(t, w.client(t, nil), "http://stream.example.com/")
		defer func() { _ = resp.Body.Close() }()
		lines := make(chan string, 2)
		go func() {
			br := bufio.NewReader(resp.Body)
			for range 2 {
				l, err := br.ReadString('\n')
				if err != nil {
					close(lines)
					return
				}
				lines <- l
			}
			close(lines)
		}()
		select {
		case l := <-lines:
			if l != "first\n" {
				t.Fatalf("first line %q", l)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the first chunk did not arrive before the response ended: winch buffers streams")
		}
		close(release)
		if l := <-lines; l != "second\n" {
			t.Fatalf("second line %q", l)
		}
	})

	t.Run("websocket upgrade", func(t *testing.T) {
		conn, err := net.Dial("tcp", w.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(conn, "GET http://ws.example.com/ws HTTP/1.1\r\nHost: ws.example.com\r\n"+
			"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d, want 101", resp.StatusCode)
		}
		_, _ = io.WriteString(conn, "hello over the upgraded connection")
		buf := make([]byte, len("hello over the upgraded connection"))
		if _, err := io.ReadFull(br, buf); err != nil {
			t.Fatalf("reading the echo: %v", err)
		}
		if string(buf) != "hello over the upgraded connection" {
			t.Fatalf("echo %q", buf)
		}
	})
}
