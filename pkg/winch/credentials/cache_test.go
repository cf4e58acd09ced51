package credentials

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testJWS = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJl"

func TestTokenCacheRoundTrip(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state", "tokens")
	path := filepath.Join(dir, "corp.json")
	in := &tokenCache{Issuer: "https://issuer.example.com", ClientID: "winch", IDToken: testJWS, RefreshToken: "rt/1+2=="}
	if err := writeCache(path, in); err != nil {
		t.Fatalf("writeCache: %v", err)
	}
	checkMode(t, path, 0o600)
	checkMode(t, dir, 0o700|os.ModeDir)
	out, err := readCache(path)
	if err != nil || out == nil || *out != *in {
		t.Fatalf("readCache = %+v, %v; want %+v", out, err, in)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries; want only the cache file (no temporary files left)", len(entries))
	}
	if c, err := readCache(filepath.Join(dir, "missing.json")); c != nil || err != nil {
		t.Errorf("readCache of a missing file = %+v, %v; want nil, nil", c, err)
	}
	if err := removeCache(path); err != nil {
		t.Fatalf("removeCache: %v", err)
	}
	if err := removeCache(path); err != nil {
		t.Errorf("removeCache of a missing file: %v", err)
	}
}

func TestTokenCacheTightensDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "tokens")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeCache(filepath.Join(dir, "x.json"), &tokenCache{RefreshToken: "rt"}); err != nil {
		t.Fatalf("writeCache: %v", err)
	}
	checkMode(t, dir, 0o700|os.ModeDir)
}

func TestTokenCacheRefusesSymlinks(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	target := filepath.Join(base, "target.json")
	if err := writeCache(target, &tokenCache{RefreshToken: "rt"}); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link.json")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if c, err := readCache(link); err == nil {
		t.Errorf("readCache through a symlink = %+v; want an error", c)
	}
	if err := writeCache(link, &tokenCache{RefreshToken: "other"}); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("writeCache over a symlink = %v; want refused", err)
	}
	linkDir := filepath.Join(base, "linkdir")
	if err := os.Symlink(base, linkDir); err != nil {
		t.Fatal(err)
	}
	if err := writeCache(filepath.Join(linkDir, "x.json"), &tokenCache{RefreshToken: "rt"}); err == nil {
		t.Errorf("writeCache into a symlinked directory succeeded")
	}
}

func TestDecodeTokenCache(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		data string
		ok   bool
	}{
		{"valid", `{"version":1,"issuer":"i","client_id":"c","id_token":"` + testJWS + `","refresh_token":"rt"}`, true},
		{"refresh only", `{"version":1,"issuer":"i","client_id":"c","refresh_token":"rt"}`, true},
		{"no tokens", `{"version":1,"issuer":"i","client_id":"c"}`, false},
		{"two objects", `{"version":1,"refresh_token":"a"}{"version":1,"refresh_token":"b"}`, false},
		{"id token with space", `{"version":1,"id_token":"a.b .c"}`, false},
		{"id token two parts", `{"version":1,"id_token":"aaa.bbb"}`, false},
		{"refresh token with newline", `{"version":1,"refresh_token":"rt\nX-Evil: 1"}`, false},
		{"null", `null`, false},
		{"array", `[]`, false},
		{"too big", `{"version":1,"refresh_token":"` + strings.Repeat("a", maxCacheSize) + `"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := decodeTokenCache([]byte(tt.data))
			if (err == nil) != tt.ok {
				t.Errorf("decodeTokenCache = %+v, %v; want ok=%v", c, err, tt.ok)
			}
		})
	}
}

func FuzzTokenCacheDecode(f *testing.F) {
	f.Add([]byte(`{"version":1,"issuer":"i","client_id":"c","id_token":"` + testJWS + `","refresh_token":"rt"}`))
	f.Add([]byte(`{"version":1,"refresh_token":"rt"}`))
	f.Add([]byte(`{"version":1,"id_token":"a.b.c"`))
	f.Add([]byte(`{"VERSION":1,"Refresh_Token":"rt","refresh_token":"x y"}`))
	f.Add([]byte("\xff\xfe"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeTokenCache(data)
		if err != nil {
			if c != nil {
				t.Fatalf("decode returned a cache with an error")
			}
			return
		}
		// Whatever decodes holds whole tokens only, and survives a round trip.
		if c.IDToken != "" && !isCompactJWS(c.IDToken) || c.RefreshToken != "" && !isTokenString(c.RefreshToken) {
			t.Fatalf("decoded a malformed token: %+v", c)
		}
		if c.IDToken == "" && c.RefreshToken == "" {
			t.Fatalf("decoded a cache without tokens")
		}
		b, err := c.encode()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		again, err := decodeTokenCache(b)
		if err != nil || *again != *c {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, c)
		}
	})
}
