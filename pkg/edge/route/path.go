package route

import (
	"errors"
	"strings"
)

// ErrBadPath rejects a request path that kedge will not route: the answer is 400.
var ErrBadPath = errors.New("route: ambiguous or malformed request path")

// ErrEncodedSlash refuses a path with an encoded '/' or '\' (Path.EncodedSlash) for a route that does not allow
// them (HTTPRoute.AllowEncodedSlashes), or for an adhoc destination: the answer is 400.
var ErrEncodedSlash = errors.New("encoded '/' or '\\' in the path: the route does not allow them")

// Path is one request path in the three forms kedge needs. Routing and authorization look at Match; the backend
// receives Escaped (with Decoded as URL.Path). The two differ only in ways a common backend reads identically, so
// a request cannot reach a backend path other than the one its route's rules were checked against.
type Path struct {
	// Escaped is the canonical escaped path, valid for URL.RawPath: dot segments removed, repeated slashes
	// merged, percent-encodings of unreserved characters decoded and every other one upper-case, bytes that may
	// not appear raw percent-encoded. It is what the backend receives.
	Escaped string
	// Decoded is Escaped percent-decoded (URL.Path).
	Decoded string
	// Match is what routes match against: Decoded with every ';' segment parameter removed ("/admin;jsessionid=1"
	// is "/admin", as Tomcat, Jetty and Spring read it), the empty segments that leaves merged, and encoded
	// slashes and backslashes kept as "%2F" and "%5C" so that they never split a segment.
	Match string
	// EncodedSlash reports an encoded '/' or '\' ("%2F", "%5C"). Backends disagree on whether it separates
	// segments, so only a route that allows encoded slashes serves such a request; everyone else answers 400.
	EncodedSlash bool
}

// CanonicalPath returns the canonical forms of a request path (see Path).
//
// Input is the request's escaped path (r.URL.EscapedPath() or RawPath); "" counts as "/". It removes dot segments
// (RFC 3986 §5.2.4), also when they are percent-encoded ("%2e%2E"), and merges repeated slashes ("//admin" is
// "/admin"); a trailing "/" stays. It rejects with ErrBadPath: a path not starting with '/'; '#' raw or encoded; a
// raw '\' or '?' (the query is not part of the path; "%3F" is fine); NUL and other control bytes raw or encoded;
// invalid percent-encoding; and "..;" / ".;" segments (which some servers treat as dot segments). A path that
// needs no change is returned as is in all three forms, without allocating.
func CanonicalPath(escaped string) (Path, error) {
	if escaped == "" {
		return Path{Escaped: "/", Decoded: "/", Match: "/"}, nil
	}
	if escaped[0] != '/' {
		return Path{}, ErrBadPath
	}
	if isCanonical(escaped) {
		return Path{Escaped: escaped, Decoded: escaped, Match: escaped}, nil
	}
	return canonicalize(escaped)
}

// Byte classes of an escaped path.
const (
	classEncode uint8 = iota // allowed, but must be percent-encoded in the output
	classRaw                 // allowed raw: unreserved, sub-delims, ':', '@', '/'
	classReject              // never allowed raw
)

// pathClass classifies a byte. Percent signs are handled by the caller.
func pathClass(c byte) uint8 {
	switch {
	case c < 0x20 || c == 0x7f || c == '#' || c == '?' || c == '\\':
		return classReject
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return classRaw
	}
	switch c {
	case '-', '.', '_', '~', // unreserved
		'!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', // sub-delims
		':', '@', '/':
		return classRaw
	}
	return classEncode
}

// isUnreserved reports whether c is an RFC 3986 unreserved character, whose percent-encoding is equivalent to it.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// isCanonical reports whether p (starting with '/') is already canonical in all three forms: only raw-allowed bytes
// other than ';', no empty segment but a trailing one, and no segment that is or looks like a dot segment.
func isCanonical(p string) bool {
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			if p[i] == ';' || pathClass(p[i]) != classRaw {
				return false
			}
			continue
		}
		if i == segStart && i < len(p) { // "//"
			return false
		}
		if dotSegment(p[segStart:i]) != notDot {
			return false
		}
		segStart = i + 1
	}
	return true
}

// Kinds of decoded path segment.
const (
	notDot   = iota
	dotOne   // "."
	dotTwo   // ".."
	dotParam // ".;..." or "..;...": treated as a dot segment by some servers, so rejected
)

