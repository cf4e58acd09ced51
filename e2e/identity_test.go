package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

// identityIssuer is --server_identity_issuer in these tests.
const identityIssuer = "https://kedge.e2e.example"

// kedgeIdentity is what a backend learns from a verified X-Kedge-Identity: the code of docs/kedge-auth.md's
// "Signed identity for backends" example, run by the verifying backend and the gRPC checks below.
type kedgeIdentity struct {
	Issuer     string   `json:"iss"`
	Subject    string   `json:"sub"`
	Audience   string   `json:"aud"`
	Perms      []string `json:"perms"`
	AuthMethod string   `json:"auth_method"`
	IssuedAt   int64    `json:"iat"`
	Expiry     int64    `json:"exp"`
	ID         string   `json:"jti"`
}

// verifyIdentity checks token as a backend named backend does, against kedge's JWKS.
func verifyIdentity(ctx context.Context, keys oidc.KeySet, backend, token string) (kedgeIdentity, error) {
	verifier := oidc.NewVerifier(identityIssuer, keys, &oidc.Config{ClientID: backend, SupportedSigningAlgs: []string{oidc.ES256, oidc.RS256}})
	tok, err := verifier.Verify(ctx, token)
	if err != nil {
		return kedgeIdentity{}, err
	}
	var id kedgeIdentity
	err = tok.Claims(&id)
	return id, err
}

// verifiedAnswer is the verifying backend's JSON answer.
type verifiedAnswer struct {
	Identity kedgeIdentity `json:"identity"`
	Err      string        `json:"error"`
	Headers  int           `json:"headers"` // how many X-Kedge-Identity values arrived
	Alg      string        `json:"alg"`
	KeyID    string        `json:"kid"`
}

// verifyingBackend is an HTTP backend named name that verifies every request's X-Kedge-Identity against the JWKS
// at the URL *jwks (set once kedge runs) and answers what it found.
func verifyingBackend(t *testing.T, name string, jwks *atomic.Pointer[string]) *httptest.Server {
	t.Helper()
	var keys atomic.Pointer[oidc.RemoteKeySet]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ans := verifiedAnswer{Headers: len(r.Header.Values("X-Kedge-Identity"))}
		token := r.Header.Get("X-Kedge-Identity")
		if ks := keys.Load(); ks == nil && jwks.Load() != nil {
			keys.CompareAndSwap(nil, oidc.NewRemoteKeySet(context.WithoutCancel(r.Context()), *jwks.Load()))
		}
		switch {
		case token == "":
			ans.Err = "no X-Kedge-Identity"
		case keys.Load() == nil:
			ans.Err = "no JWKS URL yet"
		default:
			var err error
			if ans.Identity, err = verifyIdentity(r.Context(), keys.Load(), name, token); err != nil {
				ans.Err = err.Error()
			}
			ans.Alg, ans.KeyID = jwtHeader(token)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ans)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// jwtHeader returns the alg and kid of a compact JWT's header.
func jwtHeader(token string) (alg, kid string) {
	seg, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return "", ""
	}
	var h struct{ Alg, Kid string }
	_ = json.Unmarshal(b, &h)
	return h.Alg, h.Kid
}

