package mapper

import (
	"errors"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// misc is the original's example mapper (misc/winch_mapper.json) in domain form, plus direct routes like those of
// its winch integration tests.
func misc() []Route {
	return []Route{
		{Regexp: regexp.MustCompile(`^no_auth[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com`), URL: "https://${cluster}:18171"},
		{Regexp: regexp.MustCompile(`^bearer_token_auth[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com`), URL: "https://${cluster}:18171", ProxyAuth: "proxy-bearer-token-auth"},
		{Regexp: regexp.MustCompile(`^test_endpoint[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com`), URL: "https://${cluster}:18171", BackendAuth: "test-endpoint-http", Protocol: ProtocolHTTP},
		{Regexp: regexp.MustCompile(`^([a-z0-9-_].*)[.](?P<cluster>[a-z0-9-].*)[.]internal[.]example[.]com`), URL: "https://${cluster}:18172", BackendAuth: "test-endpoint-grpc", Protocol: ProtocolGRPC},
		{Direct: "resource1.ext.example.com", URL: "https://kedge0.example.com:8443", BackendAuth: "test-token"},
		{Direct: "Resource2.EXT.example.com:8080", URL: "https://kedge1.example.com", ProxyAuth: "proxy-test-token", MITM: true},
		{Direct: "grpc-only.example.com:443", URL: "https://kedge2.example.com:8444", Protocol: ProtocolGRPC},
		{Direct: "http-only.example.com", URL: "http://kedge3.example.com", Protocol: ProtocolHTTP},
	}
}

func TestMap(t *testing.T) {
	t.Parallel()
	m := New(misc())
	tests := []struct {
		name      string
		hostport  string
		proto     Protocol
		wantURL   string
		wantRoute int
		wantProxy string
		wantBack  string
		wantMITM  bool
		wantErr   error
	}{
		{name: "regexp no auth", hostport: "no_auth.localhost.internal.example.com:18270", proto: ProtocolHTTP,
			wantURL: "https://localhost:18171", wantRoute: 0},
		{name: "regexp proxy auth", hostport: "bearer_token_auth.localhost.internal.example.com:18270", proto: ProtocolGRPC,
			wantURL: "https://localhost:18171", wantRoute: 1, wantProxy: "proxy-bearer-token-auth"},
		{name: "HTTP-only route for HTTP", hostport: "test_endpoint.localhost.internal.example.com:18270", proto: ProtocolHTTP,
			wantURL: "https://localhost:18171", wantRoute: 2, wantBack: "test-endpoint-http"},
		{name: "HTTP-only route skipped for gRPC", hostport: "test_endpoint.localhost.internal.example.com:18271", proto: ProtocolGRPC,
			wantURL: "https://localhost:18172", wantRoute: 3, wantBack: "test-endpoint-grpc"},
		{name: "gRPC-only regexp not used for HTTP", hostport: "other.eu1.internal.example.com", proto: ProtocolHTTP,
			wantErr: ErrNotKedgeDestination},
		{name: "gRPC-only regexp for gRPC, greedy group", hostport: "a.b.eu1.internal.example.com", proto: ProtocolGRPC,
			wantURL: "https://eu1:18172", wantRoute: 3, wantBack: "test-endpoint-grpc"},
		{name: "regexp on lower-cased host", hostport: "NO_AUTH.EU1.Internal.Example.com", proto: ProtocolHTTP,
			wantURL: "https://eu1:18171", wantRoute: 0},
		{name: "direct", hostport: "resource1.ext.example.com", proto: ProtocolHTTP,
			wantURL: "https://kedge0.example.com:8443", wantRoute: 4, wantBack: "test-token"},
		{name: "direct host case-insensitive", hostport: "RESOURCE1.ext.Example.COM", proto: ProtocolGRPC,
			wantURL: "https://kedge0.example.com:8443", wantRoute: 4, wantBack: "test-token"},
		{name: "direct key without port does not match a port", hostport: "resource1.ext.example.com:80", proto: ProtocolHTTP,
			wantErr: ErrNotKedgeDestination},
		{name: "direct key with port", hostport: "resource2.ext.example.com:8080", proto: ProtocolHTTP,
			wantURL: "https://kedge1.example.com", wantRoute: 5, wantProxy: "proxy-test-token", wantMITM: true},
		{name: "direct key with port needs it", hostport: "resource2.ext.example.com", proto: ProtocolHTTP,
			wantErr: ErrNotKedgeDestination},
		{name: "direct key other port", hostport: "resource2.ext.example.com:8081", proto: ProtocolHTTP,
			wantErr: ErrNotKedgeDestination},
		{name: "gRPC-only direct for gRPC", hostport: "grpc-only.example.com:443", proto: ProtocolGRPC,
			wantURL: "https://kedge2.example.com:8444", wantRoute: 6},
		{name: "gRPC-only direct for HTTP", hostport: "grpc-only.example.com:443", proto: ProtocolHTTP,
			wantErr: ErrNotKedgeDestination},
		{name: "HTTP-only direct for HTTP", hostport: "http-only.example.com", proto: ProtocolHTTP,
			wantURL: "http://kedge3.example.com", wantRoute: 7},
		{name: "HTTP-only direct for gRPC", hostport: "http-only.example.com", proto: ProtocolGRPC,
			wantErr: ErrNotKedgeDestination},
		{name: "ProtocolAny consults every route", hostport: "http-only.example.com", proto: ProtocolAny,
			wantURL: "http://kedge3.example.com", wantRoute: 7},
		{name: "unknown host", hostport: "resourceXXX.ext.example.com", proto: ProtocolGRPC, wantErr: ErrNotKedgeDestination},
		{name: "IPv4", hostport: "10.0.0.1", proto: ProtocolHTTP, wantErr: ErrIPLiteral},
		{name: "IPv4 with port", hostport: "127.0.0.1:8080", proto: ProtocolHTTP, wantErr: ErrIPLiteral},
		{name: "IPv6 bracketed with port", hostport: "[::1]:443", proto: ProtocolGRPC, wantErr: ErrIPLiteral},
		{name: "IPv6 bracketed", hostport: "[2001:db8::1]", proto: ProtocolHTTP, wantErr: ErrIPLiteral},
		{name: "IPv6 bare", hostport: "2001:db8::1", proto: ProtocolHTTP, wantErr: ErrIPLiteral},
		{name: "IPv6 with zone", hostport: "[fe80::1%eth0]:80", proto: ProtocolHTTP, wantErr: ErrIPLiteral},
		{name: "IPv4-mapped IPv6", hostport: "[::ffff:127.0.0.1]:80", proto: ProtocolHTTP, wantErr: ErrIPLiteral},
		{name: "short IPv4", hostport: "127.1", proto: ProtocolHTTP, wantErr: ErrIPLiteral},
		{name: "decimal IPv4", hostport: "2130706433:80", proto: ProtocolHTTP, wantErr: ErrIPLiteral},
		{name: "hex IPv4", hostport: "0x7f.0x1", proto: ProtocolHTTP, wantErr: ErrIPLiteral},
		{name: "name with numeric first label is a name", hostport: "1.eu1.internal.example.com", proto: ProtocolGRPC,
			wantURL: "https://eu1:18172", wantRoute: 3, wantBack: "test-endpoint-grpc"},
		{name: "empty", hostport: "", proto: ProtocolHTTP, wantErr: ErrInvalidDestination},
		{name: "slash cannot redirect to another kedge", hostport: "a.evil.example/x.internal.example.com", proto: ProtocolGRPC, wantErr: ErrInvalidDestination},
		{name: "at sign", hostport: "user@no_auth.eu1.internal.example.com", proto: ProtocolHTTP, wantErr: ErrInvalidDestination},
		{name: "port zero", hostport: "resource1.ext.example.com:0", proto: ProtocolHTTP, wantErr: ErrInvalidDestination},
		{name: "port too large", hostport: "resource1.ext.example.com:65536", proto: ProtocolHTTP, wantErr: ErrInvalidDestination},
		{name: "empty port", hostport: "resource1.ext.example.com:", proto: ProtocolHTTP, wantErr: ErrInvalidDestination},
		{name: "no host", hostport: ":80", proto: ProtocolHTTP, wantErr: ErrInvalidDestination},
		{name: "empty label", hostport: "a..example.com", proto: ProtocolHTTP, wantErr: ErrInvalidDestination},
		{name: "unclosed bracket", hostport: "[::1", proto: ProtocolHTTP, wantErr: ErrInvalidDestination},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := m.Map(tt.hostport, tt.proto)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Map(%q) error = %v, want %v", tt.hostport, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Map(%q): %v", tt.hostport, err)
			}
			if got.KedgeURL.String() != tt.wantURL || got.Route != tt.wantRoute || got.ProxyAuth != tt.wantProxy ||
				got.BackendAuth != tt.wantBack || got.MITM != tt.wantMITM {
				t.Errorf("Map(%q) = {%s route %d proxy %q backend %q mitm %v}, want {%s route %d proxy %q backend %q mitm %v}",
					tt.hostport, got.KedgeURL, got.Route, got.ProxyAuth, got.BackendAuth, got.MITM,
					tt.wantURL, tt.wantRoute, tt.wantProxy, tt.wantBack, tt.wantMITM)
			}
		})
	}
}

