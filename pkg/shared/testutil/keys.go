package testutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
)

// NewECKey generates an ECDSA P-256 private key.
func NewECKey(t T) *ecdsa.PrivateKey {
	t.Helper()
	return newKey(t)
}

// WriteKeyFile writes key to path as a PKCS #8 PEM file of mode 0600, through a rename as a key rotation would, so
// a watcher never reads it half written.
func WriteKeyFile(t T, path string, key crypto.Signer) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("testutil: marshalling private key: %v", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatalf("testutil: %v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatalf("testutil: %v", err)
	}
}
