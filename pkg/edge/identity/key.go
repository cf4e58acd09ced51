package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	jose "github.com/go-jose/go-jose/v4"
)

// minRSABits is the smallest RSA key kedge signs with.
const minRSABits = 2048

// Key is a parsed signing key: the private key, its algorithm and its key ID.
type Key struct {
	// Alg is jose.ES256 for an ECDSA P-256 key, jose.RS256 for an RSA key.
	Alg jose.SignatureAlgorithm
	// ID is the RFC 7638 thumbprint of the public key (SHA-256, base64url): the JWT's kid and the JWKS entry's.
	ID      string
	private crypto.Signer
}

// Public returns the public key as a JWKS entry.
func (k *Key) Public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.private.Public(), KeyID: k.ID, Algorithm: string(k.Alg), Use: "sig"}
}

// LoadKey reads a PEM private key file: ECDSA P-256 (SEC 1 "EC PRIVATE KEY" or PKCS #8) or RSA of at least 2048 bits
// (PKCS #1 or PKCS #8). Errors name the file and never contain key material.
func LoadKey(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: signing key: %w", err)
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("identity: signing key %s: %w", path, err)
	}
	return k, nil
}

// ParseKey parses the first private key block of PEM data (see LoadKey).
func ParseKey(data []byte) (*Key, error) {
	var priv any
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key block (EC PRIVATE KEY, RSA PRIVATE KEY or PRIVATE KEY)")
		}
		var err error
		switch block.Type {
		case "EC PRIVATE KEY":
			priv, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			priv, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "PRIVATE KEY":
			priv, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported; store the key unencrypted with mode 0600")
		default:
			continue // e.g. "EC PARAMETERS" before the key, or a certificate
		}
		if err != nil {
			return nil, fmt.Errorf("parsing %s block: %w", block.Type, err)
		}
		break
	}
	k := &Key{}
	switch p := priv.(type) {
	case *ecdsa.PrivateKey:
		if p.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on curve %s; only P-256 (ES256) is supported", p.Curve.Params().Name)
		}
		k.Alg, k.private = jose.ES256, p
	case *rsa.PrivateKey:
		if bits := p.N.BitLen(); bits < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; at least %d are required", bits, minRSABits)
		}
		k.Alg, k.private = jose.RS256, p
	default:
		return nil, fmt.Errorf("unsupported key type %T; use ECDSA P-256 or RSA", priv)
	}
	jwk := jose.JSONWebKey{Key: k.private.Public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("computing the key ID: %w", err)
	}
	k.ID = base64.RawURLEncoding.EncodeToString(tp)
	return k, nil
}

// JWKS returns the JSON Web Key Set of the public keys, in order.
func JWKS(keys ...*Key) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(keys))}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.Public())
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("identity: encoding the JWKS: %w", err)
	}
	return b, nil
}
