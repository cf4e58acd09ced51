package config

import (
	"os"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/winch/mapper"
)

// FuzzParseMapper feeds arbitrary documents to the mapper loader. It must never panic; a document it accepts must
// have routes that the mapper can use, and every error must be a list of FieldErrors.
func FuzzParseMapper(f *testing.F) {
	for _, name := range []string{"testdata/winch_mapper.json", "testdata/integration_mapper.json", "testdata/integration_mapper.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"routes": [{"direct": {"key": "a:1", "url": "http://k"}, "protocol": 2, "mitm": false}]}`))
	f.Add([]byte("routes:\n- regexp: {exp: '(?P<a>.)', url: 'https://${a}'}\n"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		m, err := ParseMapper(doc, "fuzz")
		if err != nil {
			if len(FieldErrors(err)) == 0 {
				t.Fatalf("error without FieldErrors: %v", err)
			}
			return
		}
		if len(m.Routes) == 0 {
			t.Fatal("accepted a mapper without routes")
		}
		mp := mapper.New(m.Routes)
		for i, r := range m.Routes {
			if (r.Direct == "") == (r.Regexp == nil) {
				t.Fatalf("route %d: exactly one of Direct and Regexp must be set: %+v", i, r)
			}
			if r.Direct != "" {
				if d, err := mp.Map(r.Direct, mapper.ProtocolAny); err != nil || d.Route > i {
					t.Fatalf("route %d: its own key %q does not map: %+v, %v", i, r.Direct, d, err)
				}
			}
		}
	})
}

// FuzzParseAuth feeds arbitrary documents to the auth loader. It must never panic, and accepted sources must have
// unique names and a kind.
func FuzzParseAuth(f *testing.F) {
	for _, name := range []string{"testdata/winch_auth.json", "testdata/integration_auth.json", "testdata/all_kinds_auth.yaml"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		a, err := ParseAuth(doc, "fuzz")
		if err != nil {
			if len(FieldErrors(err)) == 0 {
				t.Fatalf("error without FieldErrors: %v", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, s := range a.Sources {
			if s.Name == "" || s.Kind == "" || seen[s.Name] {
				t.Fatalf("bad source %v in %v", s, a.Sources)
			}
			seen[s.Name] = true
		}
	})
}
