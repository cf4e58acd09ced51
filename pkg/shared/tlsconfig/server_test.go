package tlsconfig

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a settable clock; handshakes read it from server goroutines.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time             { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration)    { c.ns.Add(int64(d)) }
func (c *fakeClock) set(t time.Time) *fakeClock { c.ns.Store(t.UnixNano()); return c }

// serveTLS accepts connections on 127.0.0.1, completes the handshake and writes one byte, so a client can tell an
// accepted handshake from one the server rejected after the fact (TLS 1.3 client auth).
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer func() { _ = c.Close() }()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					_, _ = c.Write([]byte("k"))
				}
			})
		}
	})
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// handshake connects, waits for the server's byte and returns the connection state.
func handshake(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return tls.ConnectionState{}, err
	}
	return c.ConnectionState(), nil
}

// writePair writes c and moves the files' mtime to a distinct second: writes within one kernel clock tick can
// otherwise keep the same mtime (and an ECDSA certificate often keeps its size).
func writePair(t *testing.T, dir string, c tls.Certificate, gen int) (string, string) {
	t.Helper()
	certFile, keyFile := testutil.WriteCertFiles(t, dir, "server", c)
	touch(t, gen, certFile, keyFile)
	return certFile, keyFile
}

func touch(t *testing.T, gen int, files ...string) {
	t.Helper()
	mt := time.Unix(1_700_000_000+int64(gen), 0)
	for _, f := range files {
		if err := os.Chtimes(f, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewServerErrorsNameTheFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	certFile, keyFile := testutil.WriteCertFiles(t, dir, "good", ca.Server(t))
	_, otherKey := testutil.WriteCertFiles(t, dir, "other", ca.Server(t))
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name string
		cfg  ServerConfig
		now  time.Time
		want string
	}{
		{"no files", ServerConfig{}, time.Now(), "required"},
		{"missing cert", ServerConfig{CertFile: missing, KeyFile: keyFile}, time.Now(), missing},
		{"missing key", ServerConfig{CertFile: certFile, KeyFile: missing}, time.Now(), missing},
		{"key mismatch", ServerConfig{CertFile: certFile, KeyFile: otherKey}, time.Now(), otherKey},
		{"garbage cert", ServerConfig{CertFile: garbage, KeyFile: keyFile}, time.Now(), garbage},
		{"garbage CA", ServerConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFiles: []string{garbage}}, time.Now(), garbage},
		{"missing CA", ServerConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFiles: []string{missing}}, time.Now(), missing},
		{"expired", ServerConfig{CertFile: certFile, KeyFile: keyFile}, time.Now().Add(72 * time.Hour), "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := newServer(tt.cfg, logging.Discard(), newFakeClock().set(tt.now).Now)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestServerProtocols(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	certFile, keyFile := testutil.WriteCertFiles(t, dir, "server", ca.Server(t))
	s, err := NewServer(ServerConfig{CertFile: certFile, KeyFile: keyFile}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, s.TLSConfig())
	tests := []struct {
		name      string
		client    *tls.Config
		wantErr   bool
		wantProto string
	}{
		{"h2 by ALPN", &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"h2", "http/1.1"}}, false, "h2"},
		{"http/1.1 by ALPN", &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}}, false, "http/1.1"},
		{"TLS 1.2", &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS12}, false, ""},
		{"TLS 1.1 refused", &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, true, ""},
		{"unknown CA refused by client", &tls.Config{RootCAs: testutil.NewCA(t).Pool()}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.client.ServerName = "localhost"
			st, err := handshake(addr, tt.client)
			if (err != nil) != tt.wantErr {
				t.Fatalf("handshake error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && st.NegotiatedProtocol != tt.wantProto {
				t.Errorf("ALPN = %q, want %q", st.NegotiatedProtocol, tt.wantProto)
			}
		})
	}
}

func TestServerClientAuth(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	clientCA := testutil.NewCA(t)
	wrongCA := testutil.NewCA(t)
	good := clientCA.Client(t, "alice")
	wrong := wrongCA.Client(t, "mallory")
	tests := []struct {
		name     string
		caFiles  bool
		required bool
		cert     *tls.Certificate
		wantErr  bool
		wantCN   string
	}{
		{"required, no cert", true, true, nil, true, ""},
		{"required, good cert", true, true, &good, false, "alice"},
		{"required, wrong CA", true, true, &wrong, true, ""},
		{"optional, no cert", true, false, nil, false, ""},
		{"optional, good cert", true, false, &good, false, "alice"},
		{"optional, wrong CA", true, false, &wrong, true, ""},
		{"no CA files, cert not requested", false, true, &good, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := ServerConfig{ClientCertRequired: tt.required}
			cfg.CertFile, cfg.KeyFile = testutil.WriteCertFiles(t, dir, "server", ca.Server(t))
			if tt.caFiles {
				cfg.ClientCAFiles = []string{clientCA.WriteFiles(t, dir)}
			}
			s, err := NewServer(cfg, logging.Discard())
			if err != nil {
				t.Fatal(err)
			}
			var sawCN atomic.Value
			srvCfg := s.TLSConfig()
			srvCfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) > 0 {
					sawCN.Store(cs.PeerCertificates[0].Subject.CommonName)
				}
				return nil
			}
			// VerifyConnection on the outer config is not used by GetConfigForClient's config; wrap it instead.
			inner := srvCfg.GetConfigForClient
			srvCfg.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
				c, err := inner(hi)
				if err != nil {
					return nil, err
				}
				c = c.Clone()
				c.VerifyConnection = srvCfg.VerifyConnection
				return c, nil
			}
			addr := serveTLS(t, srvCfg)
			var requested atomic.Bool
			client := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost",
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					requested.Store(true)
					if tt.cert == nil {
						return &tls.Certificate{}, nil
					}
					return tt.cert, nil
				}}
			_, err = handshake(addr, client)
			if (err != nil) != tt.wantErr {
				t.Fatalf("handshake error = %v, want error %v", err, tt.wantErr)
			}
			if requested.Load() != tt.caFiles {
				t.Errorf("client certificate requested = %v, want %v", requested.Load(), tt.caFiles)
			}
			if cn, _ := sawCN.Load().(string); !tt.wantErr && cn != tt.wantCN {
				t.Errorf("server saw CN %q, want %q", cn, tt.wantCN)
			}
		})
	}
}

func TestServerRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	certA, certB, certC := ca.Server(t), ca.Server(t), ca.Server(t)
	certFile, keyFile := writePair(t, dir, certA, 1)
	clock := newFakeClock()
	var logs testutil.Buffer
	log, err := logging.New(logging.Options{Output: &logs, Level: "info"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := newServer(ServerConfig{CertFile: certFile, KeyFile: keyFile}, log, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, s.TLSConfig())
	client := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
	served := func(t *testing.T) string {
		t.Helper()
		st, err := handshake(addr, client)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		return st.PeerCertificates[0].SerialNumber.String()
	}
	serial := func(c tls.Certificate) string { return c.Leaf.SerialNumber.String() }

	if got := served(t); got != serial(certA) {
		t.Fatalf("serving %s, want A %s", got, serial(certA))
	}

	writePair(t, dir, certB, 2)
	if got := served(t); got != serial(certA) {
		t.Errorf("files re-read within a second of the last check: serving %s, want A", got)
	}
	clock.Advance(checkInterval)
	if got := served(t); got != serial(certB) {
		t.Fatalf("after rotation serving %s, want B %s", got, serial(certB))
	}

	// A broken rewrite keeps B and is logged once.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\ntruncated"), 0o644); err != nil {
		t.Fatal(err)
	}
	touch(t, 3, certFile)
	for range 3 {
		clock.Advance(checkInterval)
		if got := served(t); got != serial(certB) {
			t.Fatalf("after broken rewrite serving %s, want B %s", got, serial(certB))
		}
	}
	if n := strings.Count(logs.String(), "reload failed"); n != 1 {
		t.Errorf("reload failure logged %d times, want once:\n%s", n, logs.String())
	}
	if err := s.Reload(); err == nil || !strings.Contains(err.Error(), certFile) {
		t.Errorf("Reload() = %v, want the error naming %s", err, certFile)
	}

	// Repairing the file is picked up.
	writePair(t, dir, certC, 4)
	clock.Advance(checkInterval)
	if got := served(t); got != serial(certC) {
		t.Errorf("after repair serving %s, want C %s", got, serial(certC))
	}
	if got := s.Leaf().SerialNumber.String(); got != serial(certC) {
		t.Errorf("Leaf() = %s, want C", got)
	}
}

func TestServerClientCARotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, oldCA, newCA := testutil.NewCA(t), testutil.NewCA(t), testutil.NewCA(t)
	certFile, keyFile := writePair(t, dir, ca.Server(t), 1)
	caFile := filepath.Join(dir, "clients.pem")
	if err := os.WriteFile(caFile, oldCA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	touch(t, 1, caFile)
	clock := newFakeClock()
	s, err := newServer(ServerConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFiles: []string{caFile}, ClientCertRequired: true},
		logging.Discard(), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, s.TLSConfig())
	newClient := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{newCA.Client(t, "bob")}}
	if _, err := handshake(addr, newClient); err == nil {
		t.Fatal("client of a CA not yet trusted was accepted")
	}
	if err := os.WriteFile(caFile, newCA.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	touch(t, 2, caFile)
	clock.Advance(checkInterval)
	if _, err := handshake(addr, newClient); err != nil {
		t.Errorf("client of the newly trusted CA refused: %v", err)
	}
}

// TestServerConcurrentRotation runs handshakes while the files change, for the race detector.
func TestServerConcurrentRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	certFile, keyFile := writePair(t, dir, ca.Server(t), 1)
	clock := newFakeClock()
	s, err := newServer(ServerConfig{CertFile: certFile, KeyFile: keyFile}, logging.Discard(), clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, s.TLSConfig())
	client := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 10 {
				clock.Advance(checkInterval)
				if _, err := handshake(addr, client); err != nil {
					t.Errorf("handshake during rotation: %v", err)
					return
				}
			}
		})
	}
	for gen := range 5 {
		writePair(t, dir, ca.Server(t), gen+2)
	}
	wg.Wait()
}
