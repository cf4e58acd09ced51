// Package tlsconfig builds the TLS configurations kedge and winch use: a server side that re-reads its certificate,
// key and client CA files when they change (so a rotated certificate is served without a restart), and a client side
// for connections to backends and to kedge.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// checkInterval is how often, at most, a handshake makes the Server look at its files again.
const checkInterval = time.Second

// ServerConfig names the files of a TLS listener.
type ServerConfig struct {
	// CertFile is the PEM certificate chain, leaf first. Required.
	CertFile string
	// KeyFile is the PEM private key of the leaf. Required.
	KeyFile string
	// ClientCAFiles are PEM bundles of the CAs that sign client certificates. Empty means no client certificate is
	// requested at all.
	ClientCAFiles []string
	// ClientCertRequired, with ClientCAFiles, refuses handshakes without a valid client certificate
	// (RequireAndVerifyClientCert); false verifies a certificate only when one is sent (VerifyClientCertIfGiven).
	ClientCertRequired bool
}

// Server is a reloading source of server TLS configuration. Handshakes read the current certificate and client CA
// pool; at most once per checkInterval a handshake also compares the files' size and modification time with what was
// loaded, and reloads them all when any changed. A reload that fails (a half-written or broken file) keeps serving
// the previous files and is logged once per broken state.
type Server struct {
	cfg ServerConfig
	log logging.Logger
	now func() time.Time

	snap      atomic.Pointer[serverSnapshot]
	lastCheck atomic.Int64 // UnixNano of the last file check

	reloadMu  sync.Mutex  // serialises file checks; guards failed and failedErr
	failed    []fileStamp // the file state whose load failed last, so it is logged once
	failedErr error       // why it failed
}

type serverSnapshot struct {
	cert   *tls.Certificate
	config *tls.Config // what GetConfigForClient hands out; never mutated after creation
	stamps []fileStamp
}

// fileStamp is what a file check compares. err is set when the file could not be stat'ed.
type fileStamp struct {
	path string
	mod  time.Time
	size int64
	err  string
}

// NewServer loads the files named by cfg and returns a Server serving them. The error names the file at fault.
func NewServer(cfg ServerConfig, log logging.Logger) (*Server, error) {
	return newServer(cfg, log, time.Now)
}

func newServer(cfg ServerConfig, log logging.Logger, now func() time.Time) (*Server, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("tlsconfig: a server certificate file and key file are both required")
	}
	if log == nil {
		log = logging.Discard()
	}
	s := &Server{cfg: cfg, log: log.With(logging.FieldComponent, "tlsconfig"), now: now}
	snap, err := s.load(s.stampFiles())
	if err != nil {
		return nil, err
	}
	s.snap.Store(snap)
	s.lastCheck.Store(now().UnixNano())
	return s, nil
}

// TLSConfig returns a new server *tls.Config (the caller may modify it) whose handshakes use the Server's current
// files: TLS 1.2 or newer, ALPN h2 and http/1.1, and the client-certificate policy of the ServerConfig.
func (s *Server) TLSConfig() *tls.Config {
	snap := s.snap.Load()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		ClientAuth: snap.config.ClientAuth,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.current().cert, nil
		},
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current().config, nil
		},
	}
}

// Reload checks the files now, ignoring the once-per-second limit, and reports why a changed file set could not be
// loaded (the previous one stays in use; the error is returned again while the files stay as they are). kedge calls
// it on SIGHUP (edge.Server.Reload).
func (s *Server) Reload() error {
	s.lastCheck.Store(s.now().UnixNano())
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return s.reloadLocked()
}

// Leaf returns the leaf certificate currently served.
func (s *Server) Leaf() *x509.Certificate { return s.snap.Load().cert.Leaf }

func (s *Server) current() *serverSnapshot {
	now := s.now().UnixNano()
	last := s.lastCheck.Load()
	if now-last >= int64(checkInterval) && s.lastCheck.CompareAndSwap(last, now) && s.reloadMu.TryLock() {
		// Only the handshake that wins the swap checks; the others go on with the current snapshot.
		_ = s.reloadLocked()
		s.reloadMu.Unlock()
	}
	return s.snap.Load()
}

// reloadLocked loads the files if they changed since the last load. s.reloadMu must be held.
func (s *Server) reloadLocked() error {
	stamps := s.stampFiles()
	if slices.Equal(stamps, s.snap.Load().stamps) {
		return nil
	}
	if slices.Equal(stamps, s.failed) {
		return s.failedErr
	}
	snap, err := s.load(stamps)
	if err != nil {
		s.failed, s.failedErr = stamps, err
		s.log.Error("tlsconfig: reload failed, still serving the previous certificate", logging.FieldError, err)
		return err
	}
	s.failed, s.failedErr = nil, nil
	s.snap.Store(snap)
	s.log.Info("tlsconfig: reloaded server certificate", logging.FieldFile, s.cfg.CertFile,
		"subject", snap.cert.Leaf.Subject.String(), "not_after", snap.cert.Leaf.NotAfter)
	return nil
}

func (s *Server) files() []string {
	return append([]string{s.cfg.CertFile, s.cfg.KeyFile}, s.cfg.ClientCAFiles...)
}

func (s *Server) stampFiles() []fileStamp {
	files := s.files()
	stamps := make([]fileStamp, len(files))
	for i, f := range files {
		stamps[i].path = f
		fi, err := os.Stat(f)
		if err != nil {
			stamps[i].err = err.Error()
			continue
		}
		stamps[i].mod, stamps[i].size = fi.ModTime(), fi.Size()
	}
	return stamps
}

// load reads every file; stamps were taken before reading, so a write that races with the read is seen as a change
// at the next check.
func (s *Server) load(stamps []fileStamp) (*serverSnapshot, error) {
	cert, err := loadKeyPair(s.cfg.CertFile, s.cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	if now := s.now(); now.After(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("tlsconfig: certificate %s expired at %s", s.cfg.CertFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	config := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
		Certificates: []tls.Certificate{*cert},
	}
	if len(s.cfg.ClientCAFiles) > 0 {
		pool, err := loadPool(s.cfg.ClientCAFiles, "client CA")
		if err != nil {
			return nil, err
		}
		config.ClientCAs = pool
		config.ClientAuth = tls.VerifyClientCertIfGiven
		if s.cfg.ClientCertRequired {
			config.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return &serverSnapshot{cert: cert, config: config, stamps: stamps}, nil
}
