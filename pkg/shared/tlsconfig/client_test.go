package tlsconfig

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestNewClient(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	clientCA := testutil.NewCA(t)
	caFile := ca.WriteFiles(t, dir)
	otherCAFile := testutil.NewCA(t).WriteFiles(t, dir)
	clientCert, clientKey := testutil.WriteCertFiles(t, dir, "client", clientCA.Client(t, "winch"))

	srvCert, srvKey := testutil.WriteCertFiles(t, dir, "server", ca.Server(t, "kedge.example.com"))
	s, err := NewServer(ServerConfig{CertFile: srvCert, KeyFile: srvKey,
		ClientCAFiles: []string{clientCA.WriteFiles(t, dir)}, ClientCertRequired: true}, logging.Discard())
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, s.TLSConfig())

	tests := []struct {
		name    string
		cfg     ClientConfig
		wantErr bool
	}{
		{"verified with cert", ClientConfig{RootCAFiles: []string{caFile}, CertFile: clientCert, KeyFile: clientKey, ServerName: "kedge.example.com"}, false},
		{"several root files", ClientConfig{RootCAFiles: []string{otherCAFile, caFile}, CertFile: clientCert, KeyFile: clientKey, ServerName: "kedge.example.com"}, false},
		{"wrong server name", ClientConfig{RootCAFiles: []string{caFile}, CertFile: clientCert, KeyFile: clientKey, ServerName: "other.example.com"}, true},
		{"wrong CA", ClientConfig{RootCAFiles: []string{otherCAFile}, CertFile: clientCert, KeyFile: clientKey, ServerName: "kedge.example.com"}, true},
		{"no client cert", ClientConfig{RootCAFiles: []string{caFile}, ServerName: "kedge.example.com"}, true},
		{"insecure", ClientConfig{InsecureSkipVerify: true, CertFile: clientCert, KeyFile: clientKey}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := NewClient(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion = %x", c.MinVersion)
			}
			if _, err := handshake(addr, c); (err != nil) != tt.wantErr {
				t.Errorf("handshake error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestNewClientErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testutil.NewCA(t)
	certFile, keyFile := testutil.WriteCertFiles(t, dir, "client", ca.Client(t, "x"))
	missing := filepath.Join(dir, "nope.pem")
	tests := []struct {
		name string
		cfg  ClientConfig
		want string
	}{
		{"missing root file", ClientConfig{RootCAFiles: []string{missing}}, missing},
		{"root file without certs", ClientConfig{RootCAFiles: []string{keyFile}}, keyFile},
		{"cert without key", ClientConfig{CertFile: certFile}, "both"},
		{"key without cert", ClientConfig{KeyFile: keyFile}, "both"},
		{"missing key", ClientConfig{CertFile: certFile, KeyFile: missing}, missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := NewClient(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}
