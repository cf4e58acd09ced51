package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// Service-account files that a pod sees; they are the defaults of --k8sclient_ca_file and --k8sclient_token_file.
const (
	DefaultServiceAccountCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	DefaultServiceAccountTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
)

// DefaultLabelPrefix is the default of --discovery_label_annotation_prefix.
const DefaultLabelPrefix = "kedge.com/"

// Label and annotation names that discovery reads, after the prefix.
const (
	ExposedLabel                  = "kedge-exposed"
	HostMatcherAnnotation         = "host-matcher"
	ServiceNameMatcherAnnotation  = "service-name-matcher"
	RequiredPermissionsAnnotation = "required-permissions"
)

// K8sConfig is the static configuration of kedge's Kubernetes support: how to reach the API server (used by the
// k8s resolver and by discovery) and whether and how Services are turned into routes.
//
// API access, in order of precedence: a kubeconfig (--k8sclient_kubeconfig_path or --k8sclient_kubeconfig_user,
// with --k8sclient_kubeapi_url overriding its server), an explicit --k8sclient_kubeapi_url with the token and CA
// files, or the pod's own service account (in-cluster, the default).
type K8sConfig struct {
	// KubeAPIURL is the API server URL; "" means https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, or the
	// kubeconfig's server when a kubeconfig is used.
	KubeAPIURL string
	// TLSInsecure skips verification of the API server's certificate.
	TLSInsecure bool
	// CAFile verifies the API server's certificate (not used with a kubeconfig, which names its own).
	CAFile string
	// TokenFile holds the bearer token; it is re-read as it rotates (projected service-account tokens).
	TokenFile string
	// KubeconfigUser selects a user of the kubeconfig; "" means the current context's user.
	KubeconfigUser string
	// KubeconfigPath is the kubeconfig file; "" means $KUBECONFIG or ~/.kube/config when a kubeconfig is used.
	KubeconfigPath string

	// DynamicRoutings turns on Service discovery.
	DynamicRoutings bool
	// LabelPrefix prefixes the kedge-exposed label and the annotations discovery reads.
	LabelPrefix string
	// ExternalDomainSuffix makes the generated host names: <service>.<namespace>.svc.<suffix>.
	ExternalDomainSuffix string
	// Namespace, if set, limits what kedge watches (Services and EndpointSlices) to one namespace, so a namespaced
	// Role suffices.
	Namespace string
	// CacheSyncTimeout is how long kedge waits for its Kubernetes caches before it logs why they are not filled;
	// it stays unready until they are.
	CacheSyncTimeout time.Duration

	deprecated deprecatedK8sFlags
}

// deprecatedK8sFlags are the original's tuning flags of its hand-rolled watches; informers make them pointless.
type deprecatedK8sFlags struct {
	discoveryResync, resolverFirstUpdate, resolverResync, authTimeout time.Duration
}

