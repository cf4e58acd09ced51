// Package identity signs the caller's identity for backends: a short-lived JWT (ES256 or RS256) that kedge adds to
// every proxied request that passed authentication (X-Kedge-Identity, or x-kedge-identity metadata on gRPC), so a
// backend learns who called it without seeing the caller's token. It also serves the public keys as a JWKS.
//
// The signing key comes from a PEM file that is watched and reloaded when it changes; after a rotation the previous
// public key stays in the JWKS for one token lifetime, so tokens signed just before still verify.
//
// Tokens are cached per caller, audience and key for CacheWindow: requests of one caller to one backend within that
// window carry the same token, with the same jti. The jti names a token, not a request; X-Kedge-Request-ID names the
// request.
package identity

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/shared/filewatch"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// Timing of the tokens.
const (
	// Lifetime is how long a token is valid: exp = iat + Lifetime.
	Lifetime = 5 * time.Minute
	// CacheWindow is how long a token is reused for the same caller and audience: a backend always receives a token
	// with at least Lifetime - CacheWindow left.
	CacheWindow = 30 * time.Second
)

// maxCached bounds the token cache of one key; when it is full the cache starts over.
const maxCached = 10_000

// PathJWKS is where the debug port serves the public keys.
const PathJWKS = "/.well-known/jwks.json"

