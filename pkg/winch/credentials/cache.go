package credentials

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// cacheVersion is the version of the token cache file format.
const cacheVersion = 1

// maxCacheSize bounds what is read from a token cache file; real ones are a few KiB. It is larger than anything
// encode can produce from fields within their limits, so that every file winch writes can be read back.
const maxCacheSize = 256 << 10

// maxNameLen bounds the issuer and client ID recorded in a cache file.
const maxNameLen = 4 << 10

// maxTokenLen bounds a cached token; longer ones are treated as corrupt.
const maxTokenLen = 16 << 10

// tokenCache is the content of an OIDC source's cache file. Issuer and ClientID tie it to the source's
// configuration: a file written for another provider or client is ignored.
type tokenCache struct {
	Version      int    `json:"version"`
	Issuer       string `json:"issuer"`
	ClientID     string `json:"client_id"`
	IDToken      string `json:"id_token,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// errCorruptCache wraps every reason a cache file is not usable.
var errCorruptCache = errors.New("corrupt token cache")

// decodeTokenCache parses a cache file strictly: one JSON object of the current version, no unknown fields, and
// tokens that look like tokens (an ID token is a compact JWS; a refresh token is printable ASCII), so that a
// truncated or edited file never yields a partial token.
func decodeTokenCache(data []byte) (*tokenCache, error) {
	if len(data) > maxCacheSize {
		return nil, fmt.Errorf("%w: %d bytes", errCorruptCache, len(data))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c tokenCache
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", errCorruptCache, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: data after the JSON object", errCorruptCache)
	}
	switch {
	case c.Version != cacheVersion:
		return nil, fmt.Errorf("%w: version %d, want %d", errCorruptCache, c.Version, cacheVersion)
	case c.IDToken != "" && !isCompactJWS(c.IDToken):
		return nil, fmt.Errorf("%w: id_token is not a JWT", errCorruptCache)
	case c.RefreshToken != "" && !isTokenString(c.RefreshToken):
		return nil, fmt.Errorf("%w: refresh_token has characters a token cannot have", errCorruptCache)
	case len(c.Issuer) > maxNameLen || len(c.ClientID) > maxNameLen:
		return nil, fmt.Errorf("%w: issuer or client_id too long", errCorruptCache)
	case c.IDToken == "" && c.RefreshToken == "":
		return nil, fmt.Errorf("%w: no tokens", errCorruptCache)
	}
	return &c, nil
}

// encode is the inverse of decodeTokenCache.
func (c *tokenCache) encode() ([]byte, error) {
	c.Version = cacheVersion
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(c); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// isCompactJWS reports whether s has the shape header.payload.signature of base64url segments.
func isCompactJWS(s string) bool {
	if len(s) > maxTokenLen {
		return false
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return false
	}
	for _, p := range parts {
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// isTokenString reports whether s is a plausible OAuth2 token: printable ASCII without spaces (RFC 6749 VSCHAR).
func isTokenString(s string) bool {
	if len(s) > maxTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// readCache reads and decodes the cache file at path without following a symlink. A missing file is (nil, nil).
func readCache(path string) (*tokenCache, error) {
	f, err := openNoFollow(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading token cache: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading token cache: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("reading token cache: %s is not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCacheSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading token cache: %w", err)
	}
	return decodeTokenCache(data)
}

// writeCache replaces the cache file at path atomically: a 0600 temporary file in the same directory, synced, then
// renamed over it. The directory is created 0700 (and tightened to 0700 if it is wider); a symlink in place of the
// file or the directory is refused.
func writeCache(path string, c *tokenCache) error {
	data, err := c.encode()
	if err != nil {
		return fmt.Errorf("encoding token cache: %w", err)
	}
	dir := filepath.Dir(path)
	if err := ensurePrivateDir(dir); err != nil {
		return err
	}
	if info, err := os.Lstat(path); err == nil && !info.Mode().IsRegular() {
		return fmt.Errorf("writing token cache: %s is not a regular file (symlinks are refused)", path)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp") // CreateTemp makes the file 0600
	if err != nil {
		return fmt.Errorf("writing token cache: %w", err)
	}
	done := false
	defer func() {
		if !done {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("writing token cache: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("writing token cache: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing token cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing token cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing token cache: %w", err)
	}
	done = true
	return nil
}

// ensurePrivateDir creates dir (and its parents) 0700 and makes sure it is a real directory only its owner can
// enter.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating token directory: %w", err)
	}
	info, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("creating token directory: %w", err)
	}
	if !info.IsDir() {
		return fmt.Errorf("token directory %s is not a directory (symlinks are refused)", dir)
	}
	if info.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("token directory %s is open to other users and cannot be made private: %w", dir, err)
		}
	}
	return nil
}

// removeCache deletes the cache file at path (a symlink itself, never its target). A missing file is no error.
func removeCache(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing token cache: %w", err)
	}
	return nil
}