// RegisterFlags declares the Kubernetes flags on fs. The original's misspelled names (--k8client_token_file,
// --*_timouet) are accepted through NormalizeFlagName.
func (c *K8sConfig) RegisterFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.KubeAPIURL, "k8sclient_kubeapi_url", "", "Kubernetes API server URL; empty = https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (in a pod), or the kubeconfig's server when a kubeconfig is used")
	fs.BoolVar(&c.TLSInsecure, "k8sclient_tls_insecure", false, "do not verify the Kubernetes API server's certificate")
	fs.StringVar(&c.CAFile, "k8sclient_ca_file", DefaultServiceAccountCAFile, "PEM CA bundle that verifies the Kubernetes API server (ignored with a kubeconfig)")
	fs.StringVar(&c.TokenFile, "k8sclient_token_file", DefaultServiceAccountTokenFile, "bearer token file for the Kubernetes API, re-read as it rotates (ignored with a kubeconfig); alias --k8client_token_file")
	fs.StringVar(&c.KubeconfigUser, "k8sclient_kubeconfig_user", "", "use this kubeconfig user's credentials for the Kubernetes API (token, client certificate, exec plugin)")
	fs.StringVar(&c.KubeconfigPath, "k8sclient_kubeconfig_path", "", "kubeconfig file for the Kubernetes API; empty = $KUBECONFIG or ~/.kube/config when --k8sclient_kubeconfig_user is set, otherwise in-cluster access")

	fs.BoolVar(&c.DynamicRoutings, "kedge_dynamic_routings_enabled", false, "generate routes and backends from Services labelled <prefix>kedge-exposed: \"true\"")
	fs.StringVar(&c.LabelPrefix, "discovery_label_annotation_prefix", DefaultLabelPrefix, "prefix of the kedge-exposed label and of the host-matcher, service-name-matcher and required-permissions annotations")
	fs.StringVar(&c.ExternalDomainSuffix, "discovery_external_domain_suffix", "", "domain of generated host names, <service>.<namespace>.svc.<suffix>; required with --kedge_dynamic_routings_enabled")
	fs.StringVar(&c.Namespace, "discovery_namespace", "", "watch Services and EndpointSlices of this namespace only (a namespaced Role then suffices); empty = all namespaces")
	fs.DurationVar(&c.CacheSyncTimeout, "k8s_cache_sync_timeout", 30*time.Second, "how long to wait for the Kubernetes caches before logging why they are not filled; kedge is not ready until they are")

	fs.DurationVar(&c.deprecated.discoveryResync, "discovery_resync_timeout", 15*time.Minute, "no effect")
	fs.DurationVar(&c.deprecated.resolverFirstUpdate, "k8sresolver_first_update_timeout", 300*time.Millisecond, "no effect")
	fs.DurationVar(&c.deprecated.resolverResync, "k8sresolver_resync_timeout", 30*time.Minute, "no effect")
	fs.DurationVar(&c.deprecated.authTimeout, "k8sclient_auth_timeout", 10*time.Second, "no effect")
	for _, n := range []string{"discovery_resync_timeout", "k8sresolver_first_update_timeout", "k8sresolver_resync_timeout", "k8sclient_auth_timeout"} {
		_ = fs.MarkDeprecated(n, "it has no effect: kedge uses shared informers, which resume lost watches themselves")
	}
}

// Kubeconfig reports whether API access goes through a kubeconfig file.
func (c *K8sConfig) Kubeconfig() bool { return c.KubeconfigPath != "" || c.KubeconfigUser != "" }

// Validate reports every problem with the Kubernetes flags at once.
func (c *K8sConfig) Validate() error {
	var errs []error
	if c.KubeAPIURL != "" {
		u, err := url.Parse(c.KubeAPIURL)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("--k8sclient_kubeapi_url: %w", err))
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			errs = append(errs, fmt.Errorf("--k8sclient_kubeapi_url: %q must be an http:// or https:// URL with a host", c.KubeAPIURL))
		}
	}
	if c.DynamicRoutings && c.ExternalDomainSuffix == "" {
		errs = append(errs, errors.New("--discovery_external_domain_suffix is required with --kedge_dynamic_routings_enabled: generated hosts are <service>.<namespace>.svc.<suffix>"))
	}
	if s := c.ExternalDomainSuffix; s != "" {
		if strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") {
			errs = append(errs, fmt.Errorf("--discovery_external_domain_suffix: %q must not start or end with '.'", s))
		} else if r := checkDNSName(s, false); r != "" {
			errs = append(errs, fmt.Errorf("--discovery_external_domain_suffix: %q %s", s, r))
		}
	}
	// The longest key discovery builds from the prefix must be a valid Kubernetes label/annotation key.
	if r := checkQualifiedName(c.LabelPrefix + ServiceNameMatcherAnnotation); r != "" {
		errs = append(errs, fmt.Errorf("--discovery_label_annotation_prefix: %q does not make valid label and annotation keys (%q %s); use a DNS name followed by '/', like %q",
			c.LabelPrefix, c.LabelPrefix+ServiceNameMatcherAnnotation, r, DefaultLabelPrefix))
	}
	if c.Namespace != "" && !isDNSLabel(c.Namespace) {
		errs = append(errs, fmt.Errorf("--discovery_namespace: %q is not a namespace name (lower-case letters, digits and '-')", c.Namespace))
	}
	if c.CacheSyncTimeout <= 0 {
		errs = append(errs, errors.New("--k8s_cache_sync_timeout must be positive"))
	}
	return errors.Join(errs...)
}

