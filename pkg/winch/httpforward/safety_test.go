package httpforward_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/httpforward"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// TestNoTokensOverPlainHTTP: a route whose kedge URL is http:// (allowed for tests) never carries a token, since
// anyone on the path could read it: winch refuses such requests and tunnels before connecting.
func TestNoTokensOverPlainHTTP(t *testing.T) {
	t.Parallel()
	var seen atomic.Int64
	var leaked atomic.Value
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		if v := r.Header.Get(wire.HeaderProxyAuthz) + r.Header.Get("Authorization"); v != "" {
			leaked.Store(v)
		}
		_, _ = w.Write([]byte("plain kedge"))
	}))
	t.Cleanup(plain.Close)
	ca := testutil.NewCA(t)
	w := startWinch(t, winchSetup{ca: ca,
		sources: sources{"p": staticSource("proxy-secret"), "b": staticSource("backend-secret")},
		routes: []mapper.Route{
			directRoute("proxy.example.com", plain.URL, withProxyAuth("p")),
			directRoute("backend.example.com", plain.URL, withBackendAuth("b")),
			directRoute("tunnel.example.com:443", plain.URL, withProxyAuth("p")),
			directRoute("notoken.example.com", plain.URL),
		},
	})
	c := w.client(t, nil)
	for _, u := range []string{"http://proxy.example.com/", "http://backend.example.com/"} {
		t.Run(u, func(t *testing.T) {
			resp := get(t, c, u)
			_ = readBody(t, resp)
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d, want 502", resp.StatusCode)
			}
			if got := resp.Header.Get(wire.HeaderWinchErrorType); got != string(wire.ErrAuthSource) {
				t.Errorf("X-Winch-Error-Type %q, want %q", got, wire.ErrAuthSource)
			}
			mustContain(t, "X-Winch-Error", resp.Header.Get(wire.HeaderWinchError), "https://")
		})
	}
	t.Run("CONNECT", func(t *testing.T) {
		status, hdr := rawConnect(t, w.addr, "tunnel.example.com:443")
		if status != http.StatusBadGateway || hdr.Get(wire.HeaderWinchErrorType) != string(wire.ErrAuthSource) {
			t.Fatalf("status %d, headers %v; want 502 %s", status, hdr, wire.ErrAuthSource)
		}
	})
	if n := seen.Load(); n != 0 {
		t.Errorf("the plain-HTTP kedge received %d requests carrying tokens (%v)", n, leaked.Load())
	}
	t.Run("no token", func(t *testing.T) {
		resp := get(t, c, "http://notoken.example.com/")
		if body := readBody(t, resp); resp.StatusCode != http.StatusOK || body != "plain kedge" {
			t.Fatalf("status %d body %q: a route without tokens may use a plain-HTTP kedge", resp.StatusCode, body)
		}
	})
}

// TestMITMDirectRouteWithPort: "https://host/" arrives as CONNECT host:443, so a MITM route is keyed "host:443"
// (as docs/winch.md says), while the requests inside the tunnel name "host" without the default port. They must
// still be mapped by the tunnel's route, not sent directly without kedge.
func TestMITMDirectRouteWithPort(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	backend := testutil.NewEchoServer(t, testutil.EchoName("behind-kedge"))
	k := newFakeKedge(t, ca, "kedge", backend.URL)
	mitmCA := httpforward.NewCA(filepath.Join(t.TempDir(), "state"))
	w := startWinch(t, winchSetup{ca: ca, mitmCA: mitmCA,
		sources: sources{"backend": staticSource("injected-token")},
		routes:  []mapper.Route{directRoute("mitm.example.com:443", k.url, withBackendAuth("backend"), withMITM())},
	})
	caPEM, err := mitmCA.PEM()
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA PEM holds no certificate")
	}
	c := w.client(t, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	resp := get(t, c, "https://mitm.example.com/inside")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d (X-Winch-Error %q): the request inside the tunnel did not reach the kedge",
			resp.StatusCode, resp.Header.Get(wire.HeaderWinchError))
	}
	echo := testutil.DecodeEcho(t, resp)
	if echo.Backend != "behind-kedge" || echo.Header.Get("Authorization") != "Bearer injected-token" {
		t.Fatalf("backend %q, Authorization %q", echo.Backend, echo.Header.Get("Authorization"))
	}
	if got := k.last(t).host; !strings.EqualFold(got, "mitm.example.com") {
		t.Errorf("kedge saw Host %q, want mitm.example.com as the client wrote it", got)
	}
}

// TestRetryOnlyIdempotent: a request refused for a stale proxy token is sent again only if it is idempotent and has
// no body; a bodiless POST passes kedge's 401 on (the next request gets the fresh token).
func TestRetryOnlyIdempotent(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	backend := testutil.NewEchoServer(t)
	k := newFakeKedge(t, ca, "kedge", backend.URL, validTokens("fresh"))
	tests := []struct {
		method    string
		wantRetry bool
	}{
		{http.MethodGet, true},
		{http.MethodDelete, true},
		{http.MethodPost, false},
		{http.MethodPatch, false},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			t.Parallel()
			src := &tokenSource{tokens: []string{"stale", "fresh"}}
			w := startWinch(t, winchSetup{ca: ca, sources: sources{"p": src},
				routes: []mapper.Route{directRoute("svc.example.com", k.url, withProxyAuth("p"))}})
			req, err := http.NewRequestWithContext(t.Context(), tt.method, "http://svc.example.com/", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := w.client(t, nil).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			_ = readBody(t, resp)
			want := http.StatusUnauthorized
			if tt.wantRetry {
				want = http.StatusOK
			}
			if resp.StatusCode != want {
				t.Fatalf("%s without body after a stale token: status %d, want %d", tt.method, resp.StatusCode, want)
			}
			if got := src.Invalidated(); len(got) != 1 || got[0] != "stale" {
				t.Errorf("invalidated %v, want [stale]", got)
			}
		})
	}
}

// TestNoRetryWithTheSameToken: when the source has no fresher token after an invalidation (it refreshes at most
// so often), the refused request is not sent again with the token kedge just refused.
func TestNoRetryWithTheSameToken(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	k := newFakeKedge(t, ca, "kedge", testutil.NewEchoServer(t).URL, validTokens("other"))
	src := staticSource("refused")
	w := startWinch(t, winchSetup{ca: ca, sources: sources{"p": src}, routes: []mapper.Route{
		directRoute("svc.example.com", k.url, withProxyAuth("p")),
		directRoute("svc.example.com:443", k.url, withProxyAuth("p")),
	}})
	resp := get(t, w.client(t, nil), "http://svc.example.com/")
	_ = readBody(t, resp)
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get(wire.HeaderKedgeErrorType) != string(wire.ErrUnauthorized) {
		t.Fatalf("status %d, kedge error type %q; want kedge's 401", resp.StatusCode, resp.Header.Get(wire.HeaderKedgeErrorType))
	}
	if n := k.requests.Load(); n != 1 {
		t.Errorf("kedge saw %d requests, want 1", n)
	}
	if got := src.Invalidated(); len(got) != 1 {
		t.Errorf("invalidated %v, want one invalidation", got)
	}
	status, hdr := rawConnect(t, w.addr, "svc.example.com:443")
	if status != http.StatusUnauthorized || hdr.Get(wire.HeaderKedgeErrorType) != string(wire.ErrUnauthorized) {
		t.Fatalf("CONNECT: status %d, headers %v; want kedge's 401", status, hdr)
	}
	if n := k.requests.Load(); n != 2 {
		t.Errorf("kedge saw %d requests after the CONNECT, want 2 (one each)", n)
	}
}
