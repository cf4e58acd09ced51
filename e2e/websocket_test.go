package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// wsMessage is the size of the large message TestWebSocket sends each way.
const wsMessage = 10 << 20

// wsBackendClose is the close status the backend sends when a client asks it to close.
const wsBackendClose = websocket.StatusCode(4001)

// wsSubprotocol is the subprotocol the WebSocket backend speaks: kubectl exec's. Clients offer an older one first, so
// the answer shows the backend's choice, not the client's first offer, reached the client.
const wsSubprotocol = "v5.channel.k8s.io"

// wsBackend is a real WebSocket server (github.com/coder/websocket) on a plain and a TLS loopback listener. On every
// connection it echoes data messages, closes the connection with wsBackendClose on the text message "close me", answers the text message "ping me" by pinging the client and then sending
// "pong seen" once the client's pong has arrived, and records the upgrade request's headers and how the connection
// ended.
type wsBackend struct {
	plain, tls *httptest.Server
	upgrades   atomic.Int64 // upgrade requests that reached the backend
	pongs      atomic.Int64 // pings the backend sent that a pong answered
	mu         sync.Mutex
	headers    []http.Header          // each upgrade request's headers, in arrival order
	closes     []websocket.StatusCode // each connection's close status as the backend read it (-1: not a close frame)
}

func newWSBackend(t *testing.T, cert tls.Certificate) *wsBackend {
	t.Helper()
	b := &wsBackend{}
	b.plain = httptest.NewServer(b) // on 127.0.0.1
	t.Cleanup(b.plain.Close)
	b.tls = httptest.NewUnstartedServer(b)
	b.tls.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	b.tls.StartTLS()
	t.Cleanup(b.tls.Close)
	return b
}

// port is the loopback port s listens on.
func port(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }

func (b *wsBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.upgrades.Add(1)
	b.mu.Lock()
	b.headers = append(b.headers, r.Header.Clone())
	b.mu.Unlock()
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{wsSubprotocol}})
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	c.SetReadLimit(wsMessage + 1<<10)
	ctx := r.Context()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			b.mu.Lock()
			b.closes = append(b.closes, websocket.CloseStatus(err))
			b.mu.Unlock()
			return
		}
		if typ == websocket.MessageText && string(msg) == "close me" {
			_ = c.Close(wsBackendClose, "the backend closes")
			continue // the next Read reports the close
		}
		if typ == websocket.MessageText && string(msg) == "ping me" {
			// Ping waits for the pong, which this loop's next Read takes in.
			go func() {
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				answer := "pong seen"
				if err := c.Ping(pctx); err != nil {
					answer = "no pong: " + err.Error()
				} else {
					b.pongs.Add(1)
				}
				_ = c.Write(pctx, websocket.MessageText, []byte(answer))
			}()
			continue
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}

// last returns the headers of the latest upgrade request and the latest close status the backend read.
func (b *wsBackend) last() (http.Header, websocket.StatusCode) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var h http.Header
	if len(b.headers) > 0 {
		h = b.headers[len(b.headers)-1]
	}
	code := websocket.StatusCode(-2)
	if len(b.closes) > 0 {
		code = b.closes[len(b.closes)-1]
	}
	return h, code
}

// normalCloses is how many connections ended with a normal close the backend read.
func (b *wsBackend) normalCloses() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.closes {
		if c == websocket.StatusNormalClosure {
			n++
		}
	}
	return n
}

// closeCount is how many connections the backend has seen end.
func (b *wsBackend) closeCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.closes)
}

// wsDial opens a WebSocket to u with client (its Timeout bounds only the handshake), offering an older kubectl
// subprotocol before wsSubprotocol, with header added to the upgrade request.
func wsDial(ctx context.Context, client *http.Client, u string, header http.Header) (*websocket.Conn, *http.Response, error) {
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   client,
		HTTPHeader:   header,
		Subprotocols: []string{"v4.channel.k8s.io", wsSubprotocol},
	})
	if err == nil {
		c.SetReadLimit(wsMessage + 1<<10)
	}
	return c, resp, err
}

