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
	{in: "/a//../b", esc: "/a/b", dec: "/a/b"}, // RFC 3986: ".." removes the empty segment
	{in: "//a//b", esc: "//a//b", dec: "//a//b"},
	{in: "/a/b/", esc: "/a/b/", dec: "/a/b/"},
	{in: "/a/..b/c...", esc: "/a/..b/c...", dec: "/a/..b/c..."},
	{in: "/a/.../b", esc: "/a/.../b", dec: "/a/.../b"},
	{in: "/%61dmin", esc: "/admin", dec: "/admin"},
	{in: "/a%20b", esc: "/a%20b", dec: "/a b"},
	{in: "/a b", esc: "/a%20b", dec: "/a b"},
	{in: "/a%3fb", esc: "/a%3Fb", dec: "/a?b"},
	{in: "/caf%c3%a9", esc: "/caf%C3%A9", dec: "/café"},
	{in: "/café", esc: "/caf%C3%A9", dec: "/café"},
	{in: "/a;b=c/d:e@f!$&'()*+,=~", esc: "/a;b=c/d:e@f!$&'()*+,=~", dec: "/a;b=c/d:e@f!$&'()*+,=~"},
	{in: "/a%2Bb", esc: "/a%2Bb", dec: "/a+b"},
	{in: "/a%25b", esc: "/a%25b", dec: "/a%b"},
	{in: "/[x]", esc: "/%5Bx%5D", dec: "/[x]"},
	// Rejected.
	{in: "a/b"},
	{in: "*"},
	{in: "/a/%2F/b"},
	{in: "/a%2fb"},
	{in: "/admin#/public"},
	{in: "/admin%23/public"},
	{in: "/a?b"},
	{in: "/a\\b"},
	{in: "/a%5Cb"},
	{in: "/a%5cb"},
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
}

func TestCanonicalPath(t *testing.T) {
	t.Parallel()
	for _, tt := range canonicalPathTests {
		esc, dec, err := CanonicalPath(tt.in)
		if tt.esc == "" {
			if !errors.Is(err, ErrBadPath) {
				t.Errorf("CanonicalPath(%q) = %q, %q, %v; want ErrBadPath", tt.in, esc, dec, err)
			}
			continue
		}
		if err != nil || esc != tt.esc || dec != tt.dec {
			t.Errorf("CanonicalPath(%q) = %q, %q, %v; want %q, %q", tt.in, esc, dec, err, tt.esc, tt.dec)
		}
	}
}

func TestCanonicalPathFastPathAllocs(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _, _ = CanonicalPath("/api/v1/users/42;v=1") }); n != 0 {
		t.Errorf("CanonicalPath of a canonical path: %v allocs, want 0", n)
	}
}

// removeDotSegments is RFC 3986 §5.2.4 written literally, as the reference for FuzzCanonicalPath.
func removeDotSegments(in string) string {
	var out string
	removeLast := func() {
		if i := strings.LastIndexByte(out, '/'); i >= 0 {
			out = out[:i]
		} else {
			out = ""
		}
	}
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			removeLast()
		case in == "/..":
			in = "/"
			removeLast()
		case in == "." || in == "..":
			in = ""
		default:
			start := 0
			if in[0] == '/' {
				start = 1
			}
			end := len(in)
			if i := strings.IndexByte(in[start:], '/'); i >= 0 {
				end = start + i
			}
			out += in[:end]
			in = in[end:]
		}
	}
	return out
}

func FuzzCanonicalPath(f *testing.F) {
	for _, tt := range canonicalPathTests {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		esc, dec, err := CanonicalPath(in)
		if err != nil {
			if !errors.Is(err, ErrBadPath) || esc != "" || dec != "" {
				t.Fatalf("CanonicalPath(%q) = %q, %q, %v", in, esc, dec, err)
			}
			return
		}
		esc2, dec2, err := CanonicalPath(esc)
		if err != nil || esc2 != esc || dec2 != dec {
			t.Fatalf("not idempotent: CanonicalPath(%q) = %q, %q; again: %q, %q, %v", in, esc, dec, esc2, dec2, err)
		}
		if u, err := url.PathUnescape(esc); err != nil || u != dec {
			t.Fatalf("CanonicalPath(%q): escaped %q decodes to %q (%v), decoded is %q", in, esc, u, err, dec)
		}
		if u := (&url.URL{Path: dec, RawPath: esc}); u.EscapedPath() != esc {
			t.Fatalf("CanonicalPath(%q): escaped %q is not kept as RawPath (%q)", in, esc, u.EscapedPath())
		}
		if !strings.HasPrefix(dec, "/") || strings.ContainsAny(dec, "#\\\x00") ||
			strings.Contains(strings.ToUpper(esc), "%2F") {
			t.Fatalf("CanonicalPath(%q) = %q, %q: forbidden content", in, esc, dec)
		}
		for seg := range strings.SplitSeq(dec, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("CanonicalPath(%q) = %q: dot segment left", in, dec)
			}
		}
		// The reference: decode everything, then remove dot segments as RFC 3986 says.
		if in == "" {
			in = "/"
		}
		ref, err := url.PathUnescape(in)
		if err != nil {
			t.Fatalf("CanonicalPath(%q) accepted what url.PathUnescape rejects: %v", in, err)
		}
		if want := removeDotSegments(ref); dec != want {
			t.Fatalf("CanonicalPath(%q) = %q; RFC 3986 reference %q", in, dec, want)
		}
		// Where no empty segment makes RFC 3986 and path.Clean differ, a backend that cleans sees the same path.
		if !strings.Contains(ref, "//") && path.Clean(dec) != path.Clean(ref) {
			t.Fatalf("CanonicalPath(%q) = %q; path.Clean reference %q", in, dec, path.Clean(ref))
		}
	})
}
