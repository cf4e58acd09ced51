package httpforward

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// File names of the MITM CA inside the state directory.
const (
	CACertFile = "mitm-ca.pem"
	CAKeyFile  = "mitm-ca-key.pem"
)

// caValidity is how long a new MITM CA is valid. A user who trusted it renews by deleting both files.
const caValidity = 2 * 365 * 24 * time.Hour

// certStoreSize bounds the cache of signed leaf certificates.
const certStoreSize = 256

// CA is winch's local MITM certificate authority, stored in a directory as CACertFile and CAKeyFile (0600, in a
// 0700 directory). It is created on first use, so winch never makes one unless a route asks for MITM or the user
// runs "winch ca". Safe for concurrent use.
type CA struct {
	dir string

	mu   sync.Mutex
	cert *tls.Certificate // loaded or created; guarded by mu
	pem  []byte           // the certificate in PEM form; guarded by mu
}

// NewCA returns the CA kept in dir. Nothing is read or written until Certificate or PEM is called.
func NewCA(dir string) *CA { return &CA{dir: dir} }

// Certificate returns the CA's certificate and key, creating them on first use.
func (c *CA) Certificate() (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.loadLocked(); err != nil {
		return nil, err
	}
	return c.cert, nil
}

// PEM returns the CA certificate in PEM form (what the user adds to a trust store), creating the CA on first use.
func (c *CA) PEM() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.loadLocked(); err != nil {
		return nil, err
	}
	return c.pem, nil
}

func (c *CA) loadLocked() error {
	if c.cert != nil {
		return nil
	}
	if c.dir == "" {
		return errors.New("httpforward: MITM CA: no state directory")
	}
	certPath, keyPath := filepath.Join(c.dir, CACertFile), filepath.Join(c.dir, CAKeyFile)
	certPEM, err := readPrivateFile(certPath, false)
	if errors.Is(err, fs.ErrNotExist) {
		if err := c.create(certPath, keyPath); err != nil {
			return err
		}
		certPEM, err = readPrivateFile(certPath, false)
	}
	if err != nil {
		return fmt.Errorf("httpforward: MITM CA: %w", err)
	}
	keyPEM, err := readPrivateFile(keyPath, true)
	if err != nil {
		return fmt.Errorf("httpforward: MITM CA: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("httpforward: MITM CA %s: %w", certPath, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("httpforward: MITM CA %s: %w", certPath, err)
		}
	}
	if !cert.Leaf.IsCA {
		return fmt.Errorf("httpforward: MITM CA %s is not a CA certificate", certPath)
	}
	if time.Now().After(cert.Leaf.NotAfter) {
		return fmt.Errorf("httpforward: MITM CA %s expired on %s; delete %s and %s to create a new one (and trust it again)",
			certPath, cert.Leaf.NotAfter.Format(time.DateOnly), CACertFile, CAKeyFile)
	}
	c.cert, c.pem = &cert, certPEM
	return nil
}

// create generates a new CA and writes it: the key first (0600), then the certificate, each atomically.
func (c *CA) create(certPath, keyPath string) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return fmt.Errorf("httpforward: MITM CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("httpforward: MITM CA key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("httpforward: MITM CA serial: %w", err)
	}
	host, _ := os.Hostname()
	user := os.Getenv("USER")
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: fmt.Sprintf("winch local MITM CA (%s@%s)", user, host), Organization: []string{"winch"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("httpforward: MITM CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("httpforward: MITM CA key: %w", err)
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// readPrivateFile reads a regular file that is not a symlink; a secret file must also not be readable by others.
func readPrivateFile(path string, secret bool) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if secret && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %o; a private key must be readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	}
	return os.ReadFile(path)
}

// writeFileAtomic writes data to a new 0600 file next to path and renames it into place.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("httpforward: writing %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("httpforward: writing %s: %w", path, err)
	}
	return nil
}

// certStore caches the leaf certificates goproxy signs for MITM'd hosts (least recently used evicted first).
type certStore struct {
	max   int
	mu    sync.Mutex
	order *list.List               // of string host names, most recent first; guarded by mu
	certs map[string]*list.Element // host -> element whose Value is *certEntry; guarded by mu
}

type certEntry struct {
	host string
	cert *tls.Certificate
}

func newCertStore(max int) *certStore {
	return &certStore{max: max, order: list.New(), certs: map[string]*list.Element{}}
}

// Fetch implements goproxy.CertStorage. Signing happens outside the lock; two concurrent first requests for a host
// may both sign, and one result wins.
func (s *certStore) Fetch(host string, gen func() (*tls.Certificate, error)) (*tls.Certificate, error) {
	s.mu.Lock()
	if el, ok := s.certs[host]; ok {
		e := el.Value.(*certEntry)
		if e.cert.Leaf == nil || time.Now().Before(e.cert.Leaf.NotAfter) {
			s.order.MoveToFront(el)
			s.mu.Unlock()
			return e.cert, nil
		}
		s.order.Remove(el)
		delete(s.certs, host)
	}
	s.mu.Unlock()
	cert, err := gen()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.certs[host]; !ok {
		s.certs[host] = s.order.PushFront(&certEntry{host: host, cert: cert})
		for s.order.Len() > s.max {
			last := s.order.Back()
			s.order.Remove(last)
			delete(s.certs, last.Value.(*certEntry).host)
		}
	}
	return cert, nil
}