// wsExchange runs the checks every path shares on an open connection: the backend's subprotocol arrived, a 10 MB
// message goes each way intact, the backend's ping is answered, the connection stays up through quiet (no frame either
// way), and a normal close reaches the backend.
func wsExchange(t *testing.T, b *wsBackend, c *websocket.Conn, quiet time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second+quiet)
	defer cancel()
	defer c.CloseNow()
	if got := c.Subprotocol(); got != wsSubprotocol {
		t.Errorf("subprotocol %q, want the backend's choice %q", got, wsSubprotocol)
	}
	big := make([]byte, wsMessage)
	_, _ = rand.Read(big)
	if err := c.Write(ctx, websocket.MessageBinary, big); err != nil {
		t.Fatalf("writing %d bytes: %v", len(big), err)
	}
	typ, back, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if typ != websocket.MessageBinary || sha256.Sum256(back) != sha256.Sum256(big) {
		t.Fatalf("echo of %d bytes: %v message of %d bytes with another checksum", len(big), typ, len(back))
	}
	ping := func(when string) {
		t.Helper()
		pongs := b.pongs.Load()
		if err := c.Write(ctx, websocket.MessageText, []byte("ping me")); err != nil {
			t.Fatalf("%s: asking for a ping: %v", when, err)
		}
		_, answer, err := c.Read(ctx) // answers the backend's ping on the way
		if err != nil || string(answer) != "pong seen" || b.pongs.Load() != pongs+1 {
			t.Fatalf("%s: backend's ping: %q, %v (pongs seen %d -> %d)", when, answer, err, pongs, b.pongs.Load())
		}
	}
	ping("after the large messages")
	if quiet > 0 {
		time.Sleep(quiet)
		ping(fmt.Sprintf("after %v without a frame", quiet))
	}
	closes := b.closeCount()
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Errorf("closing: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.closeCount() == closes && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, code := b.last(); b.closeCount() == closes || code != websocket.StatusNormalClosure {
		t.Errorf("the backend read close status %v, want %v", code, websocket.StatusNormalClosure)
	}
}

// forgedHeaders are what a client might send to pass itself off to the backend; none may arrive as sent.
func forgedHeaders() http.Header {
	return http.Header{
		"X-Kedge-Identity":  {"forged.by.client"},
		"X-Forwarded-For":   {"203.0.113.66"},
		"X-Forwarded-Host":  {"forged.example.net"},
		"X-Forwarded-Proto": {"gopher"},
		"Forwarded":         {"for=203.0.113.66;host=forged.example.net"},
		"X-Real-Ip":         {"203.0.113.66"},
	}
}

// checkBackendHeaders checks the latest upgrade request the backend saw: both offered subprotocols, no token, no
// client-made identity or forwarding header.
func checkBackendHeaders(t *testing.T, b *wsBackend) {
	t.Helper()
	h, _ := b.last()
	if h == nil {
		t.Fatal("the backend saw no upgrade request")
	}
	var offers []string
	for _, v := range h.Values("Sec-Websocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			offers = append(offers, strings.TrimSpace(p))
		}
	}
	if got := strings.Join(offers, ", "); got != "v4.channel.k8s.io, "+wsSubprotocol {
		t.Errorf("backend's Sec-WebSocket-Protocol %q, want both offers", got)
	}
	if h.Get("Proxy-Authorization") != "" || len(h.Values("X-Kedge-Identity")) != 0 {
		t.Errorf("backend saw Proxy-Authorization %q or X-Kedge-Identity %q", h.Get("Proxy-Authorization"), h.Values("X-Kedge-Identity"))
	}
	for _, name := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded", "X-Real-Ip"} {
		for _, v := range h.Values(name) {
			if strings.Contains(v, "203.0.113.66") || strings.Contains(v, "forged") || strings.Contains(v, "gopher") {
				t.Errorf("the client's %s reached the backend: %q", name, v)
			}
		}
	}
	if got := h.Get("X-Forwarded-For"); got != "127.0.0.1" {
		t.Errorf("backend's X-Forwarded-For %q, want kedge's own 127.0.0.1", got)
	}
}