func TestErrorMessages(t *testing.T) {
	t.Parallel()
	m := New(misc())
	tests := []struct {
		hostport string
		want     string
	}{
		{"resourceXXX.ext.example.com", "resourceXXX.ext.example.com is not a kedge destination"},
		{"resourceXXX.ext.example.com:8443", "resourceXXX.ext.example.com:8443 is not a kedge destination"},
		{"10.1.2.3:80", "kedge requires hostname to proxy to but was given IP address 10.1.2.3"},
		{"[::1]:80", "kedge requires hostname to proxy to but was given IP address ::1"},
	}
	for _, tt := range tests {
		t.Run(tt.hostport, func(t *testing.T) {
			t.Parallel()
			_, err := m.Map(tt.hostport, ProtocolGRPC)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Map(%q) error = %v, want %q", tt.hostport, err, tt.want)
			}
		})
	}
	var nd *NotDestinationError
	if _, err := m.Map("nothing.example.com", ProtocolHTTP); !errors.As(err, &nd) || nd.HostPort != "nothing.example.com" {
		t.Errorf("errors.As(*NotDestinationError) = %v, %+v", err, nd)
	}
	var ipErr *IPLiteralError
	if _, err := m.Map("192.0.2.1:443", ProtocolHTTP); !errors.As(err, &ipErr) || ipErr.IP != "192.0.2.1" {
		t.Errorf("errors.As(*IPLiteralError) = %v, %+v", err, ipErr)
	}
}

func TestTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		exp      string
		url      string
		hostport string
		want     string
		wantErr  string
	}{
		{name: "two groups, repeated", exp: `^(?P<svc>[a-z]+)\.(?P<cl>[a-z0-9]+)\.example\.com$`,
			url: "https://${cl}.kedge.example.com/${svc}/${cl}", hostport: "api.eu1.example.com",
			want: "https://eu1.kedge.example.com/api/eu1"},
		{name: "unanchored", exp: `(?P<cl>eu[0-9])`, url: "https://${cl}.kedge", hostport: "x.eu2.y.example.com",
			want: "https://eu2.kedge"},
		{name: "unknown placeholder stays", exp: `(?P<cl>eu[0-9])`, url: "https://${cl}.kedge/${other}", hostport: "eu1.example.com",
			want: "https://eu1.kedge/$%7Bother%7D"},
		{name: "unnamed group is not a placeholder", exp: `(eu[0-9])`, url: "https://k.example.com/${1}", hostport: "eu1.example.com",
			want: "https://k.example.com/$%7B1%7D"},
		{name: "unclosed placeholder", exp: `(?P<cl>eu[0-9])`, url: "https://${cl}.kedge/${cl", hostport: "eu1.example.com",
			want: "https://eu1.kedge/$%7Bcl"},
		{name: "optional group unmatched is empty", exp: `^(?:(?P<p>[a-z]+)-)?(?P<cl>eu[0-9])\.`, url: "https://k${p}.${cl}.kedge",
			hostport: "eu1.example.com", want: "https://k.eu1.kedge"},
		{name: "port in the group", exp: `^(?P<hp>.*)$`, url: "https://${hp}", hostport: "kedge.example.com:8443",
			want: "https://kedge.example.com:8443"},
		{name: "group empty leaves no host", exp: `^(?P<cl>[0-9]*)[a-z.]+$`, url: "https://${cl}:443", hostport: "example.com",
			wantErr: "no host"},
		{name: "no scheme", exp: `^(?P<cl>[a-z0-9]+)\.`, url: "${cl}.kedge.ext.example.com", hostport: "eu1.example.com",
			wantErr: "scheme must be http or https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := New([]Route{{Regexp: regexp.MustCompile(tt.exp), URL: tt.url}})
			got, err := m.Map(tt.hostport, ProtocolHTTP)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Map error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			if got.KedgeURL.String() != tt.want {
				t.Errorf("KedgeURL = %s, want %s", got.KedgeURL, tt.want)
			}
		})
	}
}

func TestDirectURLErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url     string
		wantErr string
	}{
		{"://bad", "missing protocol scheme"},
		{"ftp://kedge.example.com", "scheme must be http or https"},
		{"https://", "no host"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			m := New([]Route{{Direct: "a.example.com", URL: tt.url}, {Direct: "b.example.com", URL: "https://k"}})
			if _, err := m.Map("a.example.com", ProtocolHTTP); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Map error = %v, want one containing %q", err, tt.wantErr)
			}
			if d, err := m.Map("b.example.com", ProtocolHTTP); err != nil || d.Route != 1 {
				t.Errorf("a bad route must not affect others: %+v, %v", d, err)
			}
		})
	}
}

func TestFirstMatchWinsInConfigOrder(t *testing.T) {
	t.Parallel()
	m := New([]Route{
		{Regexp: regexp.MustCompile(`example\.com$`), URL: "https://grpc-first", Protocol: ProtocolGRPC},
		{Direct: "a.example.com", URL: "https://any-second"},
		{Regexp: regexp.MustCompile(`example\.com$`), URL: "https://http-third", Protocol: ProtocolHTTP},
	})
	tests := []struct {
		proto     Protocol
		hostport  string
		wantRoute int
	}{
		{ProtocolGRPC, "a.example.com", 0},
		{ProtocolHTTP, "a.example.com", 1},
		{ProtocolHTTP, "b.example.com", 2},
		{ProtocolAny, "b.example.com", 0},
	}
	for _, tt := range tests {
		if d, err := m.Map(tt.hostport, tt.proto); err != nil || d.Route != tt.wantRoute {
			t.Errorf("Map(%q, %v) = route %d, %v; want route %d", tt.hostport, tt.proto, d.Route, err, tt.wantRoute)
		}
	}
	if m.Len() != 3 {
		t.Errorf("Len() = %d, want 3", m.Len())
	}
}

func TestKedgeURLIsACopy(t *testing.T) {
	t.Parallel()
	m := New(misc())
	d, err := m.Map("resource1.ext.example.com", ProtocolHTTP)
	if err != nil {
		t.Fatal(err)
	}
	d.KedgeURL.Host = "mutated.example.com"
	d2, err := m.Map("resource1.ext.example.com", ProtocolHTTP)
	if err != nil {
		t.Fatal(err)
	}
	if d2.KedgeURL.Host != "kedge0.example.com:8443" {
		t.Errorf("a caller's change leaked into the mapper: %s", d2.KedgeURL)
	}
}

func TestConcurrentMap(t *testing.T) {
	t.Parallel()
	m := New(misc())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if _, err := m.Map("a.b.eu1.internal.example.com", ProtocolGRPC); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestProtocolString(t *testing.T) {
	t.Parallel()
	for p, want := range map[Protocol]string{ProtocolAny: "ANY", ProtocolHTTP: "HTTP", ProtocolGRPC: "GRPC", 7: "Protocol(7)"} {
		if got := p.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", uint8(p), got, want)
		}
	}
}

func BenchmarkMapRegexp(b *testing.B) {
	m := New(misc())
	for b.Loop() {
		if _, err := m.Map("a.b.eu1.internal.example.com:443", ProtocolGRPC); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMapDirect(b *testing.B) {
	m := New(misc())
	for b.Loop() {
		if _, err := m.Map("resource2.ext.example.com:8080", ProtocolHTTP); err != nil {
			b.Fatal(err)
		}
	}
}