// K8sTarget is a parsed k8s resolver target: "<service>[.<namespace>[.<anything>]][:<port number>|:<port name>]".
type K8sTarget struct {
	Service   string
	Namespace string // "default" when the target names none
	// PortName or PortNumber selects the endpoint port; both empty means the Service must have exactly one port.
	PortName   string
	PortNumber int32
}

// String returns "namespace/service:port".
func (t K8sTarget) String() string {
	s := t.Namespace + "/" + t.Service
	switch {
	case t.PortName != "":
		s += ":" + t.PortName
	case t.PortNumber != 0:
		s += ":" + strconv.Itoa(int(t.PortNumber))
	}
	return s
}

// ParseK8sTarget parses a k8s resolver target; the validator and the resolver both use it, so a target that
// passes validation always resolves. Labels after the namespace ("svc.ns.svc.cluster.local") are ignored; a
// trailing ':' means no port. A port number selects the endpoints' (target) port of that number; a name selects the
// Service port of that name.
func ParseK8sTarget(s string) (K8sTarget, error) {
	t, reason := parseK8sTarget(s)
	if reason != "" {
		return K8sTarget{}, fmt.Errorf("k8s target %q %s", s, reason)
	}
	return t, nil
}

// parseK8sTarget is ParseK8sTarget with the problem as a reason that reads well after the quoted target.
func parseK8sTarget(s string) (K8sTarget, string) {
	if s == "" {
		return K8sTarget{}, "is required"
	}
	if strings.Contains(s, "://") {
		return K8sTarget{}, "must not have a scheme (write \"service.namespace:port\")"
	}
	hostPart, port, _ := strings.Cut(s, ":")
	if strings.Contains(port, ":") {
		return K8sTarget{}, "must have at most one ':'"
	}
	labels := strings.Split(hostPart, ".")
	t := K8sTarget{Service: labels[0], Namespace: "default"}
	if !isDNSLabel(t.Service) || t.Service[0] < 'a' {
		return K8sTarget{}, "does not start with a Service name (lower-case letters, digits and '-', starting with a letter)"
	}
	if len(labels) > 1 {
		if !isDNSLabel(labels[1]) {
			return K8sTarget{}, "has an invalid namespace (lower-case letters, digits and '-')"
		}
		t.Namespace = labels[1]
	}
	switch {
	case port == "":
	case strings.Trim(port, "0123456789") == "":
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return K8sTarget{}, "has a port number outside 1-65535"
		}
		t.PortNumber = int32(n)
	case !isDNSLabel(port):
		return K8sTarget{}, "has an invalid port name (lower-case letters, digits and '-')"
	default:
		t.PortName = port
	}
	return t, ""
}

// checkQualifiedName checks a Kubernetes label or annotation key: an optional DNS-subdomain prefix and '/', then a
// name of at most 63 letters, digits, '-', '_' and '.', alphanumeric at both ends.
func checkQualifiedName(key string) string {
	prefix, name, hasPrefix := strings.Cut(key, "/")
	if !hasPrefix {
		prefix, name = "", key
	}
	if hasPrefix {
		if prefix == "" || len(prefix) > 253 {
			return "has an empty or too long prefix"
		}
		for _, l := range strings.Split(prefix, ".") {
			if !isDNSLabel(l) {
				return "has a prefix that is not a lower-case DNS name"
			}
		}
	}
	if name == "" || len(name) > 63 {
		return "has an empty name or one longer than 63 characters"
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	if !alnum(name[0]) || !alnum(name[len(name)-1]) {
		return "must start and end with a letter or digit"
	}
	for i := range len(name) {
		if c := name[i]; !alnum(c) && c != '-' && c != '_' && c != '.' {
			return "may contain only letters, digits, '-', '_' and '.'"
		}
	}
	return ""
}
