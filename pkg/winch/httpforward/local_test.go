package httpforward_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
	"github.com/kedge-proxy/kedge/pkg/winch/httpforward"
	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
	"github.com/kedge-proxy/kedge/pkg/winch/pac"
)

func TestLocalEndpointsGuard(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	mux := http.NewServeMux()
	mux.Handle("/proxy.pac", pac.Handler(pac.Generate("127.0.0.1:8070", []string{"*.example.com"}), time.Now()))
	w := startWinch(t, winchSetup{ca: ca, local: mux})
	plain := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}
	t.Cleanup(plain.CloseIdleConnections)

	tests := []struct {
		name   string
		host   string
		header map[string]string
		method string
		want   int
	}{
		{name: "127.0.0.1", host: w.addr, want: http.StatusOK},
		{name: "localhost", host: "localhost:" + port(w.addr), want: http.StatusOK},
		{name: "LOCALHOST without port", host: "LOCALHOST", want: http.StatusOK},
		{name: "[::1]", host: "[::1]:" + port(w.addr), want: http.StatusOK},
		{name: "DNS rebinding host", host: "evil.example.com:" + port(w.addr), want: http.StatusForbidden},
		{name: "rebinding host without port", host: "evil.example.com", want: http.StatusForbidden},
		{name: "same origin", host: w.addr, header: map[string]string{"Origin": "http://" + w.addr}, want: http.StatusOK},
		{name: "cross-site origin", host: w.addr, header: map[string]string{"Origin": "https://evil.example.com"}, want: http.StatusForbidden},
		{name: "null origin", host: w.addr, header: map[string]string{"Origin": "null"}, want: http.StatusForbidden},
		{name: "cross-site fetch", host: w.addr, header: map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}, want: http.StatusForbidden},
		{name: "cross-site navigation", host: w.addr, header: map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, want: http.StatusOK},
		{name: "cross-site form post", host: w.addr, method: http.MethodPost, header: map[string]string{"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, want: http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			req, err := http.NewRequestWithContext(t.Context(), method, "http://"+w.addr+"/proxy.pac", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tt.host
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := plain.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body := readBody(t, resp)
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tt.want, body)
			}
			if tt.want == http.StatusOK {
				if ct := resp.Header.Get("Content-Type"); ct != pac.ContentType {
					t.Errorf("Content-Type %q", ct)
				}
				mustContain(t, "PAC", body, `shExpMatch(host, "*.example.com")`)
			} else if resp.Header.Get(wire.HeaderWinchErrorType) != string(wire.ErrForbidden) {
				t.Errorf("refusal without X-Winch-Error-Type forbidden: %v", resp.Header)
			}
			if v := resp.Header.Get("Access-Control-Allow-Origin"); v != "" {
				t.Errorf("CORS header sent: %q", v)
			}
		})
	}
}

func TestMITM(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	backend := testutil.NewEchoServer(t, testutil.EchoName("behind-kedge"))
	k := newFakeKedge(t, ca, "kedge", backend.URL)
	stateDir := filepath.Join(t.TempDir(), "state")
	mitmCA := httpforward.NewCA(stateDir)
	w := startWinch(t, winchSetup{ca: ca, mitmCA: mitmCA,
		sources: sources{"backend": staticSource("injected-token")},
		routes: []mapper.Route{{Regexp: regexp.MustCompile(`^mitm[.]example[.]com(:443)?$`), URL: k.url,
			BackendAuth: "backend", MITM: true}},
	})
	caPEM, err := mitmCA.PEM()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(stateDir, httpforward.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %o, want 600", fi.Mode().Perm())
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA PEM holds no certificate")
	}
	c := w.client(t, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	resp := get(t, c, "https://mitm.example.com/inside", "Authorization", "Bearer client")
	echo := testutil.DecodeEcho(t, resp)
	if resp.StatusCode != http.StatusOK || echo.Backend != "behind-kedge" {
		t.Fatalf("status %d backend %q", resp.StatusCode, echo.Backend)
	}
	if got := echo.Header.Get("Authorization"); got != "Bearer injected-token" {
		t.Errorf("backend auth not injected into the MITM'd request: %q", got)
	}
	if got := echo.Header.Get("X-Seen-Forwarded-Proto"); got != "https" {
		t.Errorf("kedge saw X-Forwarded-Proto %q, want https", got)
	}
	if !strings.HasPrefix(k.last(t).host, "mitm.example.com") {
		t.Errorf("kedge saw Host %q", k.last(t).host)
	}
	// A second winch on the same state directory uses the same CA.
	again, err := httpforward.NewCA(stateDir).PEM()
	if err != nil || string(again) != string(caPEM) {
		t.Errorf("CA not reused from the state directory: %v", err)
	}
}

func TestCARefusesLooseKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := httpforward.NewCA(dir).PEM(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, httpforward.CAKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := httpforward.NewCA(dir).Certificate()
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("loading a world-readable CA key: %v, want a refusal", err)
	}
}
