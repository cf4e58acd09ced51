package backend

import (
	"errors"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestDefaultDialGuard(t *testing.T) {
	t.Parallel()
	allowLoopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	tests := []struct {
		addr    string
		allow   []netip.Prefix
		allowed bool
	}{
		{"127.0.0.1", nil, false},
		{"127.0.0.2", nil, false},
		{"::1", nil, false},
		{"::ffff:127.0.0.1", nil, false},
		{"169.254.169.254", nil, false},
		{"::ffff:169.254.169.254", nil, false},
		{"fe80::1", nil, false},
		{"fe80::1%eth0", nil, false},
		{"fd00:ec2::254", nil, false},
		{"0.0.0.0", nil, false},
		{"0.1.2.3", nil, false},
		{"::", nil, false},
		{"224.0.0.1", nil, false},
		{"ff02::1", nil, false},
		{"255.255.255.255", nil, false},
		{"64:ff9b::a9fe:a9fe", nil, false}, // NAT64 of 169.254.169.254
		{"2002:7f00:1::", nil, false},      // 6to4 of 127.0.0.1
		{"64:ff9b::0a00:0001", nil, true},  // NAT64 of 10.0.0.1
		{"10.0.0.1", nil, true},
		{"192.168.1.1", nil, true},
		{"8.8.8.8", nil, true},
		{"2001:db8::1", nil, true},
		{"127.0.0.1", allowLoopback, true},
		{"::ffff:127.0.0.1", allowLoopback, true},
		{"127.0.0.2", allowLoopback, false},
		{"::1", allowLoopback, false},
		{"::1", []netip.Prefix{netip.MustParsePrefix("::1/128")}, true},
	}
	for _, tt := range tests {
		err := DefaultDialGuard(tt.allow...)(netip.MustParseAddr(tt.addr))
		if (err == nil) != tt.allowed {
			t.Errorf("guard(%s, allow %v) = %v, want allowed=%v", tt.addr, tt.allow, err, tt.allowed)
		}
		if err != nil && !errors.Is(err, ErrForbiddenAddress) {
			t.Errorf("guard(%s) error %v does not wrap ErrForbiddenAddress", tt.addr, err)
		}
	}
}

func TestAdhocTransport(t *testing.T) {
	t.Parallel()
	s := namedServer(t, "adhoc", nil)
	_, port := hostPort(t, s)
	dns := sharedtest.NewResolver(nil)
	dns.SetHost("local.test", "127.0.0.1")
	dns.Fail("broken.test", errors.New("SERVFAIL"))
	deps := Deps{Log: logging.Discard(), DNS: dns}
	p := uint32(port)
	tests := []struct {
		name     string
		host     string
		guard    DialGuard
		target   route.Target // passed with WithAdhocTarget
		wantType wire.ErrorType
	}{
		{"loopback name refused", "local.test", DefaultDialGuard(), route.Target{}, wire.ErrForbidden},
		{"loopback literal refused", "127.0.0.1", DefaultDialGuard(), route.Target{}, wire.ErrForbidden},
		{"v4-mapped literal refused", "::ffff:127.0.0.1", DefaultDialGuard(), route.Target{}, wire.ErrForbidden},
		{"explicitly allowed", "local.test", DefaultDialGuard(netip.MustParsePrefix("127.0.0.1/32")), route.Target{}, ""},
		{"DNS failure", "broken.test", DefaultDialGuard(), route.Target{}, wire.ErrNoResolution},
		{"literal a rule names", "127.0.0.1", nil, route.Target{Host: "127.0.0.1", Port: p, Explicit: true}, ""},
		{"v4-mapped literal a rule names", "::ffff:127.0.0.1", nil,
			route.Target{Host: "::ffff:127.0.0.1", Port: p, Explicit: true}, ""},
		{"literal a rule names, other port", "127.0.0.1", nil,
			route.Target{Host: "127.0.0.1", Port: p + 1, Explicit: true}, wire.ErrForbidden},
		{"literal not explicit", "127.0.0.1", nil, route.Target{Host: "127.0.0.1", Port: p}, wire.ErrForbidden},
		{"name resolving to a literal a rule names", "local.test", nil,
			route.Target{Host: "127.0.0.1", Port: p, Explicit: true}, wire.ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rt := NewAdhocTransport(deps, NewAdhocDialer(deps, tt.guard))
			defer rt.(interface{ CloseIdleConnections() }).CloseIdleConnections()
			ctx, rec := WithEndpointRecorder(WithAdhocTarget(t.Context(), tt.target))
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(tt.host, strconv.Itoa(port))+"/", nil)
			resp, err := rt.RoundTrip(req)
			if tt.wantType != "" {
				if got := errType(err); got != string(tt.wantType) {
					t.Fatalf("error %v (type %q), want type %q", err, got, tt.wantType)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if resp.Header.Get("X-Server") != "adhoc" {
				t.Errorf("not served by the adhoc backend: %v", resp.Header)
			}
			if want := net.JoinHostPort("127.0.0.1", strconv.Itoa(port)); rec.Addr != want {
				t.Errorf("recorded endpoint %q, want %q", rec.Addr, want)
			}
		})
	}
}

// TestAdhocDialerTriesAllowedAddresses checks that a dial skips refused addresses, but tries at most adhocMaxAddrs
// of the addresses a name resolves to: the name is the client's choice, and every address may cost the whole dial
// timeout.
func TestAdhocDialerTriesAllowedAddresses(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	dns := sharedtest.NewResolver(nil)
	dns.SetHost("two.test", "169.254.169.254", "127.0.0.1")
	refused := []string{"169.254.0.1", "169.254.0.2", "169.254.0.3", "169.254.0.4"}
	dns.SetHost("last.test", slices.Concat(refused[:adhocMaxAddrs-1], []string{"127.0.0.1"})...)
	dns.SetHost("beyond.test", slices.Concat(refused[:adhocMaxAddrs], []string{"127.0.0.1"})...)
	d := NewAdhocDialer(Deps{DNS: dns}, DefaultDialGuard(netip.MustParsePrefix("127.0.0.0/8")))
	for _, name := range []string{"two.test", "last.test"} {
		c, err := d.DialContext(t.Context(), "tcp", net.JoinHostPort(name, port))
		if err != nil {
			t.Fatalf("dial %s: %v (the refused addresses must be skipped, the allowed one dialled)", name, err)
		}
		_ = c.Close()
	}
	if _, err := d.DialContext(t.Context(), "tcp", net.JoinHostPort("beyond.test", port)); errType(err) != string(wire.ErrForbidden) {
		t.Errorf("dial of a name whose first %d addresses are refused: %v, want type %q", adhocMaxAddrs, err, wire.ErrForbidden)
	}
	if _, err := d.DialContext(t.Context(), "udp", "two.test:53"); errType(err) != string(wire.ErrForbidden) {
		t.Errorf("udp dial: %v, want type %q", err, wire.ErrForbidden)
	}
}

// TestAdhocTransportIdleBound checks that the adhoc transport bounds its idle connections in all: its hosts are
// names clients choose, so a per-host limit alone would let them keep any number of connections (and descriptors)
// open for the idle timeout.
func TestAdhocTransportIdleBound(t *testing.T) {
	t.Parallel()
	rt := NewAdhocTransport(Deps{Log: logging.Discard(), DNS: sharedtest.NewResolver(nil)}, nil)
	tr := rt.(*adhocTransport).t
	if tr.MaxIdleConns <= 0 || tr.MaxIdleConns > maxAdhocIdleConns {
		t.Errorf("adhoc transport MaxIdleConns = %d, want 1-%d", tr.MaxIdleConns, maxAdhocIdleConns)
	}
	if tr.MaxIdleConnsPerHost <= 0 || tr.MaxIdleConnsPerHost > tr.MaxIdleConns {
		t.Errorf("adhoc transport MaxIdleConnsPerHost = %d, want 1-%d", tr.MaxIdleConnsPerHost, tr.MaxIdleConns)
	}
}
