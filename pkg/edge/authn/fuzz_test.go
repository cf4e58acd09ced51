package authn

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

// FuzzAuthenticate feeds random Proxy-Authorization values to an OIDC Authenticator: it must never panic, and it may
// only allow a token whose header, claims and signature are those of a token the issuer really signed.
func FuzzAuthenticate(f *testing.F) {
	iss := oidcissuer.New(f)
	a := startOIDC(f, iss)
	legit := []string{validToken(f, iss), validToken(f, iss, oidcissuer.WithAlgorithm("ES256"))}
	legitParts := make([][3][]byte, len(legit))
	for i, tok := range legit {
		p, ok := decodeJWS(tok)
		if !ok {
			f.Fatalf("cannot decode legit token %d", i)
		}
		legitParts[i] = p
	}

	for _, tok := range legit {
		f.Add("Bearer " + tok)
		f.Add("bearer " + tok + " ")
		f.Add("Bearer " + tok[:len(tok)-2] + "AA")
	}
	for _, opt := range []oidcissuer.SignOption{
		oidcissuer.WithAlgNone(), oidcissuer.WithHS256PublicKey(), oidcissuer.WithUnknownKey(),
		oidcissuer.WithHeader("alg", "ES256"), oidcissuer.WithHeader("crit", []string{"exp"}),
	} {
		f.Add("Bearer " + validToken(f, iss, opt))
	}
	for _, s := range []string{"", "Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "Bearer a.b.c", "Bearer ..", "Bearer e30.e30.",
		"Bearer eyJhbGciOiJSUzI1NiJ9.e30.AAAA", `Bearer {"protected":"e30","payload":"e30","signature":""}`} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, header string) {
		id, err := a.Authenticate(t.Context(), header, nil)
		if err != nil {
			if classify(err).Reason == "" {
				t.Fatalf("denial without a reason: %v", err)
			}
			return
		}
		token, perr := parseBearer(strings.TrimSpace(header))
		if perr != nil {
			t.Fatalf("allowed an unparsable header %q", header)
		}
		got, ok := decodeJWS(token)
		if !ok {
			t.Fatalf("allowed an undecodable token %q", token)
		}
		for _, p := range legitParts {
			if bytes.Equal(p[0], got[0]) && bytes.Equal(p[1], got[1]) && bytes.Equal(p[2], got[2]) {
				if id.Method != MethodOIDC {
					t.Fatalf("allowed identity %+v", id)
				}
				return
			}
		}
		t.Fatalf("allowed a token the issuer never signed: %q", token)
	})
}

func decodeJWS(tok string) ([3][]byte, bool) {
	var out [3][]byte
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return out, false
	}
	for i, p := range parts {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			return out, false
		}
		out[i] = b
	}
	return out, true
}

func BenchmarkAuthenticateCached(b *testing.B) {
	iss := oidcissuer.New(b)
	a := startOIDC(b, iss)
	header := "Bearer " + validToken(b, iss)
	ctx := b.Context()
	if _, err := a.Authenticate(ctx, header, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate(ctx, header, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticateUncached(b *testing.B) {
	iss := oidcissuer.New(b)
	a := startOIDC(b, iss)
	header := "Bearer " + validToken(b, iss)
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		a.oidc.cache = newTokenCache(cacheSize) // every iteration verifies the signature
		if _, err := a.Authenticate(ctx, header, nil); err != nil {
			b.Fatal(err)
		}
	}
}
