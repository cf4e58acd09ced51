package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ClientConfig describes the TLS side of outgoing connections (to backends, or from winch to kedge).
type ClientConfig struct {
	// RootCAFiles are PEM bundles of the CAs trusted for the server's certificate. Empty means the system roots.
	RootCAFiles []string
	// CertFile and KeyFile are an optional client certificate (PEM) presented to servers that ask for one. Both or
	// neither.
	CertFile string
	KeyFile  string
	// ServerName overrides the name verified in the server's certificate (and sent as SNI).
	ServerName string
	// InsecureSkipVerify turns off server certificate verification. Tests only.
	InsecureSkipVerify bool
}

// NewClient builds a client *tls.Config (TLS 1.2 or newer) from cfg. The files are read once; the error names the
// file at fault.
func NewClient(cfg ClientConfig) (*tls.Config, error) {
	c := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         cfg.ServerName,
		InsecureSkipVerify: cfg.InsecureSkipVerify, //nolint:gosec // explicit opt-in, refused by production config validation
	}
	if len(cfg.RootCAFiles) > 0 {
		pool, err := loadPool(cfg.RootCAFiles, "root CA")
		if err != nil {
			return nil, err
		}
		c.RootCAs = pool
	}
	switch {
	case cfg.CertFile != "" && cfg.KeyFile != "":
		cert, err := loadKeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{*cert}
	case cfg.CertFile != "" || cfg.KeyFile != "":
		return nil, errors.New("tlsconfig: a client certificate needs both a certificate file and a key file")
	}
	return c, nil
}

// loadKeyPair reads a PEM certificate chain and its key; errors name the files.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tlsconfig: reading certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsconfig: reading key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsconfig: certificate %s with key %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil { // X509KeyPair fills Leaf unless GODEBUG x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tlsconfig: certificate %s: %w", certFile, err)
		}
	}
	return &cert, nil
}

// loadPool reads PEM CA bundles into a new pool. A file without any certificate is an error: an empty pool would
// silently accept nothing (or, worse, be mistaken for "no verification" by a caller).
func loadPool(files []string, what string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("tlsconfig: reading %s file: %w", what, err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tlsconfig: %s file %s holds no PEM certificate", what, f)
		}
	}
	return pool, nil
}
