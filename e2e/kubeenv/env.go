package kubeenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// AdminUser is the user name of Env.Token, a member of system:masters.
const AdminUser = "kubeenv-admin"

// Options tune Start. The zero value is a working environment.
type Options struct {
	// ServerNames are DNS names the API server's certificate carries besides 127.0.0.1 and localhost, for clients
	// that reach it by another name (through a proxy).
	ServerNames []string
	// Log receives the progress of a build of missing binaries; nil discards it.
	Log io.Writer
	// KeepDir leaves the environment's directory (logs, kubeconfig, keys) in place after Stop.
	KeepDir bool
}

// Env is a running etcd and kube-apiserver. Its methods are safe for concurrent use.
type Env struct {
	Dir        string // the environment's directory: keys, data, logs
	Kubeconfig string // a kubeconfig for the admin (context "kubeenv", user AdminUser)
	URL        string // https://127.0.0.1:<port>
	Token      string // the admin's bearer token (system:masters)
	CAFile     string // the CA that signed the API server's certificate
	CAPEM      []byte // its PEM
	EtcdURL    string // http://127.0.0.1:<port>
	AuditLog   string // the API server's audit log: every request of a service account, at Metadata level
	Versions   map[string]string

	keepDir                 bool
	etcdArgs, apiserverArgs []string
	etcdBin, apiserverBin   string

	mu              sync.Mutex
	etcd, apiserver *proc // nil while stopped; guarded by mu
	stopped         bool  // guarded by mu
}

// Grace periods before SIGKILL. A graceful kube-apiserver shutdown with open watches can take minutes.
const (
	apiserverGrace = 2 * time.Second
	etcdGrace      = 10 * time.Second
	readyTimeout   = 2 * time.Minute // a cold start on a busy 2-core machine
)

// Start builds any missing binary (see Component.Build), then starts etcd and kube-apiserver on loopback ephemeral
// ports and waits until the API server's /readyz answers 200. The caller must call Stop.
func Start(ctx context.Context, opts Options) (*Env, error) {
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	paths, err := Warm(ctx, log)
	if err != nil {
		return nil, err
	}
	versions := map[string]string{}
	cs, _ := Components()
	for _, c := range cs {
		versions[c.Name] = c.Version
	}
	var lastErr error
	for range 3 { // a port picked free may be taken before the server binds it: start again on others
		dir, err := os.MkdirTemp("", "kubeenv-")
		if err != nil {
			return nil, fmt.Errorf("kubeenv: %w", err)
		}
		e := &Env{Dir: dir, keepDir: opts.KeepDir, etcdBin: paths["etcd"], apiserverBin: paths["kube-apiserver"], Versions: versions}
		if lastErr = e.start(ctx, opts.ServerNames); lastErr == nil {
			return e, nil
		}
		_ = e.Stop()
		if ctx.Err() != nil || !errors.Is(lastErr, errPortTaken) {
			break
		}
	}
	return nil, lastErr
}

// StartT is Start for tests: it fails t unless the environment starts and stops it at cleanup.
func StartT(t testing.TB, opts Options) *Env {
	t.Helper()
	e, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Error(err)
		}
	})
	return e
}

var errPortTaken = errors.New("port taken")

func (e *Env) start(ctx context.Context, names []string) error {
	keys, err := writeKeyMaterial(e.Dir, names)
	if err != nil {
		return fmt.Errorf("kubeenv: generating keys: %w", err)
	}
	e.Token, e.CAFile, e.CAPEM = keys.token, keys.caFile, keys.caPEM
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	e.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	e.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	e.AuditLog = filepath.Join(e.Dir, "audit.log")
	policy := filepath.Join(e.Dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return fmt.Errorf("kubeenv: %w", err)
	}
	e.etcdArgs = []string{
		"--name=kubeenv", "--data-dir=" + filepath.Join(e.Dir, "etcd"),
		"--listen-client-urls=" + e.EtcdURL, "--advertise-client-urls=" + e.EtcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=kubeenv=" + peerURL,
		"--unsafe-no-fsync", // a test cluster: speed over durability across machine crashes
		"--log-level=warn",
	}
	e.apiserverArgs = []string{
		"--etcd-servers=" + e.EtcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port=" + strconv.Itoa(ports[2]),
		"--endpoint-reconciler-type=none", // the default one refuses a loopback advertise address
		"--cert-dir=" + filepath.Join(e.Dir, "certs"),
		"--tls-cert-file=" + keys.certFile, "--tls-private-key-file=" + keys.keyFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + keys.saKeyFile, "--service-account-signing-key-file=" + keys.saKeyFile,
		"--token-auth-file=" + filepath.Join(e.Dir, "tokens.csv"),
		"--anonymous-auth=false", // a request without credentials is 401, as in most managed clusters
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/16", // room for thousands of Services in scale tests
		"--audit-policy-file=" + policy, "--audit-log-path=" + e.AuditLog,
	}
	if err := e.StartEtcd(ctx); err != nil {
		return err
	}
	if err := e.StartAPIServer(ctx); err != nil {
		return err
	}
	e.Kubeconfig = filepath.Join(e.Dir, "kubeconfig")
	return os.WriteFile(e.Kubeconfig, []byte(e.kubeconfig()), 0o600)
}

