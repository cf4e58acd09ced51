package discovery

import (
	"errors"
	"fmt"
	"net"
	"os"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-proxy/kedge/pkg/edge/config"
)

// ErrNoAPI is returned by NewClient when no Kubernetes API is configured and kedge does not run in a pod.
var ErrNoAPI = errors.New("discovery: no Kubernetes API: kedge is not running in a pod (KUBERNETES_SERVICE_HOST is unset) " +
	"and neither --k8sclient_kubeapi_url nor --k8sclient_kubeconfig_path (or _user) is set")

// NewClient returns a client for the API server that cfg selects: a kubeconfig (--k8sclient_kubeconfig_path or
// --k8sclient_kubeconfig_user; --k8sclient_kubeapi_url and --k8sclient_tls_insecure override its cluster), else
// --k8sclient_kubeapi_url or the in-cluster address from getenv, with the CA and token files. The token file is
// re-read as it rotates. Nothing is dialled yet.
func NewClient(cfg config.K8sConfig, getenv func(string) string) (kubernetes.Interface, error) {
	rc, err := RESTConfig(cfg, getenv)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("discovery: kubernetes client: %w", err)
	}
	return cs, nil
}

// RESTConfig is NewClient's connection settings.
func RESTConfig(cfg config.K8sConfig, getenv func(string) string) (*rest.Config, error) {
	var rc *rest.Config
	if cfg.Kubeconfig() {
		rules := clientcmd.NewDefaultClientConfigLoadingRules() // $KUBECONFIG, then ~/.kube/config
		if cfg.KubeconfigPath != "" {
			rules.ExplicitPath = cfg.KubeconfigPath
		}
		overrides := &clientcmd.ConfigOverrides{}
		overrides.Context.AuthInfo = cfg.KubeconfigUser
		var err error
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("discovery: kubeconfig: %w", err)
		}
		if cfg.KubeAPIURL != "" {
			rc.Host = cfg.KubeAPIURL
		}
		if cfg.TLSInsecure {
			rc.Insecure, rc.CAFile, rc.CAData = true, "", nil
		}
	} else {
		host := cfg.KubeAPIURL
		if host == "" {
			h, p := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
			if h == "" || p == "" {
				return nil, ErrNoAPI
			}
			host = "https://" + net.JoinHostPort(h, p)
		}
		rc = &rest.Config{Host: host}
		if cfg.TLSInsecure {
			rc.Insecure = true
		} else if ok, err := usable(cfg.CAFile, config.DefaultServiceAccountCAFile, "--k8sclient_ca_file"); err != nil {
			return nil, err
		} else if ok {
			rc.CAFile = cfg.CAFile
		}
		if ok, err := usable(cfg.TokenFile, config.DefaultServiceAccountTokenFile, "--k8sclient_token_file"); err != nil {
			return nil, err
		} else if ok {
			rc.BearerTokenFile = cfg.TokenFile
		}
	}
	rc.UserAgent = "kedge"
	return rc, nil
}

// usable reports whether path should be used: it exists. A missing file is an error unless it is the default
// (a service-account file outside a pod, as with "kubectl proxy").
func usable(path, def, flag string) (bool, error) {
	if path == "" {
		return false, nil
	}
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case path == def && errors.Is(err, os.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("discovery: %s: %w", flag, err)
	}
}
