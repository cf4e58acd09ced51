package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const issuer = "https://kedge.example.com"

// writeKey writes a PEM private key to dir/name and returns its path.
func writeKey(t testing.TB, dir, name string, key any, typ string) string {
	t.Helper()
	var der []byte
	var err error
	switch typ {
	case "PRIVATE KEY":
		der, err = x509.MarshalPKCS8PrivateKey(key)
	case "EC PRIVATE KEY":
		der, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	case "RSA PRIVATE KEY":
		der = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil { // replaced whole, as a secret mount or an editor does
		t.Fatal(err)
	}
	return path
}

func ecKey(t testing.TB, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaKey(t testing.TB, bits int) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// verify checks token as a backend would: go-oidc against the signer's JWKS, audience and issuer.
func verify(t *testing.T, s *Signer, now time.Time, audience, token string) Claims {
	t.Helper()
	jwks, err := s.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	var keys oidc.StaticKeySet
	for _, k := range set.Keys {
		keys.PublicKeys = append(keys.PublicKeys, k.Key)
	}
	v := oidc.NewVerifier(issuer, &keys, &oidc.Config{ClientID: audience, SupportedSigningAlgs: []string{"ES256", "RS256"},
		Now: func() time.Time { return now }})
	tok, err := v.Verify(context.Background(), token)
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	var c Claims
	if err := tok.Claims(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTokensVerify(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name    string
		path    string
		id      authn.Identity
		wantSub string
		wantAlg string
	}{
		{"OIDC caller, EC PKCS#8", writeKey(t, dir, "ec8.pem", ecKey(t, elliptic.P256()), "PRIVATE KEY"),
			authn.Identity{Method: authn.MethodOIDC, Subject: "alice", Email: "alice@example.com", Permissions: []string{"deploy", "read"}},
			"alice", "ES256"},
		{"certificate caller, SEC 1", writeKey(t, dir, "ec1.pem", ecKey(t, elliptic.P256()), "EC PRIVATE KEY"),
			authn.Identity{Method: authn.MethodClientCert, Subject: "robot", CertNames: []string{"robot", "robot.example.com"}},
			"robot", "ES256"},
		{"static token with a certificate, RSA PKCS#1", writeKey(t, dir, "rsa1.pem", rsaKey(t, 2048), "RSA PRIVATE KEY"),
			authn.Identity{Method: authn.MethodStaticToken, CertNames: []string{"spiffe://x/y"}}, "spiffe://x/y", "RS256"},
		{"static token, RSA PKCS#8", writeKey(t, dir, "rsa8.pem", rsaKey(t, 2048), "PRIVATE KEY"),
			authn.Identity{Method: authn.MethodStaticToken}, "static-token", "RS256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := &clock{t: time.Unix(1_800_000_000, 0)}
			s, err := New(Config{KeyFile: tt.path, Issuer: issuer, Now: c.now})
			if err != nil {
				t.Fatal(err)
			}
			token := s.Assert(&tt.id, "web")
			claims := verify(t, s, c.now(), "web", token)
			if claims.Subject != tt.wantSub || claims.Audience != "web" || claims.Issuer != issuer {
				t.Errorf("claims = %+v, want sub %q aud web", claims, tt.wantSub)
			}
			if claims.Expiry-claims.IssuedAt != int64(Lifetime/time.Second) || claims.IssuedAt != c.now().Unix() {
				t.Errorf("iat %d exp %d, want exp = iat + 5m and iat = now", claims.IssuedAt, claims.Expiry)
			}
			if !slices.Equal(claims.Perms, tt.id.Permissions) || claims.Perms == nil {
				t.Errorf("perms = %#v, want %q (never null)", claims.Perms, tt.id.Permissions)
			}
			if len(claims.ID) < 20 {
				t.Errorf("jti %q is not 128 random bits", claims.ID)
			}
			hdr, _, _ := strings.Cut(token, ".")
			if !strings.Contains(decodeSegment(t, hdr), `"alg":"`+tt.wantAlg+`"`) || !strings.Contains(decodeSegment(t, hdr), `"kid":"`+s.KeyID()+`"`) {
				t.Errorf("header %s, want alg %s and kid %s", decodeSegment(t, hdr), tt.wantAlg, s.KeyID())
			}
			// Another backend's verifier refuses it.
			jwks, _ := s.JWKS()
			var set jose.JSONWebKeySet
			_ = json.Unmarshal(jwks, &set)
			v := oidc.NewVerifier(issuer, &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{set.Keys[0].Key}},
				&oidc.Config{ClientID: "api", SupportedSigningAlgs: []string{"ES256", "RS256"}, Now: c.now})
			if _, err := v.Verify(context.Background(), token); err == nil {
				t.Error("token for web verified for audience api")
			}
		})
	}
}

func decodeSegment(t *testing.T, seg string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAnonymousGetsNothing(t *testing.T) {
	t.Parallel()
	s, err := New(Config{KeyFile: writeKey(t, t.TempDir(), "k.pem", ecKey(t, elliptic.P256()), "PRIVATE KEY"), Issuer: issuer})
	if err != nil {
		t.Fatal(err)
	}
	if tok := s.Assert(&authn.Identity{}, "web"); tok != "" {
		t.Errorf("anonymous caller got a token: %q", tok)
	}
}

func TestCacheWindow(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	s, err := New(Config{KeyFile: writeKey(t, t.TempDir(), "k.pem", ecKey(t, elliptic.P256()), "PRIVATE KEY"), Issuer: issuer, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	alice := &authn.Identity{Method: authn.MethodOIDC, Subject: "alice", Permissions: []string{"a"}}
	first := s.Assert(alice, "web")
	c.add(CacheWindow - time.Second)
	if again := s.Assert(alice, "web"); again != first {
		t.Error("token not reused within the cache window")
	}
	if other := s.Assert(alice, "api"); other == first {
		t.Error("one token for two audiences")
	}
	if other := s.Assert(&authn.Identity{Method: authn.MethodOIDC, Subject: "alice", Permissions: []string{"a", "b"}}, "web"); other == first {
		t.Error("one token for two permission sets")
	}
	c.add(time.Second)
	later := s.Assert(alice, "web")
	if later == first {
		t.Error("token reused after the cache window")
	}
	if cl := verify(t, s, c.now(), "web", later); cl.IssuedAt != c.now().Unix() {
		t.Errorf("iat = %d, want now %d", cl.IssuedAt, c.now().Unix())
	}
}

func TestKeyReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := writeKey(t, dir, "k.pem", ecKey(t, elliptic.P256()), "PRIVATE KEY")
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	s, err := New(Config{KeyFile: path, Issuer: issuer, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-s.Ready()

	alice := &authn.Identity{Method: authn.MethodOIDC, Subject: "alice"}
	before, oldKID := s.Assert(alice, "web"), s.KeyID()

	// A broken key file is refused and the key stays.
	if err := os.WriteFile(path, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Reload()
	if s.KeyID() != oldKID {
		t.Fatal("a broken key file replaced the key")
	}

	writeKey(t, dir, "k.pem", rsaKey(t, 2048), "RSA PRIVATE KEY")
	testutil.Eventually(t, "the new key is picked up from the file", func() bool { return s.KeyID() != oldKID })
	after := s.Assert(alice, "web")
	if after == before {
		t.Error("cached token of the old key served after the rotation")
	}
	// Both verify against the JWKS for a token lifetime; then the old key is gone.
	verify(t, s, c.now(), "web", before)
	verify(t, s, c.now(), "web", after)
	c.add(Lifetime + time.Second)
	if jwks, _ := s.JWKS(); strings.Contains(string(jwks), oldKID) {
		t.Error("the previous key is still published a token lifetime after the rotation")
	}
}

func TestParseKeyErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name, path, want string
	}{
		{"P-384", writeKey(t, dir, "p384.pem", ecKey(t, elliptic.P384()), "PRIVATE KEY"), "only P-256"},
		{"small RSA", writeKey(t, dir, "rsa1024.pem", rsaKey(t, 1024), "RSA PRIVATE KEY"), "at least 2048"},
		{"no PEM", filepath.Join(dir, "empty.pem"), "no PEM private key"},
		{"missing", filepath.Join(dir, "missing.pem"), "no such file"},
	}
	if err := os.WriteFile(filepath.Join(dir, "empty.pem"), []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		_, err := LoadKey(tt.path)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "missing.pem") && tt.name == "missing" {
			t.Errorf("%s: error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestJWKSHandler(t *testing.T) {
	t.Parallel()
	s, err := New(Config{KeyFile: writeKey(t, t.TempDir(), "k.pem", ecKey(t, elliptic.P256()), "EC PRIVATE KEY"), Issuer: issuer})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	res, err := http.Get(srv.URL + PathJWKS)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil || len(set.Keys) != 1 {
		t.Fatalf("JWKS %s: %v", body, err)
	}
	k := set.Keys[0]
	if !k.IsPublic() || k.KeyID != s.KeyID() || k.Algorithm != "ES256" || k.Use != "sig" {
		t.Errorf("key %+v: want the public ES256 signing key %s", k, s.KeyID())
	}
	if strings.Contains(string(body), `"d"`) {
		t.Error("JWKS contains private key material")
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/jwk-set+json" {
		t.Errorf("Content-Type %q", ct)
	}
	res, err = http.Post(srv.URL+PathJWKS, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", res.StatusCode)
	}
}

func TestCachedAssertDoesNotAllocate(t *testing.T) {
	s, err := New(Config{KeyFile: writeKey(t, t.TempDir(), "k.pem", ecKey(t, elliptic.P256()), "PRIVATE KEY"), Issuer: issuer})
	if err != nil {
		t.Fatal(err)
	}
	id := &authn.Identity{Method: authn.MethodOIDC, Subject: "alice", Email: "alice@example.com", Permissions: []string{"deploy"}}
	s.Assert(id, "web")
	if n := testing.AllocsPerRun(1000, func() { s.Assert(id, "web") }); n != 0 {
		t.Errorf("a cached Assert allocates %v times, want 0", n)
	}
}

// BenchmarkAssert measures the per-request cost: "cached" is one caller's steady state, "sign" a cache miss (a new
// caller, or the first request after CacheWindow).
func BenchmarkAssert(b *testing.B) {
	for _, kt := range []struct {
		name string
		key  any
		typ  string
	}{{"ES256", ecKey(b, elliptic.P256()), "PRIVATE KEY"}, {"RS256", rsaKey(b, 2048), "RSA PRIVATE KEY"}} {
		s, err := New(Config{KeyFile: writeKey(b, b.TempDir(), "k.pem", kt.key, kt.typ), Issuer: issuer})
		if err != nil {
			b.Fatal(err)
		}
		id := &authn.Identity{Method: authn.MethodOIDC, Subject: "alice", Email: "alice@example.com", Permissions: []string{"deploy"}}
		b.Run(kt.name+"/cached", func(b *testing.B) {
			b.ReportAllocs()
			s.Assert(id, "web")
			for b.Loop() {
				s.Assert(id, "web")
			}
		})
		b.Run(kt.name+"/sign", func(b *testing.B) {
			b.ReportAllocs()
			st := s.state.Load()
			for b.Loop() {
				if _, err := s.sign(st, id, "web", time.Now()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