// Config configures a Signer.
type Config struct {
	// KeyFile is the PEM private key (see LoadKey). Required.
	KeyFile string
	// Issuer is the tokens' iss. Required.
	Issuer string
	// Log receives reloads and signing failures; nil discards them.
	Log logging.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Claims are the claims of an identity token.
type Claims struct {
	// Issuer (iss) is --server_identity_issuer.
	Issuer string `json:"iss"`
	// Subject (sub) is the caller: the OIDC token's subject; else the verified client certificate's subject CN (or
	// first name); else "static-token" for the static bearer token.
	Subject string `json:"sub"`
	// Audience (aud) is the backend the request goes to (its backend name, or the adhoc destination host).
	Audience string `json:"aud"`
	// Perms are the caller's permissions (the OIDC permissions claim); empty for certificate callers.
	Perms []string `json:"perms"`
	// Email is the OIDC token's email claim, when it has one.
	Email string `json:"email,omitempty"`
	// AuthMethod is how the caller authenticated: "oidc", "client-cert" or "static-token".
	AuthMethod string `json:"auth_method"`
	// IssuedAt (iat), Expiry (exp = iat + Lifetime) and ID (jti, 128 random bits) as usual.
	IssuedAt int64  `json:"iat"`
	Expiry   int64  `json:"exp"`
	ID       string `json:"jti"`
}

// Signer mints identity tokens. It is safe for concurrent use.
type Signer struct {
	path, issuer string
	log          logging.Logger
	now          func() time.Time
	state        atomic.Pointer[state]
	reloadMu     sync.Mutex // serialises reloads (file change and SIGHUP)
	watcher      *filewatch.Watcher
}

// state is one signing key with its token cache. It is replaced whole when the key changes.
type state struct {
	key       *Key
	signer    jose.Signer
	prev      *Key      // the key before the last rotation, or nil
	prevUntil time.Time // prev stays in the JWKS until then
	mu        sync.RWMutex
	cache     map[string]cached // guarded by mu
}

type cached struct {
	token string
	until time.Time
}

// New loads the key and returns a Signer; Run watches the key file afterwards.
func New(cfg Config) (*Signer, error) {
	if cfg.KeyFile == "" || cfg.Issuer == "" {
		return nil, errors.New("identity: a key file and an issuer are required")
	}
	if cfg.Log == nil {
		cfg.Log = logging.Discard()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Signer{path: cfg.KeyFile, issuer: cfg.Issuer, log: cfg.Log, now: cfg.Now}
	key, err := LoadKey(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	st, err := newState(key, nil, time.Time{})
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	s.watcher = filewatch.New(filewatch.Config{Paths: []string{cfg.KeyFile}}, func(string) { s.Reload() }, cfg.Log)
	return s, nil
}

func newState(key *Key, prev *Key, prevUntil time.Time) (*state, error) {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: key.Alg, Key: jose.JSONWebKey{Key: key.private, KeyID: key.ID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return &state{key: key, signer: sig, prev: prev, prevUntil: prevUntil, cache: make(map[string]cached)}, nil
}

// Run reloads the key when its file changes, until ctx is done.
func (s *Signer) Run(ctx context.Context) error { return s.watcher.Run(ctx) }

// Ready is closed once Run watches the key file.
func (s *Signer) Ready() <-chan struct{} { return s.watcher.Ready() }

// Reload reads the key file again (SIGHUP, file change). A key that cannot be loaded is logged and the current one
// stays; an unchanged key keeps its cached tokens.
func (s *Signer) Reload() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	key, err := LoadKey(s.path)
	if err != nil {
		s.log.Warn("identity signing key not reloaded; still signing with the previous key", logging.FieldError, err)
		return
	}
	old := s.state.Load()
	if key.ID == old.key.ID {
		return
	}
	st, err := newState(key, old.key, s.now().Add(Lifetime))
	if err != nil {
		s.log.Warn("identity signing key not reloaded; still signing with the previous key", logging.FieldError, err)
		return
	}
	s.state.Store(st)
	s.log.Info("identity signing key reloaded", "kid", key.ID, "alg", string(key.Alg), "previous_kid", old.key.ID)
}

// KeyID is the current key's ID.
func (s *Signer) KeyID() string { return s.state.Load().key.ID }

// Assert returns the identity token of id for audience, or "" for an anonymous caller (and when signing fails, which
// is logged). It costs a map lookup while the caller's token is cached.
func (s *Signer) Assert(id *authn.Identity, audience string) string {
	if id.Anonymous() {
		return ""
	}
	st := s.state.Load()
	now := s.now()
	var buf [256]byte
	key := cacheKey(buf[:0], id, audience)
	st.mu.RLock()
	c, ok := st.cache[string(key)]
	st.mu.RUnlock()
	if ok && now.Before(c.until) {
		return c.token
	}
	token, err := s.sign(st, id, audience, now)
	if err != nil {
		s.log.Error("identity: signing a token failed; the request goes on without X-Kedge-Identity", logging.FieldError, err)
		return ""
	}
	st.mu.Lock()
	if len(st.cache) >= maxCached {
		clear(st.cache)
	}
	st.cache[string(key)] = cached{token: token, until: now.Add(CacheWindow)}
	st.mu.Unlock()
	return token
}

// sign mints a token.
func (s *Signer) sign(st *state, id *authn.Identity, audience string, now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	c := Claims{
		Issuer:     s.issuer,
		Subject:    subject(id),
		Audience:   audience,
		Perms:      id.Permissions,
		Email:      id.Email,
		AuthMethod: id.Method,
		IssuedAt:   now.Unix(),
		Expiry:     now.Add(Lifetime).Unix(),
		ID:         base64.RawURLEncoding.EncodeToString(jti[:]),
	}
	if c.Perms == nil {
		c.Perms = []string{}
	}
	if c.AuthMethod == authn.MethodAnonymous { // authenticated by its certificate alone
		c.AuthMethod = authn.MethodClientCert
	}
	return jwt.Signed(st.signer).Claims(c).Serialize()
}

// subject is the sub of id: the token subject, else the certificate identity, else "static-token".
func subject(id *authn.Identity) string {
	switch {
	case id.Method == authn.MethodOIDC:
		return id.Subject
	case id.Method == authn.MethodClientCert && id.Subject != "":
		return id.Subject
	case len(id.CertNames) > 0:
		return id.CertNames[0]
	}
	return id.Method
}

// cacheKey appends what makes two callers' tokens differ, each field length-prefixed so no values collide.
func cacheKey(b []byte, id *authn.Identity, audience string) []byte {
	field := func(b []byte, s string) []byte {
		b = binary.AppendUvarint(b, uint64(len(s)))
		return append(b, s...)
	}
	b = field(b, audience)
	b = field(b, id.Method)
	b = field(b, id.Subject)
	b = field(b, id.Email)
	b = binary.AppendUvarint(b, uint64(len(id.CertNames)))
	for _, n := range id.CertNames {
		b = field(b, n)
	}
	b = binary.AppendUvarint(b, uint64(len(id.Permissions)))
	for _, p := range id.Permissions {
		b = field(b, p)
	}
	return b
}

// JWKS returns the public keys as a JSON Web Key Set: the current key, and the previous one for a token lifetime
// after a rotation.
func (s *Signer) JWKS() ([]byte, error) {
	st := s.state.Load()
	if st.prev != nil && s.now().Before(st.prevUntil) {
		return JWKS(st.key, st.prev)
	}
	return JWKS(st.key)
}

// ServeHTTP serves the JWKS (GET and HEAD). It is public: it holds public keys only.
func (s *Signer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	b, err := s.JWKS()
	if err != nil {
		http.Error(w, "cannot encode the key set", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/jwk-set+json")
	h.Set("Cache-Control", "public, max-age=60")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b)
}
