package oidcissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"hash"
	"testing"
)

// SignOption changes how Sign makes a token.
type SignOption func(*signOptions)

type signOptions struct {
	alg        string
	unknownKey bool
	none       bool
	hmacKey    string // "", "pem" or "der": HS256 with the current public key in that encoding
	headers    map[string]any
}

// WithAlgorithm signs with alg: RS256, RS384, RS512, PS256, PS384, PS512 (the current RSA key) or ES256 (the
// published P-256 key).
func WithAlgorithm(alg string) SignOption { return func(o *signOptions) { o.alg = alg } }

// WithUnknownKey signs with a key that is not in the JWKS, under a fresh random kid.
func WithUnknownKey() SignOption { return func(o *signOptions) { o.unknownKey = true } }

// WithAlgNone makes an unsigned token: header alg "none" and an empty signature.
func WithAlgNone() SignOption { return func(o *signOptions) { o.none = true } }

// WithHS256PublicKey signs with HS256 using the current RSA public key (PKIX PEM bytes) as the HMAC secret, under
// the current kid: the algorithm-confusion attack.
func WithHS256PublicKey() SignOption { return func(o *signOptions) { o.hmacKey = "pem" } }

// WithHS256PublicKeyDER is WithHS256PublicKey with the PKIX DER bytes as the secret.
func WithHS256PublicKeyDER() SignOption { return func(o *signOptions) { o.hmacKey = "der" } }

// WithHeader sets a JOSE header field after the signer chose its own (so it may lie about alg or kid); a nil value
// removes the field.
func WithHeader(name string, value any) SignOption {
	return func(o *signOptions) {
		if o.headers == nil {
			o.headers = map[string]any{}
		}
		o.headers[name] = value
	}
}

// Sign returns a compact JWS of claims, by default RS256 with the current key and its kid.
func (i *Issuer) Sign(t testing.TB, claims map[string]any, opts ...SignOption) string {
	t.Helper()
	o := signOptions{alg: "RS256"}
	for _, opt := range opts {
		opt(&o)
	}
	key := i.keyFor(t, o)
	alg := o.alg
	switch {
	case o.none:
		alg = "none"
	case o.hmacKey != "":
		alg = "HS256"
	}
	header := map[string]any{"alg": alg, "typ": "JWT", "kid": key.kid}
	for k, v := range o.headers {
		if v == nil {
			delete(header, k)
			continue
		}
		header[k] = v
	}
	input := segment(t, header) + "." + segment(t, claims)
	var sig []byte
	switch {
	case o.none:
	case o.hmacKey != "":
		sig = hmacSign(t, key, o.hmacKey, input)
	default:
		sig = sign(t, key.priv, o.alg, input)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// keyFor picks the key: the unknown key, the EC key for ES*, or the current RSA key.
func (i *Issuer) keyFor(t testing.TB, o signOptions) *signingKey {
	t.Helper()
	ec := len(o.alg) > 2 && o.alg[:2] == "ES"
	if o.unknownKey {
		k := i.unknownKey(t, ec)
		var b [8]byte
		_, _ = rand.Read(b[:])
		k.kid = "unknown-" + hex.EncodeToString(b[:])
		return &k
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if ec {
		return i.ec
	}
	return i.current
}

// unknownKey returns (a copy of) the issuer's unpublished key of the family, made on first use.
func (i *Issuer) unknownKey(t testing.TB, ec bool) signingKey {
	t.Helper()
	alg, slot := "", &i.unknownRSA
	if ec {
		alg, slot = "ES256", &i.unknownEC
	}
	i.mu.Lock()
	k := *slot
	i.mu.Unlock()
	if k == nil {
		k = i.newKey(t, alg)
		i.mu.Lock()
		*slot = k
		i.mu.Unlock()
	}
	return *k
}

func segment(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("oidcissuer: encoding token segment: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashFor(t testing.TB, alg string) (crypto.Hash, func() hash.Hash) {
	t.Helper()
	switch alg[2:] {
	case "256":
		return crypto.SHA256, sha256.New
	case "384":
		return crypto.SHA384, sha512.New384
	case "512":
		return crypto.SHA512, sha512.New
	}
	t.Fatalf("oidcissuer: unsupported algorithm %q", alg)
	return 0, nil
}

func sign(t testing.TB, priv crypto.Signer, alg, input string) []byte {
	t.Helper()
	if len(alg) != 5 {
		t.Fatalf("oidcissuer: unsupported algorithm %q", alg)
	}
	h, newHash := hashFor(t, alg)
	d := newHash()
	d.Write([]byte(input))
	digest := d.Sum(nil)
	var sig []byte
	var err error
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		switch alg[:2] {
		case "RS":
			sig, err = rsa.SignPKCS1v15(rand.Reader, k, h, digest)
		case "PS":
			sig, err = rsa.SignPSS(rand.Reader, k, h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		default:
			t.Fatalf("oidcissuer: algorithm %q does not fit an RSA key", alg)
		}
	case *ecdsa.PrivateKey:
		if alg != "ES256" {
			t.Fatalf("oidcissuer: only ES256 is supported for EC keys, got %q", alg)
		}
		r, s, serr := ecdsa.Sign(rand.Reader, k, digest)
		err = serr
		if err == nil {
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	}
	if err != nil {
		t.Fatalf("oidcissuer: signing: %v", err)
	}
	return sig
}

func hmacSign(t testing.TB, key *signingKey, encoding, input string) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key.priv.Public())
	if err != nil {
		t.Fatalf("oidcissuer: encoding public key: %v", err)
	}
	secret := der
	if encoding == "pem" {
		secret = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return m.Sum(nil)
}