func dotSegment(seg string) int {
	switch {
	case seg == ".":
		return dotOne
	case seg == "..":
		return dotTwo
	case strings.HasPrefix(seg, ".;"), strings.HasPrefix(seg, "..;"):
		return dotParam
	}
	return notDot
}

// segment is one path segment in the three forms, and whether it has an encoded '/' or '\\'.
type segment struct {
	esc, dec, match string
	slash           bool
}

// canonicalize is the slow path of CanonicalPath: normalise every segment's escaping, then remove dot segments and
// empty ones.
func canonicalize(p string) (Path, error) {
	// The output stack of segments; RFC 3986 §5.2.4 expressed on whole segments.
	out := make([]segment, 0, strings.Count(p, "/"))
	var esc, dec, match strings.Builder
	rest := p[1:]
	for {
		raw, next, more := strings.Cut(rest, "/")
		esc.Reset()
		dec.Reset()
		match.Reset()
		slash, err := normalizeSegment(raw, &esc, &dec, &match)
		if err != nil {
			return Path{}, err
		}
		seg := segment{esc: esc.String(), dec: dec.String(), match: match.String(), slash: slash}
		switch dotSegment(seg.dec) {
		case dotParam:
			return Path{}, ErrBadPath
		case dotOne:
			if !more { // "/a/." is "/a/"
				out = append(out, segment{})
			}
		case dotTwo:
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if !more { // "/a/b/.." is "/a/"
				out = append(out, segment{})
			}
		default:
			if seg.esc != "" || !more { // "//" is "/"; a trailing "/" stays
				out = append(out, seg)
			}
		}
		if !more {
			break
		}
		rest = next
	}
	esc.Reset()
	dec.Reset()
	match.Reset()
	// Only the segments that remain count: "/%2F/.." is "/", which every backend reads alike.
	encodedSlash := false
	for i, s := range out {
		encodedSlash = encodedSlash || s.slash
		esc.WriteByte('/')
		esc.WriteString(s.esc)
		dec.WriteByte('/')
		dec.WriteString(s.dec)
		// A segment that was only parameters (";x") is empty once they are removed; a backend that strips them
		// merges the slashes around it, so Match does too.
		if s.match != "" || i == len(out)-1 {
			match.WriteByte('/')
			match.WriteString(s.match)
		}
	}
	return Path{Escaped: esc.String(), Decoded: dec.String(), Match: match.String(), EncodedSlash: encodedSlash}, nil
}

// normalizeSegment writes the canonical escaped, the decoded and the match form of one segment (which contains no
// '/'), and reports whether it holds an encoded slash or backslash.
func normalizeSegment(raw string, esc, dec, match *strings.Builder) (encodedSlash bool, err error) {
	const hex = "0123456789ABCDEF"
	inParams := false // past the segment's first raw ';': the rest is parameters, left out of the match form
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) {
				return false, ErrBadPath
			}
			hi, ok1 := unhex(raw[i+1])
			lo, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return false, ErrBadPath
			}
			i += 2
			b := hi<<4 | lo
			switch {
			case b == '/' || b == '\\':
				encodedSlash = true
			case b != '?' && pathClass(b) == classReject:
				// An encoded '?' is data; every other byte that is rejected raw is rejected encoded too.
				return false, ErrBadPath
			}
			dec.WriteByte(b)
			if isUnreserved(b) {
				esc.WriteByte(b)
				if !inParams {
					match.WriteByte(b)
				}
				continue
			}
			enc := [3]byte{'%', hex[b>>4], hex[b&0xf]}
			esc.Write(enc[:])
			if !inParams {
				if encodedSlash && (b == '/' || b == '\\') {
					match.Write(enc[:]) // never a separator in the match form
				} else {
					match.WriteByte(b)
				}
			}
			continue
		}
		switch pathClass(c) {
		case classReject:
			return false, ErrBadPath
		case classRaw:
			esc.WriteByte(c)
		default:
			esc.WriteByte('%')
			esc.WriteByte(hex[c>>4])
			esc.WriteByte(hex[c&0xf])
		}
		dec.WriteByte(c)
		if c == ';' {
			inParams = true // an encoded ";" ("%3B") is data and does not start parameters
		}
		if !inParams {
			match.WriteByte(c)
		}
	}
	return encodedSlash, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
