package tlsconfig

import (
	"crypto/tls"
	"fmt"
	"sync/atomic"
)

// CertRequests remembers whether a server asked this client for a certificate it does not have. With TLS 1.3 a
// server that requires client certificates rejects the client only after the handshake, so the client sees
// "broken pipe" or "connection reset" instead of a reason; Explain turns such errors into one that says what to do.
type CertRequests struct {
	asked atomic.Bool
	hint  string
}

// WatchCertRequests installs a GetClientCertificate hook on cfg when cfg has no client certificate, and returns the
// recorder; hint is appended to explained errors (e.g. "set --client_tls_cert_file and --client_tls_key_file").
// With a client certificate configured it returns a recorder that never explains anything.
func WatchCertRequests(cfg *tls.Config, hint string) *CertRequests {
	c := &CertRequests{hint: hint}
	if cfg == nil || len(cfg.Certificates) > 0 || cfg.GetClientCertificate != nil {
		return c
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c.asked.Store(true)
		return &tls.Certificate{}, nil // send none: servers with optional client certificates still accept us
	}
	return c
}

// Explain adds the hint to err when a server asked for a client certificate we could not give. nil stays nil.
func (c *CertRequests) Explain(err error) error {
	if err == nil || c == nil || !c.asked.Load() {
		return err
	}
	return fmt.Errorf("%w (the server asked for a client certificate and none is configured: %s)", err, c.hint)
}
