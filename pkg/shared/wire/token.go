package wire

import "strings"

// IsTokenChar reports whether c may appear in an RFC 9110 token (a header name, a method, a Connection option).
func IsTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// IsToken reports whether s is a non-empty RFC 9110 token (a header field name, for one).
func IsToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !IsTokenChar(s[i]) {
			return false
		}
	}
	return s != ""
}

// EqualFoldASCII is strings.EqualFold restricted to ASCII. Header names, schemes and host names are ASCII (IDNs
// travel as punycode), and Unicode folding would let "\u212a.example.com" (Kelvin sign) match "k.example.com".
func EqualFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// TrimOWS removes the optional whitespace (spaces and tabs) HTTP allows around a field value or list item.
func TrimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// ContainsToken reports whether the comma-separated lists in values (the field lines of one header) hold token,
// compared case-insensitively: Connection: close, Transfer-Encoding: chunked.
func ContainsToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var item string
			item, v, _ = strings.Cut(v, ",")
			if EqualFoldASCII(TrimOWS(item), token) {
				return true
			}
		}
	}
	return false
}
