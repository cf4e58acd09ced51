package main

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// The files the README's tutorial names, written into the demo's directory. Commands run with that directory as
// their working directory, so every path in them is relative and the user can rerun them there.
const (
	fileKedgeCert   = "kedge.crt"      // kedge's server certificate (localhost, 127.0.0.1), issued by ca.crt
	fileKedgeKey    = "kedge.key"      // its key (0600)
	fileKedgeCA     = "ca.crt"         // the CA winch trusts for kedge
	fileBackendCA   = "backend-ca.crt" // the CA of the "cluster" backend (api.demo.kedge.local), trusted by curl and kubectl
	fileKubeconfig  = "demo.kubeconfig"
	fileProxyToken  = "proxy-token" // the token kedge checks (--unsafe_bearer_token_proxy_auth_file)
	fileDirector    = "director.yaml"
	fileBackendpool = "backendpool.yaml"
	fileMapper      = "winch-mapper.yaml"
	fileAuth        = "winch-auth.yaml"
)

// writeFiles makes a throwaway PKI and writes the tutorial's files into dir: certificates, the kubeconfig, the proxy
// token, and copies of the example documents with the demo's ports. It returns the backend's TLS certificate.
func writeFiles(dir, examples string, p ports) (backendCert tls.Certificate, err error) {
	defer func() {
		if r := recover(); r != nil { // testutil reports through fatal, which panics
			err = fmt.Errorf("%v", r)
		}
	}()
	// One CA for kedge (trusted by winch), one for the "cluster" backend (trusted by the clients at the other end of
	// the CONNECT tunnel, as kubectl trusts an API server's CA).
	kedgeCA, backendCA := testutil.NewCA(fatal{}), testutil.NewCA(fatal{})
	certPEM, keyPEM := testutil.EncodePEM(fatal{}, kedgeCA.Server(fatal{}, "localhost", "127.0.0.1"))
	kubeconfig := fmt.Sprintf(kubeconfigTemplate, fileBackendCA)
	out := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{fileKedgeCert, certPEM, 0o644},
		{fileKedgeKey, keyPEM, 0o600},
		{fileKedgeCA, kedgeCA.CertPEM, 0o644},
		{fileBackendCA, backendCA.CertPEM, 0o644},
		{fileKubeconfig, []byte(kubeconfig), 0o600},
		{fileProxyToken, []byte("demo-proxy-token\n"), 0o600},
	}
	// The example documents name the default ports; the copies name the ones in use.
	rewrites := map[string][][2]string{
		fileDirector: nil,
		fileBackendpool: {
			{"port: " + strconv.Itoa(defaultPorts.BackendHTTP) + "}", "port: " + strconv.Itoa(p.BackendHTTP) + "}"},
			{"port: " + strconv.Itoa(defaultPorts.BackendTLS) + "}", "port: " + strconv.Itoa(p.BackendTLS) + "}"},
			{"port: " + strconv.Itoa(defaultPorts.BackendGRPC) + "}", "port: " + strconv.Itoa(p.BackendGRPC) + "}"},
		},
		fileMapper: {
			{"localhost:" + strconv.Itoa(defaultPorts.KedgeHTTPS), "localhost:" + strconv.Itoa(p.KedgeHTTPS)},
			{"localhost:" + strconv.Itoa(defaultPorts.KedgeGRPC), "localhost:" + strconv.Itoa(p.KedgeGRPC)},
		},
		fileAuth: nil,
	}
	for name, repl := range rewrites {
		b, err := os.ReadFile(filepath.Join(examples, name))
		if err != nil {
			return tls.Certificate{}, err
		}
		s := string(b)
		for _, r := range repl {
			if !strings.Contains(s, r[0]) {
				return tls.Certificate{}, fmt.Errorf("%s no longer contains %q: update the demo's port rewrites with it", filepath.Join(examples, name), r[0])
			}
			s = strings.ReplaceAll(s, r[0], r[1])
		}
		out = append(out, struct {
			name string
			data []byte
			mode os.FileMode
		}{name, []byte(s), 0o644})
	}
	for _, f := range out {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return tls.Certificate{}, err
		}
	}
	return backendCA.Server(fatal{}, "api.demo.kedge.local", "localhost"), nil
}

// kubeconfigTemplate points kubectl at a name only kedge can route; %s is the backend CA file, relative to the
// kubeconfig's own directory as kubectl resolves it.
const kubeconfigTemplate = `apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: https://api.demo.kedge.local:443
    certificate-authority: %s
users:
- name: demo
  user:
    token: kubectl-demo-token
contexts:
- name: demo
  context: {cluster: demo, user: demo}
current-context: demo
`
