package forwarded

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzDecide checks the forwarding-header policy on arbitrary client headers: an untrusted client's values never
// reach the backend, a trusted proxy's chain always ends with the peer kedge saw, and X-Real-IP is the peer or an
// address from the chain that is not a trusted proxy.
func FuzzDecide(f *testing.F) {
	f.Add("1.2.3.4", "evil.example.com", "gopher", "for=9.9.9.9", true)
	f.Add("10.0.0.1, 1.2.3.4", "", "", "", true)
	f.Add("garbage, ::1,,", "h", "https", "", false)
	f.Add("", "", "", "", true)
	trusted := New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8")})
	f.Fuzz(func(t *testing.T, xff, xfh, xfp, fwd string, fromTrusted bool) {
		peer := netip.MustParseAddr("192.0.2.7")
		if fromTrusted {
			peer = netip.MustParseAddr("10.1.2.3")
		}
		in := map[string][]string{HeaderFor: {xff}, HeaderHost: {xfh}, HeaderProto: {xfp}, HeaderForwarded: {fwd}}
		req := Request{Peer: peer, Host: "app.example.com", Proto: "https"}
		v := trusted.Decide(req, func(name string) []string { return in[name] })
		if !fromTrusted {
			want := Values{For: peer.String(), Host: req.Host, Proto: req.Proto, RealIP: peer.String()}
			if v != want {
				t.Fatalf("untrusted client: %+v, want %+v", v, want)
			}
			return
		}
		if !strings.HasSuffix(v.For, peer.String()) {
			t.Fatalf("trusted chain %q does not end with the peer", v.For)
		}
		if v.RealIP != peer.String() {
			a, err := netip.ParseAddr(v.RealIP)
			if err != nil || trusted.Trusted(a) || !inChain(xff, a) {
				t.Fatalf("X-Real-IP %q from chain %q", v.RealIP, xff)
			}
		}
	})
}

// inChain reports whether one hop of an X-Forwarded-For chain is the address a.
func inChain(chain string, a netip.Addr) bool {
	for hop := range strings.SplitSeq(chain, ",") {
		if h, err := netip.ParseAddr(strings.TrimSpace(hop)); err == nil && h.Unmap() == a {
			return true
		}
	}
	return false
}
