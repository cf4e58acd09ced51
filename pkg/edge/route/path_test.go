package route

import (
	"errors"
	"net/url"
	"path"
	"strings"
	"testing"
)

var canonicalPathTests = []struct {
	in       string
	esc, dec string // both empty: ErrBadPath
	match    string // "" means dec
	slash    bool   // EncodedSlash
}{
	{in: "/api/v1/users", esc: "/api/v1/users", dec: "/api/v1/users"},
	{in: "", esc: "/", dec: "/"},
	{in: "/", esc: "/", dec: "/"},
	{in: "/a/../b", esc: "/b", dec: "/b"},
	{in: "/a/%2e%2e/b", esc: "/b", dec: "/b"},
	{in: "/a/%2E./b", esc: "/b", dec: "/b"},
	{in: "/a/.%2e/b", esc: "/b", dec: "/b"},
	{in: "/a/./b", esc: "/a/b", dec: "/a/b"},
	{in: "/a/%2e/b", esc: "/a/b", dec: "/a/b"},
	{in: "/public/../admin", esc: "/admin", dec: "/admin"},
	{in: "/../../etc/passwd", esc: "/etc/passwd", dec: "/etc/passwd"},
	{in: "/a/..", esc: "/", dec: "/"},
	{in: "/..", esc: "/", dec: "/"},
	{in: "/.", esc: "/", dec: "/"},
	{in: "/a/b/..", esc: "/a/", dec: "/a/"},
	{in: "/a/.", esc: "/a/", dec: "/a/"},
	// Repeated slashes are merged, as nginx (merge_slashes), Python's http.server and path.Clean read them.
	{in: "//admin", esc: "/admin", dec: "/admin"},
	{in: "///admin//x", esc: "/admin/x", dec: "/admin/x"},
	{in: "//a//b", esc: "/a/b", dec: "/a/b"},
	{in: "/a//../b", esc: "/b", dec: "/b"},
	{in: "//", esc: "/", dec: "/"},
	{in: "/a//", esc: "/a/", dec: "/a/"},
	{in: "/a/b/", esc: "/a/b/", dec: "/a/b/"},
	{in: "/a/..b/c...", esc: "/a/..b/c...", dec: "/a/..b/c..."},
	{in: "/a/.../b", esc: "/a/.../b", dec: "/a/.../b"},
	{in: "/%61dmin", esc: "/admin", dec: "/admin"},
	{in: "/a%20b", esc: "/a%20b", dec: "/a b"},
	{in: "/a b", esc: "/a%20b", dec: "/a b"},
	{in: "/a%3fb", esc: "/a%3Fb", dec: "/a?b"},
	{in: "/caf%c3%a9", esc: "/caf%C3%A9", dec: "/café"},
	{in: "/café", esc: "/caf%C3%A9", dec: "/café"},
	{in: "/a%2Bb", esc: "/a%2Bb", dec: "/a+b"},
	{in: "/a%25b", esc: "/a%25b", dec: "/a%b"},
	{in: "/[x]", esc: "/%5Bx%5D", dec: "/[x]"},
	// Segment parameters are forwarded, and left out of the form routes match.
	{in: "/a;b=c/d:e@f!$&'()*+,=~", esc: "/a;b=c/d:e@f!$&'()*+,=~", dec: "/a;b=c/d:e@f!$&'()*+,=~", match: "/a/d:e@f!$&'()*+,=~"},
	{in: "/admin;jsessionid=1", esc: "/admin;jsessionid=1", dec: "/admin;jsessionid=1", match: "/admin"},
	{in: "/admin;", esc: "/admin;", dec: "/admin;", match: "/admin"},
	{in: "/;x/admin", esc: "/;x/admin", dec: "/;x/admin", match: "/admin"},
	{in: "/a/;x/b;y/", esc: "/a/;x/b;y/", dec: "/a/;x/b;y/", match: "/a/b/"},
	{in: "/a/;x", esc: "/a/;x", dec: "/a/;x", match: "/a/"},
	{in: "/public;x/../admin", esc: "/admin", dec: "/admin"},
	{in: "/a%3Bb", esc: "/a%3Bb", dec: "/a;b", match: "/a;b"}, // an encoded ';' is data
	// Encoded slashes and backslashes: kept encoded, never a separator for routing, flagged for the route to allow.
	{in: "/a/%2F/b", esc: "/a/%2F/b", dec: "/a///b", match: "/a/%2F/b", slash: true},
	{in: "/a%2fb", esc: "/a%2Fb", dec: "/a/b", match: "/a%2Fb", slash: true},
	{in: "/a%5Cb", esc: "/a%5Cb", dec: "/a\\b", match: "/a%5Cb", slash: true},
	{in: "/a%5cb;x", esc: "/a%5Cb;x", dec: "/a\\b;x", match: "/a%5Cb", slash: true},
	{in: "/x/..%2F..%2Fadmin", esc: "/x/..%2F..%2Fadmin", dec: "/x/../../admin", match: "/x/..%2F..%2Fadmin", slash: true},
	// Rejected.
	{in: "a/b"},
	{in: "*"},
	{in: "/admin#/public"},
	{in: "/admin%23/public"},
	{in: "/a?b"},
	{in: "/a\\b"},
	{in: "/a%00b"},
	{in: "/a\x00b"},
	{in: "/a%0Ab"},
	{in: "/a\nb"},
	{in: "/a\x7f"},
	{in: "/a%7F"},
	{in: "/%zz"},
	{in: "/%4"},
	{in: "/%"},
	{in: "/a/%"},
	{in: "/..;/admin"},
	{in: "/.;/admin"},
	{in: "/%2e%2e;x/admin"},
	{in: "/a/..;x"},
}

