package mapper

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// FuzzMapTemplate maps arbitrary destinations through an arbitrary regexp route and a direct route. Map must never
// panic; a successful result must be an http(s) URL with a host; no "${name}" of a group that took part in the
// match may survive substitution; and every failure must be one of Map's documented errors.
func FuzzMapTemplate(f *testing.F) {
	seeds := []struct{ exp, tmpl, hostport string }{
		{`^([a-z0-9-_].*)[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com`, "https://${cluster}:18172", "a.eu1.internal.example.com:443"},
		{`(?P<a>[a-z]+)\.(?P<b>[a-z]+)`, "https://${a}.${b}.${a}${b}/${c}", "x.y"},
		{`(?P<a>x)?y`, "http://k${a}", "y"},
		{`(?P<p>.*)`, "https://${p}", "[::1]:80"},
		{`(?P<p>.*)`, "https://${p}", "evil.example/x"},
		{`(?P<p>.*)`, "https://${p", "127.1"},
		{`.`, "${}", ""},
		{`(?P<x>\$\{x\})`, "https://k/${x}", "k"},
	}
	for _, s := range seeds {
		f.Add(s.exp, s.tmpl, s.hostport)
	}
	f.Fuzz(func(t *testing.T, exp, tmpl, hostport string) {
		re, err := regexp.Compile(exp)
		if err != nil {
			return
		}
		m := New([]Route{
			{Regexp: re, URL: tmpl, Protocol: ProtocolGRPC},
			{Direct: hostport, URL: tmpl, Protocol: ProtocolHTTP},
		})
		d, err := m.Map(hostport, ProtocolGRPC)
		if err != nil {
			checkMapError(t, err)
		} else {
			checkURL(t, d.KedgeURL)
			if d.Route != 0 {
				t.Fatalf("Route = %d, want 0", d.Route)
			}
			checkSubstituted(t, re, tmpl, hostport, d.KedgeURL)
		}
		if d, err := m.Map(hostport, ProtocolHTTP); err != nil {
			checkMapError(t, err)
		} else {
			checkURL(t, d.KedgeURL)
		}
	})
}

func checkMapError(t *testing.T, err error) {
	t.Helper()
	if errors.Is(err, ErrNotKedgeDestination) || errors.Is(err, ErrIPLiteral) || errors.Is(err, ErrInvalidDestination) {
		return
	}
	if !strings.HasPrefix(err.Error(), "mapper: route ") {
		t.Fatalf("undocumented error: %v", err)
	}
}

func checkURL(t *testing.T, u *url.URL) {
	t.Helper()
	if u == nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		t.Fatalf("bad kedge URL %v", u)
	}
}

// checkSubstituted checks the template's substitution. parseTemplate must leave no "${name}" of any group of re in
// literal text; and when the template has no other "${", the URL text Map built must contain no "${name}" of a group
// that took part in the match (destinations cannot contain '$', so substituted text cannot form a new one).
func checkSubstituted(t *testing.T, re *regexp.Regexp, tmpl, hostport string, u *url.URL) {
	t.Helper()
	segs := parseTemplate(tmpl, re)
	for _, seg := range segs {
		for _, name := range re.SubexpNames() {
			if seg.group < 0 && name != "" && strings.Contains(seg.text, "${"+name+"}") {
				t.Fatalf("placeholder ${%s} left in literal text %q of template %q", name, seg.text, tmpl)
			}
		}
	}
	s := strings.ToLower(hostport)
	match := re.FindStringSubmatchIndex(s)
	if match == nil {
		t.Fatalf("Map matched %q but the regexp does not", hostport)
	}
	raw := expand(segs, s, match)
	if got := mustParse(t, raw); got.String() != u.String() {
		t.Fatalf("KedgeURL = %s, want %s", u, got)
	}
	rest := tmpl
	for _, name := range re.SubexpNames() {
		if name != "" {
			rest = strings.ReplaceAll(rest, "${"+name+"}", "")
		}
	}
	if strings.Contains(rest, "${") {
		return
	}
	for i, name := range re.SubexpNames() {
		if name != "" && match[2*i] >= 0 && strings.Contains(raw, "${"+name+"}") {
			t.Fatalf("placeholder ${%s} survived in %q (template %q, destination %q)", name, raw, tmpl, hostport)
		}
	}
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("Map succeeded but its URL text %q does not parse: %v", raw, err)
	}
	return u
}
