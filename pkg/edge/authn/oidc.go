package authn

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

const discoveryTimeout = 10 * time.Second

// asymmetricAlgs returns the only algorithms kedge accepts, whatever the issuer advertises: never HS*, never none.
func asymmetricAlgs() []string {
	return []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
}

// oidcAuth verifies ID tokens. It becomes usable once run has completed discovery and loaded the keys.
type oidcAuth struct {
	cfg          OIDCConfig
	now          func() time.Time
	observeFetch func(result string)
	cache        *tokenCache

	state atomic.Pointer[oidcState] // nil until discovery and the first key fetch succeeded

	mu       sync.Mutex
	notReady error // guarded by mu; why state is nil, or nil once ready
}

// oidcState is what discovery produced; it never changes once stored.
type oidcState struct {
	verifier *oidc.IDTokenVerifier
	keys     *keySet
	algs     []string
}

func (o *oidcAuth) setNotReady(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.notReady = err
}

func (o *oidcAuth) ready() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.notReady
}

// discover fetches the discovery document and the JWKS, and builds the verifier.
func (o *oidcAuth) discover(ctx context.Context) (*oidcState, error) {
	dctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	p, err := oidc.NewProvider(oidc.ClientContext(dctx, o.cfg.HTTPClient), o.cfg.IssuerURL)
	if err != nil {
		var mm *oidc.IssuerMismatchError
		if errors.As(err, &mm) {
			return nil, &IssuerMismatchError{Configured: mm.Provided, Discovered: mm.Discovered}
		}
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var meta struct {
		JWKSURL string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := p.Claims(&meta); err != nil {
		return nil, fmt.Errorf("discovery document: %w", err)
	}
	if meta.JWKSURL == "" {
		return nil, errors.New("discovery document has no jwks_uri")
	}
	if err := checkSecureURL("jwks_uri", meta.JWKSURL); err != nil {
		return nil, err
	}
	algs := pickAlgs(meta.Algs)
	if len(algs) == 0 {
		return nil, fmt.Errorf("issuer offers no asymmetric signing algorithm (offers %v)", meta.Algs)
	}
	ks := &keySet{
		url:         meta.JWKSURL,
		client:      o.cfg.HTTPClient,
		now:         o.now,
		minInterval: o.cfg.KeyRefetchInterval,
		observe:     o.observeFetch,
	}
	for _, a := range algs {
		ks.algs = append(ks.algs, jose.SignatureAlgorithm(a))
	}
	if err := ks.refresh(ctx, true); err != nil {
		return nil, err
	}
	v := oidc.NewVerifier(o.cfg.IssuerURL, ks, &oidc.Config{
		ClientID: o.cfg.ClientID,
		// go-oidc checks one audience; with several, identity checks aud against all of them instead.
		SkipClientIDCheck:    len(o.cfg.Audiences) > 0,
		SupportedSigningAlgs: algs,
		Now:                  o.now,
	})
	return &oidcState{verifier: v, keys: ks, algs: algs}, nil
}

// pickAlgs intersects the issuer's algorithms with asymmetricAlgs; an issuer that advertises none gets them all.
func pickAlgs(offered []string) []string {
	if len(offered) == 0 {
		return asymmetricAlgs()
	}
	allowed := asymmetricAlgs()
	var algs []string
	for _, a := range offered {
		if slices.Contains(allowed, a) && !slices.Contains(algs, a) {
			algs = append(algs, a)
		}
	}
	return algs
}

// verify checks token and returns the caller's identity. A valid token whose claims do not grant access returns the
// identity together with a Forbidden error.
func (o *oidcAuth) verify(ctx context.Context, token string) (Identity, *Error) {
	st := o.state.Load()
	if st == nil {
		return Identity{}, unauthenticated("OIDC issuer not ready", o.ready())
	}
	key := tokenKey(token)
	gen := st.keys.generation()
	if e, ok := o.cache.get(key, o.now()); ok && e.gen == gen {
		if e.err != nil {
			return e.id, e.err
		}
		return e.id, nil
	}
	alg, err := jwtAlg(token)
	if err != nil {
		return Identity{}, unauthenticated("malformed token", err)
	}
	if !slices.Contains(st.algs, alg) {
		return Identity{}, unauthenticated("unsupported signing algorithm", nil)
	}
	out := &sigOutcome{}
	tok, err := st.verifier.Verify(context.WithValue(ctx, sigOutcomeKey{}, out), token)
	if err != nil {
		return Identity{}, o.explain(err, out)
	}
	id, claimErr := o.identity(tok)
	if claimErr == nil || claimErr.Status == Forbidden {
		o.cache.put(cacheEntry{key: key, id: id, err: claimErr, gen: gen}, tok.Expiry, o.now())
	}
	if claimErr != nil {
		return id, claimErr
	}
	return id, nil
}

// explain turns a go-oidc verification error into a reason. go-oidc's errors are mostly strings, so the reason comes
// from what the key set saw and from the (verified) claims themselves.
func (o *oidcAuth) explain(err error, out *sigOutcome) *Error {
	if !out.verified {
		switch {
		case out.err == nil:
			return unauthenticated("malformed token", err)
		case errors.Is(out.err, context.Canceled), errors.Is(out.err, context.DeadlineExceeded):
			return unauthenticated("verification cancelled", out.err)
		case errors.Is(out.err, errUnknownKey):
			return unauthenticated("token signed by an unknown key", out.err)
		case errors.Is(out.err, errKeysUnavailable):
			return unauthenticated("signing keys unavailable", out.err)
		default:
			return unauthenticated("token signature invalid", out.err)
		}
	}
	var c struct {
		Iss string          `json:"iss"`
		Aud audience        `json:"aud"`
		Exp json.RawMessage `json:"exp"`
		Nbf json.RawMessage `json:"nbf"`
	}
	if jerr := json.Unmarshal(out.payload, &c); jerr != nil {
		return unauthenticated("malformed token claims", err)
	}
	var expired *oidc.TokenExpiredError
	switch {
	case c.Iss != o.cfg.IssuerURL:
		return unauthenticated("token issued by another issuer", err)
	case !o.forUs(c.Aud):
		return unauthenticated("token issued for another audience", err)
	case len(c.Exp) == 0 || string(c.Exp) == "null":
		return unauthenticated("token has no expiry", err)
	case errors.As(err, &expired):
		return unauthenticated("token expired", err)
	case len(c.Nbf) > 0:
		return unauthenticated("token not yet valid", err)
	default:
		return unauthenticated("token rejected", err)
	}
}

// forUs reports whether aud names one of the accepted client IDs.
func (o *oidcAuth) forUs(aud []string) bool {
	if slices.Contains(aud, o.cfg.ClientID) {
		return true
	}
	for _, a := range o.cfg.Audiences {
		if slices.Contains(aud, a) {
			return true
		}
	}
	return false
}

// identity checks what go-oidc does not (azp; aud when several client IDs are accepted) and reads the identity
// claims.
func (o *oidcAuth) identity(tok *oidc.IDToken) (Identity, *Error) {
	var raw map[string]json.RawMessage
	if err := tok.Claims(&raw); err != nil {
		return Identity{}, unauthenticated("malformed token claims", err)
	}
	if !o.forUs(tok.Audience) {
		return Identity{}, unauthenticated("token issued for another audience", nil)
	}
	if len(tok.Audience) > 1 {
		var azp string
		_ = json.Unmarshal(raw["azp"], &azp)
		switch {
		case azp == "":
			return Identity{}, unauthenticated("token has several audiences but no authorized party (azp)", nil)
		case azp != o.cfg.ClientID && !slices.Contains(o.cfg.Audiences, azp):
			return Identity{}, unauthenticated("token's authorized party (azp) is another client", nil)
		}
	}
	id := Identity{Method: MethodOIDC, Subject: tok.Subject}
	_ = json.Unmarshal(raw["email"], &id.Email) // a non-string email is ignored
	claim := o.cfg.PermsClaim
	if claim == "" {
		return id, nil
	}
	r, ok := raw[claim]
	if !ok {
		return id, forbidden(fmt.Sprintf("permissions claim %q missing", claim))
	}
	perms, ok := stringList(r)
	if !ok {
		return id, forbidden(fmt.Sprintf("permissions claim %q is not a list of strings", claim))
	}
	id.Permissions = perms[:len(perms):len(perms)]
	return id, nil
}

// stringList decodes a JSON array of strings; null, a string or any other array is refused.
func stringList(r json.RawMessage) ([]string, bool) {
	if t := bytes.TrimSpace(r); len(t) == 0 || t[0] != '[' {
		return nil, false
	}
	var l []string
	if err := json.Unmarshal(r, &l); err != nil {
		return nil, false
	}
	return l, true
}

// audience is the aud claim: a string or a list of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*a = audience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return err
	}
	*a = l
	return nil
}

// jwtAlg checks that token is a compact JWS (three base64url segments) and returns its header's alg.
func jwtAlg(token string) (string, error) {
	for i := 0; i < len(token); i++ {
		c := token[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", errors.New("not a compact JWS")
		}
	}
	if strings.Count(token, ".") != 2 {
		return "", errors.New("not a compact JWS")
	}
	seg, _, _ := strings.Cut(token, ".")
	hb, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return "", fmt.Errorf("header: %w", err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(hb, &h); err != nil {
		return "", fmt.Errorf("header: %w", err)
	}
	return h.Alg, nil
}
