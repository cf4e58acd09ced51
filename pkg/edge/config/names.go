package config

import (
	"net"
	"net/textproto"
	"slices"
	"strings"
	"unicode"
)

// Syntax checks for the names and patterns in the documents. Each check* function returns "" when the value is
// fine, or a reason that reads well after the quoted value.

// validName reports whether s matches ^[a-z_0-9.]{2,64}$ (backend names) or, without digits, ^[a-z_.]{2,64}$ (TLS
// config names).
func validName(s string, digits bool) bool {
	if len(s) < 2 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c == '_' || c == '.' || digits && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// checkDNSName accepts a DNS name: dot-separated labels of letters, digits, '-' and '_' (SRV names start with
// "_service._proto"), at most 253 bytes, one trailing dot allowed. With ip, IP literals (IPv6 without brackets) are
// accepted too.
func checkDNSName(s string, ip bool) string {
	if ip && net.ParseIP(s) != nil {
		return ""
	}
	switch {
	case strings.ContainsFunc(s, isSpaceOrControl):
		return "must not contain spaces"
	case strings.Contains(s, "*"):
		return "must not contain '*'"
	case strings.ContainsAny(s, ":[]"):
		return "must be a host name without a port"
	case strings.ContainsAny(s, "/?#@"):
		return "must be a host name, not a URL"
	}
	name := strings.TrimSuffix(s, ".")
	if len(name) == 0 || len(name) > 253 {
		return "is not a valid DNS name (1-253 characters)"
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) == 0 || len(label) > 63 {
			return "is not a valid DNS name (empty label or a label longer than 63 characters)"
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "is not a valid DNS name (only letters, digits, '-', '_' and '.')"
			}
		}
	}
	return ""
}

// checkHostPattern accepts what an HTTP route's host_matcher may be: a host name, an IP address, or "*.suffix".
func checkHostPattern(s string) string {
	if strings.HasSuffix(s, ".") {
		return "must not end with '.'"
	}
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		if strings.Contains(rest, "*") {
			return "may use '*' only as its first label (\"*.example.com\")"
		}
		return checkDNSName(rest, false)
	}
	if strings.Contains(s, "*") && !strings.ContainsFunc(s, isSpaceOrControl) {
		return "may use '*' only as its first label (\"*.example.com\")"
	}
	return checkDNSName(s, true)
}

// checkAdhocPattern accepts an adhoc dns_name_matcher: a host name, or '*' followed by a name suffix
// ("*.pods.cluster.local" or "*pods.cluster.local").
func checkAdhocPattern(s string) string {
	rest, wildcard := strings.CutPrefix(s, "*")
	if wildcard {
		rest = strings.TrimPrefix(rest, ".")
	}
	if strings.Contains(rest, "*") && !strings.ContainsFunc(rest, isSpaceOrControl) {
		return "may use '*' only at the start (\"*.pods.cluster.local\")"
	}
	if strings.HasSuffix(rest, ".") {
		return "must not end with '.'"
	}
	return checkDNSName(rest, !wildcard)
}

// checkK8sTarget checks a k8s resolver's target with the parser the resolver uses (ParseK8sTarget).
func checkK8sTarget(s string) string {
	_, reason := parseK8sTarget(s)
	return reason
}

// isDNSLabel reports whether s is an RFC 1123 label: 1-63 lower-case letters, digits and '-', alphanumeric at both
// ends.
func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// checkMetadataKey accepts a gRPC metadata key (any case; it is lower-cased): letters, digits, '-', '_' and '.',
// not a pseudo-header.
func checkMetadataKey(k string) string {
	if k == "" {
		return "is empty"
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "is not a valid metadata key (letters, digits, '-', '_' and '.')"
		}
	}
	return ""
}

func canonicalHeader(k string) string { return textproto.CanonicalMIMEHeaderKey(k) }

func isControl(r rune) bool { return unicode.IsControl(r) }

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// sortedKeys returns m's keys in order, so that errors come out the same way every time.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
