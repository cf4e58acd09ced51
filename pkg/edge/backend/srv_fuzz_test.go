package backend

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	sharedtest "github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// FuzzResolveSRV feeds an srv resolver DNS answers from the fuzzer: SRV targets (names, IP literals, "."), their
// ports, and the addresses each name resolves to. A DNS answer is not trusted: every endpoint the resolver returns
// must be an IP address joined with a usable port, and an empty answer must come with an error.
func FuzzResolveSRV(f *testing.F) {
	f.Add("a.test.,b.test.,.", []byte{0x1f, 0x90, 0x23, 0x82, 0, 1}, uint16(0), []byte{10, 0, 0, 1, 10, 0, 0, 2})
	f.Add("10.9.9.9,fe80::1%eth0,missing.test", []byte{0, 80}, uint16(81), []byte{})
	f.Add("a.test", []byte{0, 0}, uint16(0), []byte{192, 168, 1, 1})
	f.Add("", []byte{}, uint16(0), []byte{})
	f.Fuzz(func(t *testing.T, targets string, ports []byte, override uint16, addrs []byte) {
		dns := sharedtest.NewResolver(nil)
		var recs []*net.SRV
		for i, name := range strings.SplitN(targets, ",", 8) {
			r := &net.SRV{Target: name}
			if 2*i+1 < len(ports) {
				r.Port = uint16(ports[2*i])<<8 | uint16(ports[2*i+1])
			}
			recs = append(recs, r)
			// Names resolve to the next four bytes of addrs as an IPv4 address, while they last.
			if len(addrs) >= 4 {
				dns.SetHost(strings.TrimSuffix(name, "."), netip.AddrFrom4([4]byte(addrs[:4])).String())
				addrs = addrs[4:]
			}
		}
		dns.SetSRV("_http._tcp.svc.test", recs...)
		s := &dnsSource{dns: dns, res: Resolver{Kind: ResolverSRV, DNSName: "_http._tcp.svc.test", PortOverride: uint32(override)}}
		eps, err := s.resolve(t.Context())
		if len(eps) == 0 && err == nil {
			t.Fatalf("no endpoints and no error for %q", targets)
		}
		for _, ep := range eps {
			host, port, err := net.SplitHostPort(ep)
			if err != nil {
				t.Fatalf("endpoint %q: %v", ep, err)
			}
			if _, err := netip.ParseAddr(host); err != nil {
				t.Fatalf("endpoint %q: host is not an IP address: %v", ep, err)
			}
			if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
				t.Fatalf("endpoint %q: port is not 1-65535", ep)
			}
		}
	})
}
