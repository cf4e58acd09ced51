package authn

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

func TestAuthenticateOIDC(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	a := startOIDC(t, iss)
	now := time.Now()

	// claims returns valid claims with perms ["proxy", "read"], changed by edit.
	claims := func(edit func(c map[string]any)) map[string]any {
		c := iss.Claims(testClientID)
		c["perms"] = []string{"proxy", "read"}
		c["email"] = "user@example.com"
		if edit != nil {
			edit(c)
		}
		return c
	}
	valid := iss.Sign(t, claims(nil))
	tampered := func() string {
		parts := strings.Split(valid, ".")
		body, _ := json.Marshal(claims(func(c map[string]any) { c["perms"] = []string{"proxy", "admin"} }))
		parts[1] = base64.RawURLEncoding.EncodeToString(body)
		return strings.Join(parts, ".")
	}()

	tests := []struct {
		name   string
		header string // used when token is ""
		token  string
		status Status // 0: allowed
		reason string
	}{
		{name: "valid RS256", token: valid},
		{name: "valid ES256", token: iss.Sign(t, claims(nil), oidcissuer.WithAlgorithm("ES256"))},
		{name: "valid PS256", token: iss.Sign(t, claims(nil), oidcissuer.WithAlgorithm("PS256"))},
		{name: "valid RS512", token: iss.Sign(t, claims(nil), oidcissuer.WithAlgorithm("RS512"))},
		{name: "valid without kid", token: iss.Sign(t, claims(nil), oidcissuer.WithHeader("kid", nil))},
		{name: "nbf within go-oidc's 5 minute leeway", token: iss.Sign(t, claims(func(c map[string]any) {
			c["nbf"] = now.Add(2 * time.Minute).Unix()
		}))},
		{name: "several audiences with azp", token: iss.Sign(t, claims(func(c map[string]any) {
			c["aud"], c["azp"] = []string{"other", testClientID}, testClientID
		}))},
		{name: "single audience with another azp", token: iss.Sign(t, claims(func(c map[string]any) {
			c["azp"] = "other"
		}))},

		{name: "expired", status: Unauthenticated, reason: "token expired", token: iss.Sign(t, claims(func(c map[string]any) {
			c["exp"] = now.Add(-time.Second).Unix()
		}))},
		{name: "no exp", status: Unauthenticated, reason: "token has no expiry", token: iss.Sign(t, claims(func(c map[string]any) {
			delete(c, "exp")
		}))},
		{name: "not yet valid", status: Unauthenticated, reason: "token not yet valid", token: iss.Sign(t, claims(func(c map[string]any) {
			c["nbf"] = now.Add(10 * time.Minute).Unix()
		}))},
		{name: "wrong issuer", status: Unauthenticated, reason: "token issued by another issuer", token: iss.Sign(t, claims(func(c map[string]any) {
			c["iss"] = "https://evil.example.com"
		}))},
		{name: "issuer with trailing slash", status: Unauthenticated, reason: "token issued by another issuer", token: iss.Sign(t, claims(func(c map[string]any) {
			c["iss"] = iss.URL() + "/"
		}))},
		{name: "wrong audience", status: Unauthenticated, reason: "token issued for another audience", token: iss.Sign(t, claims(func(c map[string]any) {
			c["aud"] = "other-client"
		}))},
		{name: "several audiences without azp", status: Unauthenticated, reason: "no authorized party (azp)", token: iss.Sign(t, claims(func(c map[string]any) {
			c["aud"] = []string{"other", testClientID}
		}))},
		{name: "several audiences with another azp", status: Unauthenticated, reason: "(azp) is another client", token: iss.Sign(t, claims(func(c map[string]any) {
			c["aud"], c["azp"] = []string{"other", testClientID}, "other"
		}))},
		{name: "unknown key", status: Unauthenticated, reason: "token signed by an unknown key", token: iss.Sign(t, claims(nil), oidcissuer.WithUnknownKey())},
		{name: "alg none", status: Unauthenticated, reason: "unsupported signing algorithm", token: iss.Sign(t, claims(nil), oidcissuer.WithAlgNone())},
		{name: "alg missing", status: Unauthenticated, reason: "unsupported signing algorithm", token: iss.Sign(t, claims(nil), oidcissuer.WithHeader("alg", nil))},
		{name: "HS256 with the PEM public key", status: Unauthenticated, reason: "unsupported signing algorithm", token: iss.Sign(t, claims(nil), oidcissuer.WithHS256PublicKey())},
		{name: "HS256 with the DER public key", status: Unauthenticated, reason: "unsupported signing algorithm", token: iss.Sign(t, claims(nil), oidcissuer.WithHS256PublicKeyDER())},
		{name: "ES256 header on an RSA signature", status: Unauthenticated, reason: "token signature invalid", token: iss.Sign(t, claims(nil), oidcissuer.WithHeader("alg", "ES256"))},
		{name: "tampered payload", status: Unauthenticated, reason: "token signature invalid", token: tampered},
		{name: "signature stripped", status: Unauthenticated, reason: "token signature invalid", token: valid[:strings.LastIndex(valid, ".")+1]},
		{name: "not a JWS", status: Unauthenticated, reason: "malformed token", token: "not-a-jwt"},
		{name: "JSON serialization", status: Unauthenticated, reason: "malformed token", header: `Bearer {"payload":"x"}`},
		{name: "bad header encoding", status: Unauthenticated, reason: "malformed token", token: "!!!.e30.e30"},

		{name: "perms claim missing", status: Forbidden, reason: `permissions claim "perms" missing`, token: iss.Sign(t, claims(func(c map[string]any) {
			delete(c, "perms")
		}))},
		{name: "perms claim a string", status: Forbidden, reason: `permissions claim "perms" is not a list of strings`, token: iss.Sign(t, claims(func(c map[string]any) {
			c["perms"] = "proxy"
		}))},
		{name: "perms claim a number", status: Forbidden, reason: `is not a list of strings`, token: iss.Sign(t, claims(func(c map[string]any) {
			c["perms"] = 42
		}))},
		{name: "perms claim a list of numbers", status: Forbidden, reason: `is not a list of strings`, token: iss.Sign(t, claims(func(c map[string]any) {
			c["perms"] = []int{1, 2}
		}))},
		{name: "perms claim null", status: Forbidden, reason: `is not a list of strings`, token: iss.Sign(t, claims(func(c map[string]any) {
			c["perms"] = nil
		}))},
		{name: "perms claim nested list", status: Forbidden, reason: `is not a list of strings`, token: iss.Sign(t, claims(func(c map[string]any) {
			c["perms"] = [][]string{{"proxy"}}
		}))},
		{name: "perms claim an object", status: Forbidden, reason: `is not a list of strings`, token: iss.Sign(t, claims(func(c map[string]any) {
			c["perms"] = map[string]bool{"proxy": true}
		}))},
		{name: "global permission absent", status: Forbidden, reason: "missing permission: one of [proxy]", token: iss.Sign(t, claims(func(c map[string]any) {
			c["perms"] = []string{"read"}
		}))},
		{name: "global permission differs in case", status: Forbidden, reason: "missing permission", token: iss.Sign(t, claims(func(c map[string]any) {
			c["perms"] = []string{"PROXY", "proxy ", "pro\x00xy"}
		}))},
		{name: "empty perms list", status: Forbidden, reason: "missing permission", token: iss.Sign(t, claims(func(c map[string]any) {
			c["perms"] = []string{}
		}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			header := tt.header
			if tt.token != "" {
				header = "Bearer " + tt.token
			}
			id, err := a.Authenticate(t.Context(), header, nil)
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				if id.Method != MethodOIDC || id.Subject != "user-1" || id.Email != "user@example.com" ||
					!slices.Equal(id.Permissions, []string{"proxy", "read"}) {
					t.Errorf("identity = %+v", id)
				}
				return
			}
			wantDenied(t, err, tt.status, tt.reason, tt.token)
			if tt.status == Forbidden && (id.Method != MethodOIDC || id.Subject != "user-1") {
				t.Errorf("forbidden identity = %+v, want the token's (for the audit log)", id)
			}
		})
	}
}