// TestWebSocket runs a real WebSocket backend behind kedge and reaches it as users do: ws:// through winch's proxy port
// (an absolute-form upgrade winch forwards to kedge), wss:// through a CONNECT tunnel via winch (TLS end to end), and
// wss:// straight to kedge over HTTP/1.1. Each path carries a 10 MB message each way, answers a backend ping, passes
// kubectl exec's subprotocol negotiation and closes cleanly from either side; the upgrade paths also stay up through a quiet spell
// longer than kedge's tunnel idle timeout (set to 2 s here), which bounds CONNECT tunnels only. The upgrade request is
// authenticated like any other (401 before the backend sees it), and forged identity and forwarding headers are
// replaced. Over HTTP/2, kedge answers an Upgrade request 400 and does not offer RFC 8441's extended CONNECT.
func TestWebSocket(t *testing.T) {
	t.Parallel()
	const token = "ws-e2e-token"
	backendCA := testutil.NewCA(t)
	b := newWSBackend(t, backendCA.Server(t, "wsecure.example.com"))
	k := startKedge(t, `{"http": {"routes": [
  {"backend_name": "ws", "host_matcher": "ws.example.com"},
  {"backend_name": "wsecure", "host_matcher": "wsecure.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"}
]}}`, fmt.Sprintf(`{"http": {"backends": [
  {"name": "ws", "host": {"dns_name": "127.0.0.1", "port": %d}},
  {"name": "wsecure", "host": {"dns_name": "127.0.0.1", "port": %d}}
]}}`, port(b.plain), port(b.tls)), "--unsafe_bearer_token_proxy_auth="+token, "--server_tunnel_idle_timeout=2s")
	w := startWinch(t, fmt.Sprintf(`{"routes": [
  {"direct": {"key": "ws.example.com", "url": %[1]q}, "proxy_auth": "proxy", "protocol": "HTTP"},
  {"direct": {"key": "wsecure.example.com:443", "url": %[1]q}, "proxy_auth": "proxy", "protocol": "HTTP"}
]}`, kedgeURL(k)), `{"auth_sources": [{"name": "proxy", "token": {"token": "`+token+`"}}]}`, "--client_tls_root_ca_files="+k.caFile)
	proxyURL, _ := url.Parse(w.proxyURL)
	quiet := wsQuiet(t)

	t.Run("ws through winch's proxy port", func(t *testing.T) {
		client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
		defer client.CloseIdleConnections()
		c, resp, err := wsDial(t.Context(), client, "ws://ws.example.com/via-winch", forgedHeaders())
		if err != nil {
			t.Fatalf("dial: %v (%s)", err, respSummary(resp))
		}
		checkBackendHeaders(t, b)
		wsExchange(t, b, c, quiet)
		wsBackendCloses(t, client, "ws://ws.example.com/closed-by-backend", nil)
	})

	t.Run("wss through a CONNECT tunnel via winch", func(t *testing.T) {
		client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
			Proxy:           http.ProxyURL(proxyURL),
			TLSClientConfig: &tls.Config{RootCAs: backendCA.Pool()}, // the backend's certificate, end to end
		}}
		defer client.CloseIdleConnections()
		c, resp, err := wsDial(t.Context(), client, "wss://wsecure.example.com/tunnelled", forgedHeaders())
		if err != nil {
			t.Fatalf("dial: %v (%s)", err, respSummary(resp))
		}
		// Inside the tunnel the headers are the client's own: kedge sees only TLS bytes.
		if h, _ := b.last(); h.Get("X-Kedge-Identity") != "forged.by.client" || h.Get("Proxy-Authorization") != "" {
			t.Errorf("inside the tunnel the backend saw X-Kedge-Identity %q, Proxy-Authorization %q", h.Get("X-Kedge-Identity"), h.Get("Proxy-Authorization"))
		}
		wsExchange(t, b, c, time.Second) // quiet less than the tunnel idle timeout
		wsBackendCloses(t, client, "wss://wsecure.example.com/closed-by-backend", nil)

		// A tunnel with no bytes either way for --server_tunnel_idle_timeout is closed, WebSocket or not.
		c, resp, err = wsDial(t.Context(), client, "wss://wsecure.example.com/idle", nil)
		if err != nil {
			t.Fatalf("dial: %v (%s)", err, respSummary(resp))
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		started := time.Now()
		_, _, err = c.Read(ctx)
		if err == nil || ctx.Err() != nil || time.Since(started) < 1500*time.Millisecond {
			t.Errorf("an idle tunnelled WebSocket: read returned %v after %v, want the tunnel closed after about 2s", err, time.Since(started).Round(time.Millisecond))
		}
	})

	direct := k.client(false)
	defer direct.CloseIdleConnections()
	t.Run("wss straight to kedge over HTTP/1.1", func(t *testing.T) {
		h := forgedHeaders()
		h.Set("Proxy-Authorization", "Bearer "+token)
		c, resp, err := wsDial(t.Context(), direct, "wss://ws.example.com/direct", h)
		if err != nil {
			t.Fatalf("dial: %v (%s)", err, respSummary(resp))
		}
		checkBackendHeaders(t, b)
		wsExchange(t, b, c, quiet)
		wsBackendCloses(t, direct, "wss://ws.example.com/closed-by-backend", http.Header{"Proxy-Authorization": {"Bearer " + token}})
	})

	t.Run("an upgrade without a token gets 401 before any upgrade", func(t *testing.T) {
		before := b.upgrades.Load()
		for _, h := range []http.Header{nil, {"Proxy-Authorization": {"Bearer wrong"}}} {
			c, resp, err := wsDial(t.Context(), direct, "wss://ws.example.com/anonymous", h)
			if err == nil {
				c.CloseNow()
				t.Fatal("the upgrade succeeded without a valid token")
			}
			if resp == nil || resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Kedge-Error-Type") != "unauthorized" {
				t.Errorf("token %q: %v (%s), want 401 unauthorized", h.Get("Proxy-Authorization"), err, respSummary(resp))
			}
		}
		if n := b.upgrades.Load() - before; n != 0 {
			t.Errorf("the backend saw %d unauthenticated upgrade requests", n)
		}
	})

	t.Run("HTTP/2: Upgrade is refused and extended CONNECT is not offered", func(t *testing.T) {
		settings, status := h2WebSocketProbe(t, k, token)
		t.Logf("kedge's HTTP/2 SETTINGS %v; an h2 GET with Upgrade: websocket got %s", settings, status)
		if v, ok := settings[0x8]; ok && v != 0 {
			t.Errorf("kedge offers SETTINGS_ENABLE_CONNECT_PROTOCOL=%d; docs/kedge.md says it does not", v)
		}
		if status != "400" {
			t.Errorf("an h2 GET with Upgrade: websocket got %s, want 400", status)
		}
	})
}

