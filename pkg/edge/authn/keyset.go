package authn

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	keyFetchTimeout = 10 * time.Second
	maxJWKSBytes    = 1 << 20
)

// Signature failures, recorded in sigOutcome so Authenticate can say why.
var (
	errUnknownKey      = errors.New("authn: token signed by an unknown key")
	errBadSignature    = errors.New("authn: token signature invalid")
	errKeysUnavailable = errors.New("authn: signing keys unavailable")
	errRefetchLimited  = errors.New("authn: JWKS refetch rate-limited")
)

// keySet is kedge's oidc.KeySet. Unlike go-oidc's RemoteKeySet, which refetches the JWKS for every token it cannot
// verify, it refetches at most once per minInterval (a flood of forged tokens costs the issuer one request per
// interval) and merges concurrent fetches into one. Key rotation still works: a token signed by a newly published key
// verifies as soon as the interval since the last fetch has passed.
type keySet struct {
	url         string
	client      *http.Client
	now         func() time.Time
	minInterval time.Duration
	algs        []jose.SignatureAlgorithm
	observe     func(result string) // metrics hook: "ok", "error", "rate_limited"

	mu        sync.Mutex
	keys      []jose.JSONWebKey // guarded by mu; replaced whole, never modified
	lastFetch time.Time         // guarded by mu; start of the last fetch
	maxAge    time.Duration     // guarded by mu; Cache-Control max-age of the last successful fetch, 0 if none
	removals  uint64            // guarded by mu; how many fetches dropped a key
	inflight  *fetchCall        // guarded by mu; the fetch in progress, if any
}

// fetchCall is one JWKS fetch that concurrent callers wait on; err is written before done is closed.
type fetchCall struct {
	done chan struct{}
	err  error
}

// sigOutcome is put in the context of each verification so VerifySignature can report what happened; go-oidc flattens
// the KeySet's error into a string.
type sigOutcome struct {
	verified bool
	payload  []byte
	err      error
}

type sigOutcomeKey struct{}

// VerifySignature implements oidc.KeySet.
func (k *keySet) VerifySignature(ctx context.Context, jwt string) ([]byte, error) {
	out, _ := ctx.Value(sigOutcomeKey{}).(*sigOutcome)
	if out == nil {
		out = &sigOutcome{}
	}
	payload, err := k.verify(ctx, jwt)
	out.verified, out.payload, out.err = err == nil, payload, err
	return payload, err
}

func (k *keySet) verify(ctx context.Context, jwt string) ([]byte, error) {
	jws, err := jose.ParseSigned(jwt, k.algs)
	if err != nil {
		return nil, fmt.Errorf("authn: parsing token: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errBadSignature
	}
	payload, err := verifyWith(k.snapshot(), jws)
	if err == nil {
		return payload, nil
	}
	ferr := k.refresh(ctx, false)
	switch {
	case ferr == nil:
		return verifyWith(k.snapshot(), jws)
	case errors.Is(ferr, errRefetchLimited):
		return nil, err
	case errors.Is(err, errUnknownKey):
		return nil, fmt.Errorf("%w: %w", errKeysUnavailable, ferr)
	default:
		return nil, err
	}
}

// verifyWith checks jws against the keys that fit its kid and alg.
func verifyWith(keys []jose.JSONWebKey, jws *jose.JSONWebSignature) ([]byte, error) {
	h := jws.Signatures[0].Header
	if h.KeyID != "" && !hasKID(keys, h.KeyID) {
		return nil, errUnknownKey
	}
	for i := range keys {
		key := &keys[i]
		if h.KeyID != "" && key.KeyID != h.KeyID {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != h.Algorithm {
			continue
		}
		if payload, err := jws.Verify(key); err == nil {
			return payload, nil
		}
	}
	return nil, errBadSignature
}

func hasKID(keys []jose.JSONWebKey, kid string) bool {
	for i := range keys {
		if keys[i].KeyID == kid {
			return true
		}
	}
	return false
}

func (k *keySet) snapshot() []jose.JSONWebKey {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys
}

// refresh fetches the JWKS, or waits for the fetch already in flight. Unless force is set it returns
// errRefetchLimited when the last fetch started less than minInterval ago. The fetch itself is not cancelled with
// ctx (other callers may be waiting on it) but bounded by keyFetchTimeout; ctx only stops this caller's wait.
func (k *keySet) refresh(ctx context.Context, force bool) error {
	k.mu.Lock()
	if c := k.inflight; c != nil {
		k.mu.Unlock()
		select {
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	now := k.now()
	if !force && !k.lastFetch.IsZero() && now.Sub(k.lastFetch) < k.minInterval {
		k.mu.Unlock()
		k.observe("rate_limited")
		return errRefetchLimited
	}
	c := &fetchCall{done: make(chan struct{})}
	k.inflight, k.lastFetch = c, now
	k.mu.Unlock()

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyFetchTimeout)
	keys, maxAge, err := k.fetch(fctx)
	cancel()

	k.mu.Lock()
	if err == nil {
		if dropsKeys(k.keys, keys) {
			k.removals++
		}
		k.keys, k.maxAge = keys, maxAge
	}
	k.inflight = nil
	k.mu.Unlock()
	c.err = err
	close(c.done)
	if err != nil {
		k.observe("error")
	} else {
		k.observe("ok")
	}
	return err
}

// generation changes whenever a fetch drops a key: a cached verification made in another generation may rest on a
// key that is gone, and does not count.
func (k *keySet) generation() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.removals
}

// cacheMaxAge returns how long the last successful fetch may be cached by the issuer's Cache-Control max-age;
// 0 when it said nothing.
func (k *keySet) cacheMaxAge() time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.maxAge
}

// dropsKeys reports whether a key of old is missing from new (compared by their SHA-256 thumbprints).
func dropsKeys(old, new []jose.JSONWebKey) bool {
	have := make(map[string]bool, len(new))
	for i := range new {
		if tp, err := new[i].Thumbprint(crypto.SHA256); err == nil {
			have[string(tp)] = true
		}
	}
	for i := range old {
		if tp, err := old[i].Thumbprint(crypto.SHA256); err != nil || !have[string(tp)] {
			return true
		}
	}
	return false
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("authn: JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("authn: fetching JWKS %s: %w", k.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, 0, fmt.Errorf("authn: reading JWKS %s: %w", k.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("authn: fetching JWKS %s: %s", k.url, resp.Status)
	}
	if len(body) > maxJWKSBytes {
		return nil, 0, fmt.Errorf("authn: JWKS %s is larger than %d bytes", k.url, maxJWKSBytes)
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, 0, fmt.Errorf("authn: JWKS %s: %w", k.url, err)
	}
	return keys, maxAge(resp.Header.Get("Cache-Control")), nil
}

// maxAge reads max-age from a Cache-Control header; 0 when absent or malformed.
func maxAge(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(d), "=")
		if !ok || !strings.EqualFold(name, "max-age") {
			continue
		}
		n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
		if err != nil || n < 0 || n > int64(24*time.Hour/time.Second) {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	return 0
}

// parseJWKS keeps the public signing keys of a JWKS and skips the rest (encryption keys, symmetric keys, key types
// go-jose does not know), so one odd key does not hide the others.
func parseJWKS(body []byte) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, r := range raw.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(r); err != nil {
			continue
		}
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		if !key.Valid() {
			continue
		}
		if !key.IsPublic() {
			pub := key.Public()
			if !pub.Valid() {
				continue // symmetric key: never usable for verification here
			}
			key = pub
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, errors.New("no usable signing keys")
	}
	return keys, nil
}
