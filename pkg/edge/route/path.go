package route

import (
	"errors"
	"strings"
)

// ErrBadPath rejects a request path that kedge will not route: the answer is 400.
var ErrBadPath = errors.New("route: ambiguous or malformed request path")

// CanonicalPath returns the one canonical form of a request path that kedge routes, authorizes and forwards.
//
// Input is the request's escaped path (r.URL.EscapedPath() or RawPath); "" counts as "/". It removes dot segments
// (RFC 3986 §5.2.4), also when they are percent-encoded ("%2e%2E"), and merges nothing else: "//" and a trailing
// "/" stay. It rejects with ErrBadPath: a path not starting with '/'; '#' and '\' raw or encoded; a raw '?' (the
// query is not part of the path; "%3F" is fine); an encoded '/' ("%2F"); NUL and other control bytes raw or
// encoded; invalid percent-encoding; and "..;" / ".;" segments (which some servers treat as dot segments).
//
// canonicalEscaped is valid for URL.RawPath and is what the backend must receive: percent-encodings of unreserved
// characters are decoded, all others are upper-case, and bytes that may not appear raw in a path are encoded.
// decoded is its percent-decoding, the form routes and authorization match against. A path that needs none of
// this is returned as is, without allocating.
func CanonicalPath(escaped string) (canonicalEscaped, decoded string, err error) {
	if escaped == "" {
		return "/", "/", nil
	}
	if escaped[0] != '/' {
		return "", "", ErrBadPath
	}
	if isCanonical(escaped) {
		return escaped, escaped, nil
	}
	return canonicalize(escaped)
}

// Byte classes of an escaped path.
const (
	classEncode uint8 = iota // allowed, but must be percent-encoded in the output
	classRaw                 // allowed raw: unreserved, sub-delims, ':', '@', '/'
	classReject              // never allowed, raw or encoded
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

// isCanonical reports whether p (starting with '/') is already canonical: only raw-allowed bytes and no segment
// that is or looks like a dot segment.
func isCanonical(p string) bool {
	segStart := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			if pathClass(p[i]) != classRaw {
				return false
			}
			continue
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

// segment is one path segment in both forms.
type segment struct{ esc, dec string }

// canonicalize is the slow path of CanonicalPath: normalise every segment's escaping, then remove dot segments.
func canonicalize(p string) (string, string, error) {
	// The output stack of segments; RFC 3986 §5.2.4 expressed on whole segments.
	out := make([]segment, 0, strings.Count(p, "/"))
	var esc, dec strings.Builder
	rest := p[1:]
	for {
		raw, next, more := strings.Cut(rest, "/")
		esc.Reset()
		dec.Reset()
		if err := normalizeSegment(raw, &esc, &dec); err != nil {
			return "", "", err
		}
		seg := segment{esc: esc.String(), dec: dec.String()}
		switch dotSegment(seg.dec) {
		case dotParam:
			return "", "", ErrBadPath
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
			out = append(out, seg)
		}
		if !more {
			break
		}
		rest = next
	}
	esc.Reset()
	dec.Reset()
	for _, s := range out {
		esc.WriteByte('/')
		esc.WriteString(s.esc)
		dec.WriteByte('/')
		dec.WriteString(s.dec)
	}
	return esc.String(), dec.String(), nil
}

// normalizeSegment writes the canonical escaped and the decoded form of one segment (which contains no '/').
func normalizeSegment(raw string, esc, dec *strings.Builder) error {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '%' {
			if i+2 >= len(raw) {
				return ErrBadPath
			}
			hi, ok1 := unhex(raw[i+1])
			lo, ok2 := unhex(raw[i+2])
			if !ok1 || !ok2 {
				return ErrBadPath
			}
			i += 2
			b := hi<<4 | lo
			// An encoded '?' is data; every other byte that is rejected raw is rejected encoded too, and so is '/'.
			if b == '/' || b != '?' && pathClass(b) == classReject {
				return ErrBadPath
			}
			dec.WriteByte(b)
			if isUnreserved(b) {
				esc.WriteByte(b)
			} else {
				esc.WriteByte('%')
				esc.WriteByte(hex[b>>4])
				esc.WriteByte(hex[b&0xf])
			}
			continue
		}
		switch pathClass(c) {
		case classReject:
			return ErrBadPath
		case classRaw:
			esc.WriteByte(c)
		default:
			esc.WriteByte('%')
			esc.WriteByte(hex[c>>4])
			esc.WriteByte(hex[c&0xf])
		}
		dec.WriteByte(c)
	}
	return nil
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