func TestAuthenticateOIDCCachesVerifications(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	clk := newFakeClock()
	a := startOIDC(t, iss, func(c *OIDCConfig) { c.Now = clk.Now })

	c := iss.Claims(testClientID)
	c["perms"] = []string{"proxy"}
	c["exp"] = clk.Now().Add(90 * time.Second).Unix()
	token := iss.Sign(t, c)
	for i := range 3 {
		if _, err := a.Authenticate(t.Context(), "Bearer "+token, nil); err != nil {
			t.Fatalf("Authenticate #%d: %v", i, err)
		}
	}
	if n := a.oidc.cache.len(); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
	}
	// Entries live at most a minute, and never past exp: after 61 s the token is verified again, after exp it fails.
	clk.Add(61 * time.Second)
	if _, ok := a.oidc.cache.get(tokenKey(token), clk.Now()); ok {
		t.Fatalf("cache entry outlived its minute")
	}
	if _, err := a.Authenticate(t.Context(), "Bearer "+token, nil); err != nil {
		t.Fatalf("Authenticate after a minute: %v", err)
	}
	clk.Add(30 * time.Second)
	_, err := a.Authenticate(t.Context(), "Bearer "+token, nil)
	wantDenied(t, err, Unauthenticated, "token expired", token)

	// A Forbidden outcome is cached too, and still Forbidden.
	c = iss.Claims(testClientID)
	c["exp"] = clk.Now().Add(time.Hour).Unix()
	c["perms"] = "proxy"
	bad := iss.Sign(t, c)
	for range 2 {
		_, err = a.Authenticate(t.Context(), "Bearer "+bad, nil)
		wantDenied(t, err, Forbidden, "is not a list of strings", bad)
	}
}

