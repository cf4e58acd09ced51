package mapper

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzCheckDestination checks winch's gate for destinations (CONNECT targets, absolute-form hosts, direct route
// keys): anything it accepts is a plain host[:port] that a URL parser reads back as exactly that host, so nothing a
// client sends can smuggle userinfo, a path or another host into a kedge URL.
func FuzzCheckDestination(f *testing.F) {
	for _, s := range []string{"svc.example.com", "svc.example.com:8443", "127.0.0.1", "[::1]:443", "a@b", "a/b",
		"evil.example/x.internal.example.com", "a..b", "x:0", "x:65536", "0x7f.1", "host."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, hostport string) {
		if CheckDestination(hostport) != nil {
			return
		}
		u, err := url.Parse("https://" + hostport + "/")
		if err != nil || u.Host != hostport || u.User != nil || u.Path != "/" {
			t.Fatalf("accepted %q, but it parses as host %q user %v path %q (%v)", hostport, u.Host, u.User, u.Path, err)
		}
		if strings.ContainsAny(hostport, "@/?#%\\ []") {
			t.Fatalf("accepted %q", hostport)
		}
	})
}