func TestKedgeSignedIdentity(t *testing.T) {
	iss := oidcissuer.New(t)
	var jwksURL atomic.Pointer[string]
	verified := verifyingBackend(t, "verified", &jwksURL)
	greeter := testutil.NewGRPCBackend(t, "greeter")
	keyDir := t.TempDir()
	keyFile := filepath.Join(keyDir, "identity.pem")
	testutil.WriteKeyFile(t, keyFile, testutil.NewECKey(t))

	director := `{
  "http": {"routes": [
    {"backend_name": "verified", "host_matcher": "id.example.com", "required_permissions": ["x"]},
    {"backend_name": "verified", "host_matcher": "noid.example.com", "identity_header": false}
  ]},
  "grpc": {"routes": [
    {"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*", "metadata_matcher": {"x-no-identity": "1"}, "identity_header": false},
    {"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*"}
  ]}
}`
	pool := fmt.Sprintf(`{
  "http": {"backends": [{"name": "verified", "host": {"dns_name": "127.0.0.1", "port": %d}}]},
  "grpc": {"backends": [{"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %d}}]}
}`, verified.Listener.Addr().(*net.TCPAddr).Port, grpcPort(greeter))
	k := startKedge(t, director, pool,
		"--server_oidc_provider_url="+iss.URL(), "--server_oidc_client_id=kedge", "--server_oidc_perms_claim=perms",
		"--server_identity_signing_key_file="+keyFile, "--server_identity_issuer="+identityIssuer)
	jwks := "http://" + k.debug + "/.well-known/jwks.json"
	jwksURL.Store(&jwks)
	claims := iss.Claims("kedge")
	claims["perms"] = []string{"x", "read"}
	token := iss.Sign(t, claims)

	// get sends a request with a forged X-Kedge-Identity (twice, in two spellings) and returns what the verifying
	// backend found.
	get := func(t *testing.T, h2 bool, host string) verifiedAnswer {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+host+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Proxy-Authorization", "Bearer "+token)
		req.Header.Set("X-Kedge-Identity", "forged.by.client")
		req.Header["x-kedge-identity"] = []string{"forged.again"}
		resp, err := k.client(h2).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s (%s)", host, resp.Status, resp.Header.Get("X-Kedge-Error"))
		}
		var ans verifiedAnswer
		if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
			t.Fatal(err)
		}
		return ans
	}
	checkIdentity := func(t *testing.T, id kedgeIdentity, audience string) {
		t.Helper()
		now := time.Now().Unix()
		if id.Issuer != identityIssuer || id.Subject != "user-1" || id.Audience != audience || id.AuthMethod != "oidc" ||
			!slices.Equal(id.Perms, []string{"x", "read"}) || id.ID == "" {
			t.Errorf("identity %+v: want iss %s, sub user-1, aud %s, perms [x read], auth_method oidc, a jti", id, identityIssuer, audience)
		}
		if id.Expiry-id.IssuedAt != 300 || id.Expiry <= now || id.Expiry > now+300+5 {
			t.Errorf("identity iat %d exp %d (now %d): want exp = iat + 5 min, in the future", id.IssuedAt, id.Expiry, now)
		}
	}

	t.Run("HTTP: the backend verifies kedge's identity and never sees the client's", func(t *testing.T) {
		for _, h2 := range []bool{false, true} {
			ans := get(t, h2, "id.example.com")
			if ans.Err != "" || ans.Headers != 1 || ans.Alg != "ES256" {
				t.Fatalf("h2=%v: backend: %q, %d X-Kedge-Identity values, alg %q; want one verified ES256 token", h2, ans.Err, ans.Headers, ans.Alg)
			}
			checkIdentity(t, ans.Identity, "verified")
		}
	})

	t.Run("HTTP: identity_header false sends none, and drops the client's", func(t *testing.T) {
		if ans := get(t, true, "noid.example.com"); ans.Headers != 0 {
			t.Errorf("backend saw %d X-Kedge-Identity values on an identity_header: false route", ans.Headers)
		}
	})

	var grpcToken string
	t.Run("gRPC: x-kedge-identity verifies, the client's is dropped", func(t *testing.T) {
		c := testpb.NewTestServiceClient(k.grpcConn(t, k.grpcAddr, ""))
		keys := oidc.NewRemoteKeySet(t.Context(), jwks)
		for _, tc := range []struct {
			name   string
			extra  []string
			tokens int
		}{{"signed", nil, 1}, {"identity_header false", []string{"x-no-identity", "1"}, 0}} {
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			ctx = metadata.AppendToOutgoingContext(ctx, append([]string{"proxy-authorization", "Bearer " + token,
				"x-kedge-identity", "forged.by.client"}, tc.extra...)...)
			_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{})
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			got := greeter.LastMetadata().Get("x-kedge-identity")
			if len(got) != tc.tokens {
				t.Fatalf("%s: backend saw x-kedge-identity %q, want %d token(s)", tc.name, got, tc.tokens)
			}
			if tc.tokens == 0 {
				continue
			}
			id, err := verifyIdentity(t.Context(), keys, "greeter", got[0])
			if err != nil {
				t.Fatalf("%s: verifying x-kedge-identity: %v", tc.name, err)
			}
			checkIdentity(t, id, "greeter")
			grpcToken = got[0]
		}
	})

	t.Run("JWKS on the debug port equals kedge identity jwks", func(t *testing.T) {
		resp, err := http.Get(jwks)
		if err != nil {
			t.Fatal(err)
		}
		served := readAll(t, resp)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/jwk-set+json" {
			t.Fatalf("GET %s: %s %q", jwks, resp.Status, resp.Header.Get("Content-Type"))
		}
		out, err := exec.CommandContext(t.Context(), filepath.Join(binDir, "kedge"), "identity", "jwks",
			"--server_identity_signing_key_file="+keyFile).Output()
		if err != nil {
			t.Fatalf("kedge identity jwks: %v", err)
		}
		if !bytes.Equal(bytes.TrimSpace(out), []byte(served)) {
			t.Errorf("kedge identity jwks printed\n%s\nthe debug port serves\n%s", out, served)
		}
		if strings.Contains(served, `"d":`) {
			t.Error("the JWKS holds a private key")
		}
	})

	t.Run("a rotated key signs at once; the JWKS keeps the old one", func(t *testing.T) {
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		testutil.WriteKeyFile(t, keyFile, rsaKey)
		var last verifiedAnswer
		testutil.EventuallyWithin(t, 15*time.Second, "tokens signed with the new RSA key", func() bool {
			last = get(t, false, "id.example.com")
			return last.Alg == "RS256"
		})
		if last.Err != "" {
			t.Errorf("RS256 token after the rotation: %s", last.Err)
		}
		var set struct{ Keys []map[string]any }
		resp, err := http.Get(jwks)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(readAll(t, resp)), &set); err != nil || len(set.Keys) != 2 {
			t.Errorf("JWKS after the rotation: %v, %d keys; want the new and the previous key", err, len(set.Keys))
		}
	})

	if sig := grpcToken[strings.LastIndexByte(grpcToken, '.')+1:]; grpcToken != "" && strings.Contains(k.proc.out.String(), sig) {
		t.Error("kedge's log contains an identity token")
	}
}
