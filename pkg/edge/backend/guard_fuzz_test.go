package backend

import (
	"net/netip"
	"testing"
)

// FuzzDialGuard feeds arbitrary 16-byte addresses (read as IPv6, and as IPv4 when the first 12 bytes are the
// IPv4-mapped prefix) to the default guard and checks it against an independent table of ranges that must never be
// dialled: loopback, link-local, unspecified, multicast, "this network" and broadcast, in every spelling (mapped,
// zoned).
func FuzzDialGuard(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "fe80::1", "0.0.0.0", "::",
		"10.0.0.1", "8.8.8.8", "224.0.0.1", "ff02::1", "255.255.255.255", "0.1.2.3", "2001:db8::1"} {
		a := netip.MustParseAddr(s).As16()
		f.Add(a[:], "")
	}
	f.Add(make([]byte, 16), "eth0")
	never := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10"),
		netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("::/128"),
		netip.MustParsePrefix("224.0.0.0/4"), netip.MustParsePrefix("ff00::/8"),
		netip.MustParsePrefix("255.255.255.255/32"),
	}
	guard := DefaultDialGuard()
	f.Fuzz(func(t *testing.T, b []byte, zone string) {
		if len(b) != 16 {
			return
		}
		addr := netip.AddrFrom16([16]byte(b))
		if zone != "" && !addr.Is4In6() {
			addr = addr.WithZone(zone)
		}
		plain := addr.WithZone("").Unmap()
		for _, p := range never {
			if p.Contains(plain) {
				if err := guard(addr); err == nil {
					t.Fatalf("guard allowed %s, inside %s", addr, p)
				}
				return
			}
		}
	})
}
