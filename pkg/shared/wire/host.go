package wire

import (
	"net/netip"
	"strings"
)

// NumericHost reports whether host (without port or brackets) is an address rather than a DNS name: an IP literal
// (IPv6 with or without zone), or a name whose last label, ignoring one trailing dot, is a number as inet_aton reads
// it: decimal, octal or 0x-hexadecimal ("127.1", "2130706433", "0x7f.1", "0X7F.1"). Resolvers turn such names into
// IPv4 addresses, and no DNS name ends in a numeric label. kedge lets only adhoc rules that name such a host exactly
// match it; winch refuses to map it (kedge routes by name).
func NumericHost(host string) bool {
	// An IPv4 literal ends in a decimal label, which the check below sees; only IPv6 needs parsing (a failed
	// ParseAddr allocates its error, and winch asks this for every request).
	if strings.IndexByte(host, ':') >= 0 {
		if _, err := netip.ParseAddr(host); err == nil {
			return true
		}
	}
	h := strings.TrimSuffix(host, ".")
	return numericLabel(h[strings.LastIndexByte(h, '.')+1:])
}

// numericLabel reports whether l is a decimal, octal or 0x-hexadecimal number as inet_aton reads them.
func numericLabel(l string) bool {
	if l == "" {
		return false
	}
	digits, hex := l, false
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		digits, hex = l[2:], true // "0x" alone is 0 to inet_aton
	}
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		isHex := 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
		if !('0' <= c && c <= '9' || hex && isHex) {
			return false
		}
	}
	return true
}