func TestTokenCacheEvictsLeastRecentlyUsed(t *testing.T) {
	t.Parallel()
	c := newTokenCache(2)
	now := time.Now()
	exp := now.Add(time.Hour)
	for _, tok := range []string{"a", "b"} {
		c.put(cacheEntry{key: tokenKey(tok), id: Identity{Subject: tok}}, exp, now)
	}
	if _, ok := c.get(tokenKey("a"), now); !ok { // a is now the most recently used
		t.Fatalf("a missing")
	}
	c.put(cacheEntry{key: tokenKey("c")}, exp, now)
	if _, ok := c.get(tokenKey("b"), now); ok {
		t.Errorf("b survived eviction")
	}
	for _, tok := range []string{"a", "c"} {
		if _, ok := c.get(tokenKey(tok), now); !ok {
			t.Errorf("%s evicted", tok)
		}
	}
	c.put(cacheEntry{key: tokenKey("expired")}, now.Add(-time.Second), now)
	if _, ok := c.get(tokenKey("expired"), now); ok {
		t.Errorf("an already expired outcome was cached")
	}
}

// TestSeveralAudiences checks --server_oidc_client_id with several values: each one is accepted as aud, and a
// token naming several audiences needs an azp that is one of them.
func TestSeveralAudiences(t *testing.T) {
	t.Parallel()
	iss := oidcissuer.New(t)
	a := startOIDC(t, iss, func(c *OIDCConfig) { c.Audiences = []string{"winch", testClientID} })
	sign := func(aud any, azp string) string {
		c := iss.Claims(testClientID)
		c["perms"] = []string{"proxy"}
		c["aud"] = aud
		if azp != "" {
			c["azp"] = azp
		}
		return iss.Sign(t, c)
	}
	tests := []struct {
		name   string
		token  string
		reason string // "" = allowed
	}{
		{"the first client ID", sign(testClientID, ""), ""},
		{"another accepted client ID", sign("winch", ""), ""},
		{"several audiences, azp accepted", sign([]string{"winch", "account"}, "winch"), ""},
		{"several audiences, azp the first client ID", sign([]string{testClientID, "winch"}, testClientID), ""},
		{"an audience not accepted", sign("cli", ""), "token issued for another audience"},
		{"several audiences, none accepted", sign([]string{"cli", "account"}, "cli"), "token issued for another audience"},
		{"several audiences without azp", sign([]string{"winch", "account"}, ""), "no authorized party (azp)"},
		{"several audiences, azp another client", sign([]string{"winch", "account"}, "account"), "(azp) is another client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := a.Authenticate(t.Context(), "Bearer "+tt.token, nil)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Authenticate: %v", err)
				}
				return
			}
			wantDenied(t, err, Unauthenticated, tt.reason, tt.token)
		})
	}
}
