// Package oidcissuer is an in-process OpenID Connect issuer for tests: it serves a discovery document and a JWKS over
// HTTP on 127.0.0.1 and signs ID tokens with keys made in the test, including deliberately broken ones (unknown key,
// alg none, HS256 with the public key, forged headers). It is for tests only.
package oidcissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Paths served by the issuer.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	KeysPath      = "/keys"
)

// signingKey is a private key with the kid and alg it is published under.
type signingKey struct {
	kid  string
	alg  string // the JWK "alg" published for it; "" for RSA keys, which sign RS* and PS*
	priv crypto.Signer
}

// Issuer is a running test issuer. Its methods are safe for concurrent use.
type Issuer struct {
	srv *httptest.Server

	mu         sync.Mutex    // guards the fields below
	current    *signingKey   // RSA key used by default
	ec         *signingKey   // P-256 key used for ES256
	published  []*signingKey // keys served at /keys
	unknownRSA *signingKey   // never published; made on first use
	unknownEC  *signingKey
	nextKid    int
	down       bool

	keyRequests       atomic.Int64
	discoveryRequests atomic.Int64
}

// New starts an issuer on 127.0.0.1 with one RSA (RS256) and one P-256 (ES256) key published. It stops when the test
// ends.
func New(t testing.TB) *Issuer {
	t.Helper()
	i := &Issuer{}
	i.current = i.newKey(t, "")
	i.ec = i.newKey(t, "ES256")
	i.published = []*signingKey{i.current, i.ec}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DiscoveryPath, i.serveDiscovery)
	mux.HandleFunc("GET "+KeysPath, i.serveKeys)
	i.srv = httptest.NewServer(mux)
	t.Cleanup(i.srv.Close)
	return i
}

// URL is the issuer URL ("http://127.0.0.1:port"), also the iss of the tokens Claims makes.
func (i *Issuer) URL() string { return i.srv.URL }

// HTTPClient returns a client for the issuer whose idle connections close with the issuer.
func (i *Issuer) HTTPClient() *http.Client { return i.srv.Client() }

// Requests counts the JWKS fetches the issuer has answered (or refused while down).
func (i *Issuer) Requests() int { return int(i.keyRequests.Load()) }

// DiscoveryRequests counts requests for the discovery document.
func (i *Issuer) DiscoveryRequests() int { return int(i.discoveryRequests.Load()) }

// SetDown makes discovery and JWKS answer 503 (down) or serve normally again.
func (i *Issuer) SetDown(down bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.down = down
}

// KeyID returns the kid of the current RSA key.
func (i *Issuer) KeyID() string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.current.kid
}

// RotateOption changes what RotateKey does.
type RotateOption func(*rotateOptions)

type rotateOptions struct{ dropOld bool }

// DropOldKeys removes every previously published RSA key from the JWKS when rotating.
func DropOldKeys() RotateOption { return func(o *rotateOptions) { o.dropOld = true } }

// RotateKey makes a new RSA key current and publishes it. Old keys stay published unless DropOldKeys is given. It
// returns the new key's kid.
func (i *Issuer) RotateKey(t testing.TB, opts ...RotateOption) string {
	t.Helper()
	var o rotateOptions
	for _, opt := range opts {
		opt(&o)
	}
	k := i.newKey(t, "")
	i.mu.Lock()
	defer i.mu.Unlock()
	if o.dropOld {
		i.published = []*signingKey{i.ec}
	}
	i.published = append(i.published, k)
	i.current = k
	return k.kid
}

// Claims returns a valid claim set for audience aud: iss, sub "user-1", aud, iat now and exp in one hour. Tests change
// or delete entries before Sign.
func (i *Issuer) Claims(aud string) map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": i.URL(),
		"sub": "user-1",
		"aud": aud,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

func (i *Issuer) newKey(t testing.TB, alg string) *signingKey {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatalf("oidcissuer: generating %s key: %v", alg, err)
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.nextKid++
	return &signingKey{kid: fmt.Sprintf("key-%d", i.nextKid), alg: alg, priv: priv}
}

func (i *Issuer) isDown() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.down
}

func (i *Issuer) serveDiscovery(w http.ResponseWriter, _ *http.Request) {
	i.discoveryRequests.Add(1)
	if i.isDown() {
		http.Error(w, "issuer down", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, map[string]any{
		"issuer":                                i.URL(),
		"jwks_uri":                              i.URL() + KeysPath,
		"authorization_endpoint":                i.URL() + "/auth",
		"token_endpoint":                        i.URL() + "/token",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256"},
	})
}

func (i *Issuer) serveKeys(w http.ResponseWriter, _ *http.Request) {
	i.keyRequests.Add(1)
	i.mu.Lock()
	down := i.down
	set := jose.JSONWebKeySet{}
	for _, k := range i.published {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: k.alg, Use: "sig"})
	}
	i.mu.Unlock()
	if down {
		http.Error(w, "issuer down", http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, set)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