// wsQuiet is how long TestWebSocket's upgrade paths stay without a frame: 3 s (longer than the test's tunnel idle
// timeout), or KEDGE_E2E_WS_QUIET, e.g. 130s to see a WebSocket outlive kedge's 120 s keep-alive idle timeout.
func wsQuiet(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("KEDGE_E2E_WS_QUIET")
	if v == "" {
		return 3 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 3*time.Second || d > 10*time.Minute {
		t.Fatalf("KEDGE_E2E_WS_QUIET=%q: want a duration from 3s to 10m", v)
	}
	return d
}

// respSummary describes a failed handshake's response for an error message.
func respSummary(resp *http.Response) string {
	if resp == nil {
		return "no response"
	}
	return fmt.Sprintf("%s, X-Kedge-Error-Type %q, X-Winch-Error %q", resp.Status, resp.Header.Get("X-Kedge-Error-Type"), resp.Header.Get("X-Winch-Error"))
}

// h2WebSocketProbe opens an HTTP/2 connection to kedge, returns the SETTINGS kedge sent first, and sends an HTTP/1.1
// style WebSocket upgrade (GET with Upgrade: websocket) on it; outcome is the response status, or "RST_STREAM <code>".
func h2WebSocketProbe(t *testing.T, k *kedgeEnv, token string) (settings map[http2.SettingID]uint32, outcome string) {
	t.Helper()
	fr := testutil.H2Start(t, k.dialTLS(t, k.https, "h2"))
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "ws.example.com"}, {":path", "/h2"},
		{"upgrade", "websocket"}, {"sec-websocket-version", "13"}, {"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="},
		{"sec-websocket-protocol", wsSubprotocol}, {"proxy-authorization", "Bearer " + token}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	dec := hpack.NewDecoder(4096, nil)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading kedge's answer: %v (settings %v)", err, settings)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && settings == nil {
				settings = map[http2.SettingID]uint32{}
				_ = f.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
				_ = fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return settings, "RST_STREAM " + f.ErrCode.String()
			}
		case *http2.HeadersFrame:
			if f.StreamID == 1 {
				fields, err := dec.DecodeFull(f.HeaderBlockFragment())
				if err != nil {
					t.Fatal(err)
				}
				for _, hf := range fields {
					if hf.Name == ":status" {
						return settings, hf.Value
					}
				}
			}
		case *http2.GoAwayFrame:
			return settings, "GOAWAY " + f.ErrCode.String()
		}
	}
}

// wsBackendCloses opens a connection to u and has the backend close it: the client must read the backend's close
// status (the proxies pass the close on, rather than leaving the client's side open).
func wsBackendCloses(t *testing.T, client *http.Client, u string, header http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, resp, err := wsDial(ctx, client, u, header)
	if err != nil {
		t.Fatalf("dial: %v (%s)", err, respSummary(resp))
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("close me")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != wsBackendClose {
		t.Errorf("after the backend closed: %v, want close status %d", err, wsBackendClose)
	}
}
