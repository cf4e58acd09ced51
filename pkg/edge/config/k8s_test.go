package config

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func parseK8sFlags(t *testing.T, args ...string) (*K8sConfig, error) {
	t.Helper()
	c := &K8sConfig{}
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.RegisterFlags(fs)
	fs.SetNormalizeFunc(NormalizeFlagName)
	return c, fs.Parse(args)
}

func TestK8sFlagDefaults(t *testing.T) {
	t.Parallel()
	c, err := parseK8sFlags(t)
	if err != nil {
		t.Fatal(err)
	}
	if c.CAFile != DefaultServiceAccountCAFile || c.TokenFile != DefaultServiceAccountTokenFile {
		t.Errorf("service-account defaults = %q, %q", c.CAFile, c.TokenFile)
	}
	if c.LabelPrefix != "kedge.com/" || c.DynamicRoutings || c.CacheSyncTimeout != 30*time.Second {
		t.Errorf("defaults = %+v", c)
	}
	if c.Kubeconfig() {
		t.Error("Kubeconfig() is true without kubeconfig flags")
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestK8sFlagAliases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		args  []string
		check func(*K8sConfig) bool
	}{
		{"original token flag", []string{"--k8client_token_file=/t"}, func(c *K8sConfig) bool { return c.TokenFile == "/t" }},
		{"kebab token flag", []string{"--k8sclient-token-file", "/t"}, func(c *K8sConfig) bool { return c.TokenFile == "/t" }},
		{"all flags", []string{
			"--k8sclient_kubeapi_url=https://api.example.com:6443", "--k8sclient_tls_insecure", "--k8sclient_ca_file=/ca",
			"--k8sclient_kubeconfig_user=u", "--k8sclient_kubeconfig_path=/kc", "--kedge_dynamic_routings_enabled",
			"--discovery_label_annotation_prefix=edge.example.org/", "--discovery_external_domain_suffix=c.example.com",
			"--discovery_namespace=team-a", "--k8s_cache_sync_timeout=5s",
		}, func(c *K8sConfig) bool {
			return c.KubeAPIURL == "https://api.example.com:6443" && c.TLSInsecure && c.CAFile == "/ca" &&
				c.KubeconfigUser == "u" && c.KubeconfigPath == "/kc" && c.Kubeconfig() && c.DynamicRoutings &&
				c.LabelPrefix == "edge.example.org/" && c.ExternalDomainSuffix == "c.example.com" &&
				c.Namespace == "team-a" && c.CacheSyncTimeout == 5*time.Second
		}},
		{"misspelled timeouts", []string{"--discovery_resync_timouet=1m", "--k8sresolver_first_update_timouet=1s", "--k8sresolver_resync_timouet=2m", "--k8sclient_auth_timeout=3s"},
			func(c *K8sConfig) bool {
				return c.deprecated.discoveryResync == time.Minute && c.deprecated.resolverFirstUpdate == time.Second &&
					c.deprecated.resolverResync == 2*time.Minute && c.deprecated.authTimeout == 3*time.Second
			}},
		{"correct timeout spelling", []string{"--discovery_resync_timeout=1m"}, func(c *K8sConfig) bool { return c.deprecated.discoveryResync == time.Minute }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := parseK8sFlags(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("flags %q gave %+v", tt.args, c)
			}
		})
	}
}

