// Package forwarded is kedge's one policy for the headers that tell a backend who sent a request and how it arrived
// (X-Forwarded-For, -Host, -Proto, X-Real-IP, Forwarded). The HTTP proxy and the gRPC proxy both call it, so a
// backend can trust them on either protocol. CONNECT tunnels carry no headers to the backend.
//
// A client's own values are dropped and replaced with what kedge saw, unless the client is a trusted proxy (its
// address is in the configured prefixes): then its X-Forwarded-For chain is kept and kedge appends the peer,
// X-Forwarded-Host, X-Forwarded-Proto and Forwarded pass as sent, and X-Real-IP is the nearest address in the chain
// that is not a trusted proxy.
package forwarded

import (
	"net/http"
	"net/netip"
	"strings"

	"google.golang.org/grpc/metadata"
)

// Header names the policy owns, in canonical form.
const (
	HeaderFor       = "X-Forwarded-For"
	HeaderHost      = "X-Forwarded-Host"
	HeaderProto     = "X-Forwarded-Proto"
	HeaderRealIP    = "X-Real-Ip"
	HeaderForwarded = "Forwarded"
)

// owned lists every header the policy decides on; anything else a client sends is not its business.
var owned = [...]string{HeaderFor, HeaderHost, HeaderProto, HeaderRealIP, HeaderForwarded, "X-Forwarded-Port",
	"X-Forwarded-Server", "X-Forwarded-Prefix", "X-Original-Forwarded-For", "X-Client-Ip", "True-Client-Ip"}

// ownedKeys are owned's names as gRPC metadata keys (lower case), and metadataKey maps the five the policy sets:
// SetMetadata runs for every gRPC call, and strings.ToLower allocates for each name.
var (
	ownedKeys   = lowerAll(owned)
	metadataKey = map[string]string{}
)

func init() {
	for _, name := range [...]string{HeaderFor, HeaderHost, HeaderProto, HeaderRealIP, HeaderForwarded} {
		metadataKey[name] = strings.ToLower(name)
	}
}

func lowerAll(names [len(owned)]string) [len(owned)]string {
	for i, n := range names {
		names[i] = strings.ToLower(n)
	}
	return names
}

// Policy applies the forwarding headers. The zero value trusts nobody. It is immutable and safe for concurrent use.
type Policy struct {
	trusted []netip.Prefix
}

// New returns a Policy that trusts the forwarding headers of peers inside trusted.
func New(trusted []netip.Prefix) *Policy {
	p := &Policy{}
	for _, t := range trusted {
		if t.IsValid() {
			a := t.Addr().Unmap()
			p.trusted = append(p.trusted, netip.PrefixFrom(a, min(t.Bits(), a.BitLen())).Masked())
		}
	}
	return p
}

// Trusted reports whether addr is a trusted proxy.
func (p *Policy) Trusted(addr netip.Addr) bool {
	if p == nil || !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	for _, t := range p.trusted {
		if t.Contains(addr) {
			return true
		}
	}
	return false
}

// Request is what kedge saw of one request.
type Request struct {
	// Peer is the address of kedge's client (the TCP peer).
	Peer netip.Addr
	// Host is the host the request was for (Host header or :authority), as routed.
	Host string
	// Proto is "https" on kedge's TLS ports.
	Proto string
}

// Values are the forwarding headers a backend receives; "" means the header is left out.
type Values struct {
	For, Host, Proto, RealIP, Forwarded string
}

// Decide computes the forwarding headers of a request whose incoming header values get returns (by canonical name).
func (p *Policy) Decide(req Request, get func(name string) []string) Values {
	peer := ""
	if req.Peer.IsValid() {
		peer = req.Peer.Unmap().WithZone("").String()
	}
	v := Values{For: peer, Host: req.Host, Proto: req.Proto, RealIP: peer}
	if !p.Trusted(req.Peer) {
		return v
	}
	if chain := strings.Join(get(HeaderFor), ", "); strings.TrimSpace(chain) != "" {
		v.For = chain + ", " + peer
		v.RealIP = p.nearestUntrusted(chain, peer)
	}
	if h := get(HeaderHost); len(h) > 0 {
		v.Host = h[0]
	}
	if pr := get(HeaderProto); len(pr) > 0 {
		v.Proto = pr[0]
	}
	v.Forwarded = strings.Join(get(HeaderForwarded), ", ")
	return v
}

// nearestUntrusted walks the X-Forwarded-For chain from the right (nearest hop first) and returns the first address
// that is not a trusted proxy; peer when the chain is unparsable at that point.
func (p *Policy) nearestUntrusted(chain, peer string) string {
	for chain != "" {
		var hop string
		if i := strings.LastIndexByte(chain, ','); i >= 0 {
			chain, hop = chain[:i], chain[i+1:]
		} else {
			chain, hop = "", chain
		}
		addr, err := netip.ParseAddr(strings.TrimSpace(hop))
		if err != nil {
			return peer // a hop a trusted proxy would not write: stop trusting the chain here
		}
		if !p.Trusted(addr) {
			return addr.Unmap().String()
		}
	}
	return peer
}

// SetHTTP replaces the forwarding headers of out (the request to the backend) with the policy's; in is the
// client's request header.
func (p *Policy) SetHTTP(out, in http.Header, req Request) {
	v := p.Decide(req, func(name string) []string { return in[name] })
	for _, name := range owned {
		delete(out, name)
	}
	apply(v, func(name string, value []string) { out[name] = value })
}

// SetMetadata does what SetHTTP does for gRPC metadata (lower-case keys): out is the metadata sent to the backend, in
// the client's.
func (p *Policy) SetMetadata(out, in metadata.MD, req Request) {
	v := p.Decide(req, func(name string) []string { return in[metadataKey[name]] })
	for _, k := range ownedKeys {
		delete(out, k)
	}
	apply(v, func(name string, value []string) { out[metadataKey[name]] = value })
}

// apply calls set with each non-empty value (by canonical header name) as a one-element slice. The slices share one
// backing array: this runs for every proxied request and call.
func apply(v Values, set func(name string, value []string)) {
	store := make([]string, 0, 5)
	for _, h := range [...]struct{ name, value string }{
		{HeaderFor, v.For}, {HeaderHost, v.Host}, {HeaderProto, v.Proto}, {HeaderRealIP, v.RealIP},
		{HeaderForwarded, v.Forwarded},
	} {
		if h.value != "" {
			store = append(store, h.value)
			set(h.name, store[len(store)-1:len(store):len(store)])
		}
	}
}
