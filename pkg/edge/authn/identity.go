package authn

import (
	"crypto/tls"
	"strings"
)

// Methods of an Identity.
const (
	MethodOIDC        = "oidc"
	MethodStaticToken = "static-token"
	MethodClientCert  = "client-cert"
	MethodAnonymous   = "" // no credentials
)

// Identity is the authenticated caller. Its slices are shared with kedge's verification cache: treat them as
// read-only.
type Identity struct {
	// Method is how the caller authenticated: MethodOIDC, MethodStaticToken, MethodClientCert or MethodAnonymous.
	Method string
	// Subject is the token's sub, or the client certificate's subject CN.
	Subject string
	// Email is the token's email claim, if it is a string.
	Email string
	// Permissions are the values of the configured permissions claim.
	Permissions []string
	// CertNames are the names of a verified client certificate: subject CN, then DNS, email and URI SANs. They are
	// set whatever the Method, whenever the TLS peer presented a certificate that verified.
	CertNames []string
}

// Anonymous reports whether the caller presented no usable credential at all.
func (i Identity) Anonymous() bool { return i.Method == MethodAnonymous && len(i.CertNames) == 0 }

// String describes the identity for audit logs: "oidc:sub=...,email=...", "static-token", "cert:CN=..." or
// "anonymous". It never contains a token.
func (i Identity) String() string {
	var b strings.Builder
	switch i.Method {
	case MethodOIDC:
		b.WriteString("oidc:sub=")
		b.WriteString(clean(i.Subject))
		if i.Email != "" {
			b.WriteString(",email=")
			b.WriteString(clean(i.Email))
		}
	case MethodStaticToken:
		b.WriteString("static-token")
	case MethodClientCert:
		b.WriteString("cert:")
		b.WriteString(certLabel(i))
		return b.String()
	default:
		if len(i.CertNames) == 0 {
			return "anonymous"
		}
		b.WriteString("anonymous")
	}
	if len(i.CertNames) > 0 {
		b.WriteString(",cert:")
		b.WriteString(certLabel(i))
	}
	return b.String()
}

func certLabel(i Identity) string {
	if i.Subject != "" && i.Method == MethodClientCert {
		return "CN=" + clean(i.Subject)
	}
	if len(i.CertNames) > 0 {
		return "name=" + clean(i.CertNames[0])
	}
	return "unnamed"
}

// clean makes an attacker-chosen claim safe in a log line: control characters become '?', length is bounded.
func clean(s string) string {
	const max = 256
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// certIdentity returns the identity of the verified client certificate of peer, or the zero Identity. Only verified
// chains count: with tls.RequestClientCert the peer certificates are unverified and ignored.
func certIdentity(peer *tls.ConnectionState) Identity {
	if peer == nil || len(peer.VerifiedChains) == 0 || len(peer.VerifiedChains[0]) == 0 {
		return Identity{}
	}
	leaf := peer.VerifiedChains[0][0]
	names := make([]string, 0, 1+len(leaf.DNSNames)+len(leaf.EmailAddresses)+len(leaf.URIs))
	seen := make(map[string]bool, cap(names))
	add := func(n string) {
		if n != "" && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	add(leaf.Subject.CommonName)
	for _, n := range leaf.DNSNames {
		add(n)
	}
	for _, n := range leaf.EmailAddresses {
		add(n)
	}
	for _, u := range leaf.URIs {
		add(u.String())
	}
	return Identity{Method: MethodClientCert, Subject: leaf.Subject.CommonName, CertNames: names[:len(names):len(names)]}
}
