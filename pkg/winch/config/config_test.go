package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// writeFile writes content to a new file in a fresh temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// routeView is a mapper.Route with the regexp as text, for comparisons.
type routeView struct {
	Direct, Regexp, URL, ProxyAuth, BackendAuth string
	Protocol                                    mapper.Protocol
	MITM                                        bool
}

func view(routes []mapper.Route) []routeView {
	out := make([]routeView, len(routes))
	for i, r := range routes {
		out[i] = routeView{Direct: r.Direct, URL: r.URL, ProxyAuth: r.ProxyAuth, BackendAuth: r.BackendAuth, Protocol: r.Protocol, MITM: r.MITM}
		if r.Regexp != nil {
			out[i].Regexp = r.Regexp.String()
		}
	}
	return out
}

func equalViews(a, b []routeView) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestOriginalExamples loads the original's misc/winch_mapper.json and misc/winch_auth.json unchanged and checks
// that they map the e2e destinations as the original did.
func TestOriginalExamples(t *testing.T) {
	t.Parallel()
	cfg, err := Load(Source{MapperPath: "testdata/winch_mapper.json", AuthPath: "testdata/winch_auth.json"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	const groupURL = "https://${cluster}:18171"
	want := []routeView{
		{Regexp: `^no_auth[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com`, URL: groupURL},
		{Regexp: `^bearer_token_auth[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com`, URL: groupURL, ProxyAuth: "proxy-bearer-token-auth"},
		{Regexp: `^wrong_bearer_token_auth[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com`, URL: groupURL, ProxyAuth: "wrong-proxy-bearer-token-auth"},
		{Regexp: `^test_endpoint[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com`, URL: groupURL, BackendAuth: "test-endpoint-http", Protocol: mapper.ProtocolHTTP},
		{Regexp: `^([a-z0-9-_].*)[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com`, URL: "https://${cluster}:18172", BackendAuth: "test-endpoint-grpc", Protocol: mapper.ProtocolGRPC},
	}
	if got := view(cfg.Mapper.Routes); !equalViews(got, want) {
		t.Errorf("routes =\n%+v\nwant\n%+v", got, want)
	}
	if cfg.Mapper.Name != "testdata/winch_mapper.json" || cfg.Auth.Name != "testdata/winch_auth.json" {
		t.Errorf("names = %q, %q", cfg.Mapper.Name, cfg.Auth.Name)
	}
	wantTokens := map[string]string{
		"test-endpoint-grpc": "secret-token", "test-endpoint-http": "secret-token2",
		"proxy-bearer-token-auth": "secret-bearer-token", "wrong-proxy-bearer-token-auth": "wrong-secret-bearer-token",
	}
	if len(cfg.Auth.Sources) != len(wantTokens) {
		t.Fatalf("%d auth sources, want %d", len(cfg.Auth.Sources), len(wantTokens))
	}
	for name, token := range wantTokens {
		s, ok := cfg.Auth.Source(name)
		if !ok || s.Kind != KindToken || s.Token != token {
			t.Errorf("source %q = %+v, %v; want token %q", name, s, ok, token)
		}
	}

	m := mapper.New(cfg.Mapper.Routes)
	tests := []struct {
		hostport string
		proto    mapper.Protocol
		wantURL  string
		wantAuth string
	}{
		{"test_endpoint.localhost.internal.example.com:18270", mapper.ProtocolHTTP, "https://localhost:18171", "test-endpoint-http"},
		{"test_endpoint.localhost.internal.example.com:18271", mapper.ProtocolGRPC, "https://localhost:18172", "test-endpoint-grpc"},
		{"no_auth.localhost.internal.example.com:18271", mapper.ProtocolGRPC, "https://localhost:18171", ""},
	}
	for _, tt := range tests {
		d, err := m.Map(tt.hostport, tt.proto)
		if err != nil || d.KedgeURL.String() != tt.wantURL || d.BackendAuth != tt.wantAuth {
			t.Errorf("Map(%q, %v) = %v %q, %v; want %s %q", tt.hostport, tt.proto, d.KedgeURL, d.BackendAuth, err, tt.wantURL, tt.wantAuth)
		}
	}
}

// TestIntegrationExamples loads the documents of the original's winch integration tests (direct and regexp routes,
// a dummy source without value), in JSON and in YAML, which must convert to the same routes.
func TestIntegrationExamples(t *testing.T) {
	t.Parallel()
	want := []routeView{
		{Direct: "resource1.ext.example.com", URL: "https://kedge0.example.com:8443", BackendAuth: "test-token"},
		{Direct: "resource2.ext.example.com", URL: "https://kedge1.example.com:8443", ProxyAuth: "proxy-test-token"},
		{Regexp: `([a-z0-9-].*).(?P<cluster>[a-z0-9-].*).internal.example.com`, URL: "https://${cluster}.kedge.example.com:8443", BackendAuth: "user-password"},
		{Direct: "error.ext.example.com", URL: "https://kedge1.example.com:8443", BackendAuth: "error-dummy"},
	}
	for _, mapperPath := range []string{"testdata/integration_mapper.json", "testdata/integration_mapper.yaml"} {
		t.Run(filepath.Base(mapperPath), func(t *testing.T) {
			t.Parallel()
			cfg, err := Load(Source{MapperPath: mapperPath, AuthPath: "testdata/integration_auth.json"})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got := view(cfg.Mapper.Routes); !equalViews(got, want) {
				t.Errorf("routes =\n%+v\nwant\n%+v", got, want)
			}
			if s, ok := cfg.Auth.Source("error-dummy"); !ok || s.Kind != KindDummy || s.Token != "" {
				t.Errorf("error-dummy = %+v, %v", s, ok)
			}
			if s, ok := cfg.Auth.Source("user-password"); !ok || s.Kind != KindDummy || s.Token != "user:password" {
				t.Errorf("user-password = %+v, %v", s, ok)
			}
		})
	}
}

// TestAllKinds checks every source kind, both field spellings and path expansion. It sets environment variables, so
// it does not run in parallel.
func TestAllKinds(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("WINCH_TEST_HOME", "/srv/test")
	a, err := LoadAuth("testdata/all_kinds_auth.yaml", "")
	if err != nil {
		t.Fatalf("LoadAuth: %v", err)
	}
	want := []AuthSource{
		{Name: "static", Kind: KindToken, Token: "s3cret"},
		{Name: "test", Kind: KindDummy, Token: "v"},
		{Name: "prod-kube", Kind: KindKube, KubeUser: "prod-admin", KubeconfigPath: "/srv/test/kubeconfig"},
		{Name: "prod-oidc", Kind: KindOIDC, Provider: "https://issuer.example.com", ClientID: "winch", ClientSecret: "client-secret",
			Scopes: []string{"openid", "email", "groups"}, CacheDir: filepath.Join(home, ".config/winch"), LoginCallbackPath: "/login/callback"},
		{Name: "ci", Kind: KindServiceAccountOIDC, Provider: "https://issuer.example.com", ClientID: "winch-ci", ClientSecret: "ci-secret",
			Scopes: []string{"openid"}, ServiceAccountJSONPath: "/etc/winch/sa.json"},
	}
	if len(a.Sources) != len(want) {
		t.Fatalf("%d sources, want %d", len(a.Sources), len(want))
	}
	for i := range want {
		got, w := a.Sources[i], want[i]
		if strings.Join(got.Scopes, ",") != strings.Join(w.Scopes, ",") {
			t.Errorf("source %d scopes = %q, want %q", i, got.Scopes, w.Scopes)
		}
		got.Scopes, w.Scopes = nil, nil
		if !reflect.DeepEqual(got, w) {
			t.Errorf("source %d = %+v\nwant %+v (secrets hidden)", i, fields(got), fields(w))
		}
	}
}

func TestAuthSourceStringHidesSecrets(t *testing.T) {
	t.Parallel()
	sources := []AuthSource{
		{Name: "t", Kind: KindToken, Token: "tok-SECRET"},
		{Name: "d", Kind: KindDummy, Token: "dummy-SECRET"},
		{Name: "o", Kind: KindOIDC, Provider: "https://issuer", ClientID: "c", ClientSecret: "client-SECRET"},
		{Name: "k", Kind: KindKube, KubeUser: "u", KubeconfigPath: "/k"},
	}
	for _, s := range sources {
		for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
			got := fmt.Sprintf(format, s)
			if strings.Contains(got, "SECRET") || !strings.Contains(got, s.Name) {
				t.Errorf("Sprintf(%q) = %q: must name the source and hide secrets", format, got)
			}
		}
	}
}

func TestInlineAndFilePrecedence(t *testing.T) {
	t.Parallel()
	inline := `{"routes": [{"direct": {"key": "inline.example.com", "url": "https://k"}}]}`
	m, err := LoadMapper("", inline)
	if err != nil || m.Name != MapperInlineName || m.Routes[0].Direct != "inline.example.com" {
		t.Fatalf("inline: %+v, %v", m, err)
	}
	path := writeFile(t, "mapper.yaml", "routes:\n- direct: {key: file.example.com, url: 'https://k'}\n")
	m, err = LoadMapper(path, inline)
	if err != nil || m.Name != path || m.Routes[0].Direct != "file.example.com" {
		t.Fatalf("the file must win: %+v, %v", m, err)
	}
	if _, err := LoadMapper("", `{"routes": []}`); err == nil || !strings.HasPrefix(err.Error(), MapperInlineName+": routes: ") {
		t.Errorf("an inline document's errors must name the flag: %v", err)
	}
	for _, inline := range []string{"{}", "  \n", "# nothing\n"} {
		a, err := LoadAuth("", inline)
		if err != nil || len(a.Sources) != 0 || a.Name != AuthInlineName {
			t.Errorf("LoadAuth(%q) = %+v, %v; want no sources", inline, a, err)
		}
	}
}

// TestNoDocumentGiven: messages about a document that was not given name the flag that gives it, not the inline
// flag the user never passed.
func TestNoDocumentGiven(t *testing.T) {
	t.Parallel()
	_, err := LoadMapper("", "")
	if err == nil || !strings.HasPrefix(err.Error(), MapperPathName+": not set: ") || !strings.Contains(err.Error(), "at least one route") {
		t.Errorf("LoadMapper with no document = %v; want it to name %s", err, MapperPathName)
	}
	a, err := LoadAuth("", "")
	if err != nil || len(a.Sources) != 0 || a.Name != "" {
		t.Fatalf("LoadAuth with no document = %+v, %v; want no sources and no name", a, err)
	}
	mapperPath := writeFile(t, "mapper.json", `{"routes": [{"direct": {"key": "a.example.com", "url": "https://k"}, "proxy_auth": "corp"}]}`)
	_, err = Load(Source{MapperPath: mapperPath})
	want := mapperPath + `: routes[0].proxy_auth: "corp": no auth source with that name (no auth document given: set --server_auth_config_path)`
	if err == nil || err.Error() != want {
		t.Errorf("Load without an auth document = %v; want %s", err, want)
	}
}

func TestCheckAuthReferences(t *testing.T) {
	t.Parallel()
	mapperPath := writeFile(t, "mapper.json", `{"routes": [
		{"direct": {"key": "a.example.com", "url": "https://k"}, "proxy_auth": "known"},
		{"direct": {"key": "b.example.com", "url": "https://k"}, "proxy_auth": "foo", "backend_auth": "bar"},
		{"direct": {"key": "c.example.com", "url": "https://k"}, "backend_auth": "known"}]}`)
	authPath := writeFile(t, "auth.json", `{"auth_sources": [{"name": "known", "token": {"token": "t"}}]}`)
	_, err := Load(Source{MapperPath: mapperPath, AuthPath: authPath})
	want := []string{
		mapperPath + `: routes[1].proxy_auth: "foo": no auth source with that name in ` + authPath,
		mapperPath + `: routes[1].backend_auth: "bar": no auth source with that name in ` + authPath,
	}
	checkErrors(t, err, want)
}

func TestLoadReportsBothDocuments(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope.json")
	authPath := writeFile(t, "auth.json", `{"auth_sources": [{"name": "x"}]}`)
	_, err := Load(Source{MapperPath: missing, AuthPath: authPath})
	checkErrors(t, err, []string{
		missing + ": reading the file: no such file or directory",
		authPath + ": auth_sources[0]: one of dummy, token, kube, oidc or service_account_oidc is required",
	})
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Errorf("errors.As(*FieldError) failed for %v", err)
	}
}

// checkErrors compares the FieldErrors in err with want, in order.
func checkErrors(t *testing.T, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	fes := FieldErrors(err)
	var got []string
	for _, fe := range fes {
		got = append(got, fe.Error())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err.Error() != strings.Join(got, "\n") {
		t.Errorf("err.Error() = %q, want the joined field errors", err)
	}
}

// fields lists a source's fields for failure messages, with secrets replaced by their length.
func fields(s AuthSource) string {
	return fmt.Sprintf("{%s %s token:%d user:%q kubeconfig:%q provider:%q client:%q secret:%d cache:%q callback:%q sa:%q}",
		s.Name, s.Kind, len(s.Token), s.KubeUser, s.KubeconfigPath, s.Provider, s.ClientID, len(s.ClientSecret),
		s.CacheDir, s.LoginCallbackPath, s.ServiceAccountJSONPath)
}