func TestK8sValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want []string // substrings of the error, one per problem; none = valid
	}{
		{"discovery without suffix", []string{"--kedge_dynamic_routings_enabled"}, []string{"--discovery_external_domain_suffix is required"}},
		{"discovery with suffix", []string{"--kedge_dynamic_routings_enabled", "--discovery_external_domain_suffix=cluster-a.example.com"}, nil},
		{"suffix with leading dot", []string{"--discovery_external_domain_suffix=.example.com"}, []string{"must not start or end"}},
		{"suffix with port", []string{"--discovery_external_domain_suffix=example.com:443"}, []string{"without a port"}},
		{"url without scheme", []string{"--k8sclient_kubeapi_url=api.example.com"}, []string{"http:// or https://"}},
		{"plain http url", []string{"--k8sclient_kubeapi_url=http://127.0.0.1:8001"}, nil},
		{"prefix without slash", []string{"--discovery_label_annotation_prefix=kedge-"}, nil},
		{"empty prefix", []string{"--discovery_label_annotation_prefix="}, nil},
		{"bad prefix", []string{"--discovery_label_annotation_prefix=Kedge.com/"}, []string{"--discovery_label_annotation_prefix"}},
		{"two slashes", []string{"--discovery_label_annotation_prefix=a.com/b/"}, []string{"--discovery_label_annotation_prefix"}},
		{"bad namespace", []string{"--discovery_namespace=Team_A"}, []string{"--discovery_namespace"}},
		{"zero sync timeout", []string{"--k8s_cache_sync_timeout=0s"}, []string{"--k8s_cache_sync_timeout"}},
		{"every problem at once", []string{"--kedge_dynamic_routings_enabled", "--discovery_namespace=-x", "--k8s_cache_sync_timeout=-1s"},
			[]string{"--discovery_external_domain_suffix", "--discovery_namespace", "--k8s_cache_sync_timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := parseK8sFlags(t, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted the flags")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.want) {
				t.Errorf("%d problems reported, want %d:\n%v", len(lines), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestParseK8sTarget covers the one parser of k8s targets, which both the validator and the resolver use: a target
// that validates is one the resolver can follow.
func TestParseK8sTarget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    K8sTarget
		wantErr string
	}{
		{"echo", K8sTarget{Service: "echo", Namespace: "default"}, ""},
		{"echo.team-a", K8sTarget{Service: "echo", Namespace: "team-a"}, ""},
		{"echo.team-a.svc.cluster.local", K8sTarget{Service: "echo", Namespace: "team-a"}, ""},
		{"echo.team-a:http", K8sTarget{Service: "echo", Namespace: "team-a", PortName: "http"}, ""},
		{"echo:8080", K8sTarget{Service: "echo", Namespace: "default", PortNumber: 8080}, ""},
		{"echo:65535", K8sTarget{Service: "echo", Namespace: "default", PortNumber: 65535}, ""},
		{"echo.team-a:", K8sTarget{Service: "echo", Namespace: "team-a"}, ""},
		{"echo.ns:grpc-web", K8sTarget{Service: "echo", Namespace: "ns", PortName: "grpc-web"}, ""},
		{"", K8sTarget{}, "is required"},
		{"k8s://echo.ns:80", K8sTarget{}, "scheme"},
		{"echo.ns:80:81", K8sTarget{}, "at most one ':'"},
		{"Echo.ns", K8sTarget{}, "Service name"},
		{"1echo.ns", K8sTarget{}, "Service name"},
		{"echo.Team_A", K8sTarget{}, "namespace"},
		{"echo..x", K8sTarget{}, "namespace"},
		{"echo:0", K8sTarget{}, "outside 1-65535"},
		{"echo:70000", K8sTarget{}, "outside 1-65535"},
		// Once accepted by the validator as a port name, then refused by the resolver.
		{"echo:99999999999", K8sTarget{}, "outside 1-65535"},
		{"echo:Http", K8sTarget{}, "invalid port name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseK8sTarget(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseK8sTarget(%q) = %+v, %v; want an error with %q", tt.in, got, err, tt.wantErr)
				}
				if reason := checkK8sTarget(tt.in); !strings.Contains(reason, tt.wantErr) {
					t.Errorf("checkK8sTarget(%q) = %q, want the parser's reason", tt.in, reason)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseK8sTarget(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if reason := checkK8sTarget(tt.in); reason != "" {
				t.Errorf("checkK8sTarget(%q) = %q, but the parser accepts it", tt.in, reason)
			}
		})
	}
}
