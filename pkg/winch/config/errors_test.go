package config

import (
	"strings"
	"testing"
)

// problem is an expected FieldError: the exact field and a part of the reason.
type problem struct{ field, reason string }

// checkProblems compares the FieldErrors of err with want, in order, and checks that each names file.
func checkProblems(t *testing.T, err error, file string, want []problem) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", want)
	}
	fes := FieldErrors(err)
	ok := len(fes) == len(want)
	for i := 0; ok && i < len(fes); i++ {
		ok = fes[i].File == file && fes[i].Field == want[i].field && strings.Contains(fes[i].Reason, want[i].reason)
	}
	if !ok {
		t.Errorf("errors:\n%v\nwant (field, part of reason) %q", err, want)
	}
}

func TestMapperErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		want []problem
	}{
		{name: "empty file", doc: "", want: []problem{{"routes", "at least one route is required"}}},
		{name: "no routes", doc: `{"routes": []}`, want: []problem{{"routes", "at least one route is required"}}},
		{name: "unknown fields, all reported", doc: `{"route": [], "routes": [{"direct": {"key": "a", "url": "https://k", "port": 1}, "proxyauth": "x"}]}`,
			want: []problem{
				{"route", `unknown field "route"; the fields here are routes`},
				{"routes[0].direct.port", `unknown field "port"; the fields here are key, url`},
				{"routes[0].proxyauth", `unknown field "proxyauth"`},
			}},
		{name: "direct and regexp", doc: `{"routes": [{"direct": {"key": "a", "url": "https://k"}, "regexp": {"exp": "a", "url": "https://k"}}]}`,
			want: []problem{{"routes[0].regexp", `only one of direct, regexp may be set; "direct" is set too`}}},
		{name: "neither direct nor regexp", doc: `{"routes": [{"proxy_auth": "a"}]}`,
			want: []problem{{"routes[0]", "one of direct or regexp is required"}}},
		{name: "field set twice in two spellings", doc: `{"routes": [{"proxy_auth": "a", "proxyAuth": "b", "direct": {"key": "a", "url": "https://k"}}]}`,
			want: []problem{{"routes[0].proxyAuth", `proxy_auth is set twice (also as "proxy_auth")`}}},
		{name: "bad enum and types", doc: `{"routes": [{"protocol": "HTTPS", "mitm": "yes", "direct": {"key": 5, "url": null}}, {"protocol": 7, "regexp": []}]}`,
			want: []problem{
				{"routes[0].protocol", `unknown value "HTTPS"; one of ANY, HTTP, GRPC`},
				{"routes[0].mitm", "must be true or false, not a string"},
				{"routes[0].direct.key", "must be a string, not a number"},
				{"routes[1].protocol", "unknown value 7; one of ANY, HTTP, GRPC"},
				{"routes[1].regexp", "must be an object, not a list"},
			}},
		{name: "routes not a list", doc: `{"routes": {"direct": {}}}`, want: []problem{{"routes", "must be a list, not an object"}}},
		{name: "null route", doc: `{"routes": [null]}`, want: []problem{{"routes[0]", "must be an object, not null"}}},
		{name: "direct required fields", doc: `{"routes": [{"direct": {}}]}`,
			want: []problem{{"routes[0].direct.key", "required"}, {"routes[0].direct.url", "required"}}},
		{name: "direct keys", doc: `{"routes": [
				{"direct": {"key": "10.0.0.1:80", "url": "https://k"}},
				{"direct": {"key": "[::1]", "url": "https://k"}},
				{"direct": {"key": "a/b.example.com", "url": "https://k"}},
				{"direct": {"key": "a.example.com:http", "url": "https://k"}}]}`,
			want: []problem{
				{"routes[0].direct.key", `"10.0.0.1:80" is an IP address, which winch never maps`},
				{"routes[1].direct.key", "is an IP address"},
				{"routes[2].direct.key", `"a/b.example.com" is not "host" or "host:port"`},
				{"routes[3].direct.key", `is not "host" or "host:port"`},
			}},
		{name: "direct URLs", doc: `{"routes": [
				{"direct": {"key": "a", "url": "ftp://k"}},
				{"direct": {"key": "a", "url": "kedge.example.com"}},
				{"direct": {"key": "a", "url": "https://k/path"}},
				{"direct": {"key": "a", "url": "https://${cluster}:443"}},
				{"direct": {"key": "a", "url": "https://user@k"}},
				{"direct": {"key": "a", "url": "https:///x"}},
				{"direct": {"key": "a", "url": "https://k:80/"}}]}`,
			want: []problem{
				{"routes[0].direct.url", "scheme must be http or https"},
				{"routes[1].direct.url", "scheme must be http or https"},
				{"routes[2].direct.url", "must be scheme://host[:port] only"},
				{"routes[3].direct.url", "direct routes substitute nothing"},
				{"routes[4].direct.url", "must be scheme://host[:port] only"},
				{"routes[5].direct.url", "no host"},
			}},
		{name: "regexp problems", doc: `{"routes": [
				{"regexp": {"exp": "(", "url": "https://k"}},
				{"regexp": {"exp": "(?P<cl>a)", "url": "https://${nope}.k"}},
				{"regexp": {"exp": "(a)", "url": "https://${1}.k"}},
				{"regexp": {"exp": "(?P<cluster>[a-z0-9-].*)[.]internal", "url": "${cluster}.kedge.ext.example.com"}},
				{"regexp": {"exp": "(?P<cl>a)", "url": "https://${cl"}},
				{"regexp": {"exp": "(?P<cl>a)", "url": "https://${cl}.k/path"}},
				{"regexp": {}},
				{"regexp": {"exp": "a"}}]}`,
			want: []problem{
				{"routes[0].regexp.exp", "invalid RE2 expression: missing closing ): `(`"},
				{"routes[1].regexp.url", "${nope} is not a named group of exp (named groups: cl)"},
				{"routes[2].regexp.url", "${1} is not a named group of exp (named groups: none; write (?P<name>...))"},
				{"routes[3].regexp.url", "scheme must be http or https"},
				{"routes[4].regexp.url", `unclosed "${"`},
				{"routes[5].regexp.url", "must be scheme://host[:port] only"},
				{"routes[6].regexp.exp", "required"},
				{"routes[6].regexp.url", "required"},
				{"routes[7].regexp.url", "required"},
			}},
		{name: "tokens to a plain-HTTP kedge", doc: `{"routes": [
				{"direct": {"key": "a", "url": "http://k"}, "proxy_auth": "p"},
				{"regexp": {"exp": "(?P<c>a)", "url": "HTTP://${c}.k"}, "backend_auth": "b", "protocol": "HTTP"},
				{"direct": {"key": "a", "url": "http://k"}, "proxy_auth": "p", "protocol": "GRPC"},
				{"direct": {"key": "a", "url": "http://k"}}]}`,
			want: []problem{
				{"routes[0].direct.url", `would send the token of "p" without TLS`},
				{"routes[1].regexp.url", `would send the token of "b" without TLS`},
			}},
		{name: "mitm on a gRPC route", doc: `{"routes": [{"mitm": true, "protocol": "GRPC", "direct": {"key": "a", "url": "https://k"}}]}`,
			want: []problem{{"routes[0].mitm", "only applies to HTTPS (CONNECT) traffic"}}},
		{name: "auth names", doc: `{"routes": [{"proxy_auth": "a b", "backend_auth": "x/y", "direct": {"key": "a", "url": "https://k"}}]}`,
			want: []problem{{"routes[0].proxy_auth", `"a b" is not a valid auth source name`}, {"routes[0].backend_auth", `"x/y" is not a valid`}}},
		{name: "JSON syntax error with position", doc: "\n\n{\"routes\": [\n  {\"direct\": }\n]}",
			want: []problem{{"", "invalid JSON at line 4, column"}}},
		{name: "truncated JSON", doc: `{"routes": [`, want: []problem{{"", "invalid JSON at line 1, column 13: unexpected end of the document"}}},
		{name: "invalid UTF-8", doc: "{\"routes\": [\n{\"direct\": {\"key\": \"a\xff\", \"url\": \"https://k\"}}]}",
			want: []problem{{"", "not valid UTF-8 at line 2, column 22"}}},
		{name: "trailing data", doc: `{"routes": []} {}`, want: []problem{{"", "unexpected data after the document"}}},
		{name: "YAML syntax error", doc: "routes:\n  - direct: {key: a\n", want: []problem{{"", "invalid YAML: yaml: line"}}},
		{name: "YAML duplicate key", doc: "routes: []\nroutes: []\n", want: []problem{{"", `invalid YAML`}}},
		{name: "YAML list document", doc: "- a\n- b\n", want: []problem{{"", "the document must be a map of fields"}}},
		{name: "JSON list document", doc: "[]", want: []problem{{"", "the document must be a map of fields"}}},
		{name: "too deep", doc: strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40), want: []problem{{"", "nested deeper than 32 levels"}}},
		{name: "all route problems together", doc: `{"routes": [{"direct": {"key": "", "url": "https://k"}}, {"regexp": {"exp": "(", "url": "x"}}, {}]}`,
			want: []problem{{"routes[0].direct.key", "required"}, {"routes[1].regexp.exp", "invalid RE2"}, {"routes[2]", "one of direct or regexp"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "mapper.conf", tt.doc)
			m, err := LoadMapper(path, "")
			if m != nil {
				t.Errorf("LoadMapper returned a mapper with an error")
			}
			checkProblems(t, err, path, tt.want)
		})
	}
}

func TestAuthErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		want []problem
	}{
		{name: "unknown field", doc: `{"auth_sources": [{"name": "a", "tokn": {"token": "t"}}]}`,
			want: []problem{{"auth_sources[0].tokn", `unknown field "tokn"; the fields here are name, dummy, kube, oidc, token, service_account_oidc`}}},
		{name: "name and kind missing", doc: `{"auth_sources": [{}]}`,
			want: []problem{{"auth_sources[0].name", "required"}, {"auth_sources[0]", "one of dummy, token, kube, oidc or service_account_oidc is required"}}},
		{name: "two kinds", doc: `{"auth_sources": [{"name": "a", "token": {"token": "t"}, "dummy": {}}]}`,
			want: []problem{{"auth_sources[0].dummy", "only one of dummy, kube, oidc, token, service_account_oidc may be set"}}},
		{name: "bad and duplicate names", doc: `{"auth_sources": [
				{"name": "a", "dummy": {}}, {"name": "a", "token": {"token": "t"}}, {"name": "x/y", "dummy": {}}, {"name": "tab\there", "dummy": {}},
				{"name": "a?b", "dummy": {}}, {"name": "a#b", "dummy": {}}, {"name": "a%2Fb", "dummy": {}}]}`,
			want: []problem{
				{"auth_sources[1].name", `"a" is already the name of auth_sources[0]`},
				{"auth_sources[2].name", "may not contain spaces, control characters, '/', '?', '#' or '%'"},
				{"auth_sources[3].name", "may not contain"},
				// "winch logout a?b" would log out "a"; the default login callback /winch/login/a?b would never match.
				{"auth_sources[4].name", "may not contain"},
				{"auth_sources[5].name", "may not contain"},
				{"auth_sources[6].name", "may not contain"},
			}},
		{name: "required fields", doc: `{"auth_sources": [
				{"name": "t", "token": {}},
				{"name": "k", "kube": {"path": "/k"}},
				{"name": "o", "oidc": {}},
				{"name": "s", "service_account_oidc": {}}]}`,
			want: []problem{
				{"auth_sources[0].token.token", "required"},
				{"auth_sources[1].kube.user", "required"},
				{"auth_sources[2].oidc.provider", "required"},
				{"auth_sources[2].oidc.client_id", "required"},
				{"auth_sources[3].service_account_oidc.provider", "required"},
				{"auth_sources[3].service_account_oidc.client_id", "required"},
				{"auth_sources[3].service_account_oidc.service_account_json_path", "required"},
			}},
		{name: "oidc values", doc: `{"auth_sources": [
				{"name": "o", "oidc": {"provider": "issuer.example.com", "client_id": "c", "scopes": ["openid email", ""], "login_callback_path": "callback"}},
				{"name": "p", "oidc": {"provider": "https://i", "client_id": "c", "login_callback_path": "/cb"}},
				{"name": "q", "oidc": {"provider": "https://i", "client_id": "c", "login_callback_path": "/cb"}}]}`,
			want: []problem{
				{"auth_sources[0].oidc.provider", `"issuer.example.com" is not an http(s) issuer URL`},
				{"auth_sources[0].oidc.scopes[0]", "is not a scope (one scope per entry)"},
				{"auth_sources[0].oidc.scopes[1]", "is not a scope"},
				{"auth_sources[0].oidc.login_callback_path", `"callback" must be a path like "/login/callback"`},
				{"auth_sources[2].oidc.login_callback_path", `"/cb" is already the callback of auth_sources[1]`},
			}},
		{name: "scopes not a list", doc: `{"auth_sources": [{"name": "o", "oidc": {"provider": "https://i", "client_id": "c", "scopes": "openid"}}]}`,
			want: []problem{{"auth_sources[0].oidc.scopes", "must be a list, not a string"}}},
		{name: "not a map", doc: `auth_sources`, want: []problem{{"", "the document must be a map of fields"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "auth.conf", tt.doc)
			a, err := LoadAuth(path, "")
			if a != nil {
				t.Errorf("LoadAuth returned sources with an error")
			}
			checkProblems(t, err, path, tt.want)
		})
	}
}