// auditPolicy records service accounts' requests (kedge's, in the tests) without bodies, and nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
`

func (e *Env) kubeconfig() string {
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubeenv
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: kubeenv
  context: {cluster: kubeenv, user: %s}
current-context: kubeenv
`, e.URL, base64.StdEncoding.EncodeToString(e.CAPEM), AdminUser, e.Token, AdminUser)
}

// StartEtcd starts etcd (again, on the same port and data) and waits for its /health.
func (e *Env) StartEtcd(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.etcd != nil || e.stopped {
		return errors.New("kubeenv: etcd is running or the environment is stopped")
	}
	p, err := startProc(e.etcdBin, e.etcdArgs, filepath.Join(e.Dir, "etcd.log"))
	if err != nil {
		return err
	}
	e.etcd = p
	return waitHTTP(ctx, p, http.DefaultClient, e.EtcdURL+"/health", "", `"health":"true"`)
}

// StartAPIServer starts kube-apiserver (again, on the same port) and waits for its /readyz.
func (e *Env) StartAPIServer(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.apiserver != nil || e.stopped {
		return errors.New("kubeenv: kube-apiserver is running or the environment is stopped")
	}
	p, err := startProc(e.apiserverBin, e.apiserverArgs, filepath.Join(e.Dir, "kube-apiserver.log"))
	if err != nil {
		return err
	}
	e.apiserver = p
	return waitHTTP(ctx, p, e.Client(), e.URL+"/readyz", e.Token, "ok")
}

// StopAPIServer stops kube-apiserver: SIGTERM, then SIGKILL after a short grace.
func (e *Env) StopAPIServer() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.apiserver
	e.apiserver = nil
	return p.stop(apiserverGrace)
}

// StopEtcd stops etcd: SIGTERM, then SIGKILL after a grace.
func (e *Env) StopEtcd() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.etcd
	e.etcd = nil
	return p.stop(etcdGrace)
}

// APIServerPID is the process ID of the running kube-apiserver, or 0.
func (e *Env) APIServerPID() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.apiserver == nil {
		return 0
	}
	return e.apiserver.cmd.Process.Pid
}

// Stop stops kube-apiserver, then etcd, and removes the directory (unless Options.KeepDir). It stops only the
// processes this Env started. Calling it again does nothing.
func (e *Env) Stop() error {
	errA := e.StopAPIServer()
	errE := e.StopEtcd()
	e.mu.Lock()
	already := e.stopped
	e.stopped = true
	e.mu.Unlock()
	if already {
		return nil
	}
	var errD error
	if !e.keepDir {
		errD = os.RemoveAll(e.Dir)
	}
	return errors.Join(errA, errE, errD)
}

// Client is an HTTP client that trusts the API server's CA (add the admin token to requests yourself).
func (e *Env) Client() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: nil, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
}

// waitHTTP polls url until it answers 200 with a body containing want, the process exits, or readyTimeout passes.
func waitHTTP(ctx context.Context, p *proc, c *http.Client, url, token, want string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	last := "no answer"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), want) {
				return nil
			}
			last = resp.Status + ": " + string(body)
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			err := fmt.Errorf("kubeenv: %s exited before it was ready (%v); its log ends:\n%s", p.name, p.err, p.tail())
			if strings.Contains(p.tail(), "address already in use") {
				err = fmt.Errorf("%w: %w", errPortTaken, err)
			}
			return err
		case <-ctx.Done():
			return fmt.Errorf("kubeenv: %s not ready at %s: %s; its log ends:\n%s", p.name, url, last, p.tail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePorts reserves n distinct loopback ports and releases them for the servers to bind.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("kubeenv: %w", err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