func TestCanonicalPath(t *testing.T) {
	t.Parallel()
	for _, tt := range canonicalPathTests {
		p, err := CanonicalPath(tt.in)
		if tt.esc == "" {
			if !errors.Is(err, ErrBadPath) {
				t.Errorf("CanonicalPath(%q) = %+v, %v; want ErrBadPath", tt.in, p, err)
			}
			continue
		}
		want := Path{Escaped: tt.esc, Decoded: tt.dec, Match: tt.match, EncodedSlash: tt.slash}
		if want.Match == "" {
			want.Match = tt.dec
		}
		if err != nil || p != want {
			t.Errorf("CanonicalPath(%q) = %+v, %v; want %+v", tt.in, p, err, want)
		}
	}
}

func TestCanonicalPathFastPathAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = CanonicalPath("/api/v1/users/42:x@y") }); n != 0 {
		t.Errorf("CanonicalPath of a canonical path: %v allocs, want 0", n)
	}
}

// cleanKeepSlash is path.Clean keeping a trailing slash (or what stands for one: a final "." or ".." segment),
// the reference reading of a decoded path for FuzzCanonicalPath.
func cleanKeepSlash(p string) string {
	c := path.Clean(p)
	if c != "/" && (strings.HasSuffix(p, "/") || strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")) {
		c += "/"
	}
	return c
}

// matchReference derives the match form from the escaped form independently: cut each segment at its first raw ';',
// decode it except for encoded slashes and backslashes, and drop the segments that leaves empty.
func matchReference(esc string) string {
	var segs []string
	parts := strings.Split(esc[1:], "/")
	for i, seg := range parts {
		seg, _, _ = strings.Cut(seg, ";")
		seg = strings.NewReplacer("%2F", "\x00F", "%5C", "\x00C").Replace(seg)
		dec, err := url.PathUnescape(seg)
		if err != nil {
			return "unescape error: " + err.Error()
		}
		dec = strings.NewReplacer("\x00F", "%2F", "\x00C", "%5C").Replace(dec)
		if dec != "" || i == len(parts)-1 {
			segs = append(segs, dec)
		}
	}
	return "/" + strings.Join(segs, "/")
}

func FuzzCanonicalPath(f *testing.F) {
	for _, tt := range canonicalPathTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := CanonicalPath(in)
		if err != nil {
			if !errors.Is(err, ErrBadPath) || p != (Path{}) {
				t.Fatalf("CanonicalPath(%q) = %+v, %v", in, p, err)
			}
			return
		}
		esc, dec := p.Escaped, p.Decoded
		p2, err := CanonicalPath(esc)
		if err != nil || p2 != p {
			t.Fatalf("not idempotent: CanonicalPath(%q) = %+v; again: %+v, %v", in, p, p2, err)
		}
		if u, err := url.PathUnescape(esc); err != nil || u != dec {
			t.Fatalf("CanonicalPath(%q): escaped %q decodes to %q (%v), decoded is %q", in, esc, u, err, dec)
		}
		if u := (&url.URL{Path: dec, RawPath: esc}); u.EscapedPath() != esc {
			t.Fatalf("CanonicalPath(%q): escaped %q is not kept as RawPath (%q)", in, esc, u.EscapedPath())
		}
		upper := strings.ToUpper(esc)
		if slash := strings.Contains(upper, "%2F") || strings.Contains(upper, "%5C"); slash != p.EncodedSlash {
			t.Fatalf("CanonicalPath(%q) = %+v: EncodedSlash wrong", in, p)
		}
		if !strings.HasPrefix(dec, "/") || strings.ContainsAny(dec, "#\x00") || strings.Contains(esc, "//") ||
			strings.Contains(p.Match, "//") || strings.Contains(p.Match, ";") && !strings.Contains(upper, "%3B") {
			t.Fatalf("CanonicalPath(%q) = %+v: forbidden content", in, p)
		}
		for seg := range strings.SplitSeq(esc, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("CanonicalPath(%q) = %q: dot segment left", in, esc)
			}
		}
		if want := matchReference(esc); p.Match != want {
			t.Fatalf("CanonicalPath(%q) = %+v; match reference %q", in, p, want)
		}
		if p.EncodedSlash {
			return // a backend may read encoded slashes either way: only routes that opt in take these
		}
		// The reference: decode everything, then clean as path.Clean (and nginx, and Python's http.server) would.
		if in == "" {
			in = "/"
		}
		ref, err := url.PathUnescape(in)
		if err != nil {
			t.Fatalf("CanonicalPath(%q) accepted what url.PathUnescape rejects: %v", in, err)
		}
		if want := cleanKeepSlash(ref); dec != want {
			t.Fatalf("CanonicalPath(%q) = %q; path.Clean reference %q", in, dec, want)
		}
	})
}
