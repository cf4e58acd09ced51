package credentials

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

// testOP is an OpenID provider for the tests: discovery, authorize (redirects straight back with a code, as if the
// user had logged in), token (authorization code with PKCE, refresh token, device code, service account) and device
// endpoints on 127.0.0.1. ID tokens are signed by an oidcissuer.Issuer, whose JWKS the discovery document names.
type testOP struct {
	t        testing.TB
	iss      *oidcissuer.Issuer
	srv      *httptest.Server
	clientID string
	secret   string
	idTTL    atomic.Int64 // lifetime of issued ID tokens, in nanoseconds

	mu            sync.Mutex
	codes         map[string]codeGrant
	refreshTokens map[string]bool
	devicePolls   map[string]int
	lastAuthorize url.Values
	failRefresh   bool
	tamperPKCE    bool   // store a wrong code challenge, as if the verifier had been swapped
	wrongNonce    bool   // put another nonce in the ID token, as if it had been replayed from another login
	saKey         string // the service-account key the service_account grant accepts
	saScope       string
	neverRefresh  bool // issue no refresh token to code grants, as for a client the provider allows none
	offlineOnly   bool // issue refresh tokens to code grants only when offline_access was requested, as most providers do

	exchanges, refreshes, deviceAuths, saRequests atomic.Int64
}

type codeGrant struct {
	challenge, redirect, nonce string
	offline                    bool // the scope had offline_access
}

func newTestOP(t testing.TB) *testOP {
	t.Helper()
	op := &testOP{
		t: t, iss: oidcissuer.New(t), clientID: "winch-client", secret: "winch-secret",
		codes: map[string]codeGrant{}, refreshTokens: map[string]bool{}, devicePolls: map[string]int{},
	}
	op.idTTL.Store(int64(time.Hour))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", op.discovery)
	mux.HandleFunc("GET /authorize", op.authorize)
	mux.HandleFunc("POST /token", op.token)
	mux.HandleFunc("POST /device", op.device)
	op.srv = httptest.NewServer(mux)
	t.Cleanup(op.srv.Close)
	return op
}

func (op *testOP) URL() string { return op.srv.URL }

// addRefreshToken makes rt a valid refresh token.
func (op *testOP) addRefreshToken(rt string) {
	op.mu.Lock()
	defer op.mu.Unlock()
	op.refreshTokens[rt] = true
}

func (op *testOP) set(f func(op *testOP)) {
	op.mu.Lock()
	defer op.mu.Unlock()
	f(op)
}

func (op *testOP) lastAuthorizeParams() url.Values {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.lastAuthorize
}

// idToken signs an ID token for the client, unique per call (jti), valid for idTTL.
func (op *testOP) idToken(nonce string) string {
	claims := op.iss.Claims(op.clientID)
	claims["iss"] = op.URL()
	claims["exp"] = time.Now().Add(time.Duration(op.idTTL.Load())).Unix()
	claims["jti"] = randomString()
	if nonce != "" {
		claims["nonce"] = nonce
	}
	return op.iss.Sign(op.t, claims)
}

func (op *testOP) discovery(w http.ResponseWriter, _ *http.Request) {
	writeTestJSON(w, http.StatusOK, map[string]any{
		"issuer":                                op.URL(),
		"jwks_uri":                              op.iss.URL() + oidcissuer.KeysPath,
		"authorization_endpoint":                op.URL() + "/authorize",
		"token_endpoint":                        op.URL() + "/token",
		"device_authorization_endpoint":         op.URL() + "/device",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

func (op *testOP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	op.mu.Lock()
	op.lastAuthorize = q
	tamper := op.tamperPKCE
	op.mu.Unlock()
	if q.Get("client_id") != op.clientID || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" ||
		q.Get("code_challenge") == "" || q.Get("state") == "" || q.Get("redirect_uri") == "" {
		http.Error(w, "bad authorization request", http.StatusBadRequest)
		return
	}
	g := codeGrant{challenge: q.Get("code_challenge"), redirect: q.Get("redirect_uri"), nonce: q.Get("nonce"),
		offline: slices.Contains(strings.Fields(q.Get("scope")), "offline_access")}
	if tamper {
		g.challenge = s256(randomString())
	}
	op.mu.Lock()
	if op.wrongNonce {
		g.nonce = randomString()
	}
	op.mu.Unlock()
	code := randomString()
	op.mu.Lock()
	op.codes[code] = g
	op.mu.Unlock()
	to, err := url.Parse(g.redirect)
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	v := to.Query()
	v.Set("code", code)
	v.Set("state", q.Get("state"))
	to.RawQuery = v.Encode()
	http.Redirect(w, r, to.String(), http.StatusFound)
}

// clientOK checks client authentication, by basic auth or form parameters.
func (op *testOP) clientOK(r *http.Request) bool {
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	return id == op.clientID && secret == op.secret
}

func (op *testOP) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	if !op.clientOK(r) {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	f := r.PostForm
	switch f.Get("grant_type") {
	case "authorization_code":
		op.exchanges.Add(1)
		op.mu.Lock()
		g, ok := op.codes[f.Get("code")]
		delete(op.codes, f.Get("code"))
		op.mu.Unlock()
		if !ok || g.redirect != f.Get("redirect_uri") || f.Get("code_verifier") == "" || s256(f.Get("code_verifier")) != g.challenge {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		op.mu.Lock()
		refresh := (g.offline || !op.offlineOnly) && !op.neverRefresh
		op.mu.Unlock()
		op.issue(w, g.nonce, refresh)
	case "refresh_token":
		op.refreshes.Add(1)
		op.mu.Lock()
		ok := op.refreshTokens[f.Get("refresh_token")] && !op.failRefresh
		delete(op.refreshTokens, f.Get("refresh_token")) // rotation: each refresh token works once
		op.mu.Unlock()
		if !ok {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		op.issue(w, "", true)
	case "urn:ietf:params:oauth:grant-type:device_code":
		op.mu.Lock()
		polls, ok := op.devicePolls[f.Get("device_code")]
		op.devicePolls[f.Get("device_code")] = polls + 1
		op.mu.Unlock()
		switch {
		case !ok:
			oauthError(w, http.StatusBadRequest, "invalid_grant")
		case polls == 0:
			oauthError(w, http.StatusBadRequest, "authorization_pending") // the user has not approved yet
		default:
			op.issue(w, "", true)
		}
	case "service_account":
		op.saRequests.Add(1)
		op.mu.Lock()
		ok := f.Get("service_account") == op.saKey && f.Get("scope") == op.saScope
		op.mu.Unlock()
		if !ok {
			oauthError(w, http.StatusBadRequest, "invalid_grant")
			return
		}
		writeTestJSON(w, http.StatusOK, map[string]any{"id_token": op.idToken(""), "token_type": "Bearer", "expires_in": 3600})
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type")
	}
}

// issue answers a token request with an ID token, an access token and, if refresh, a new refresh token.
func (op *testOP) issue(w http.ResponseWriter, nonce string, refresh bool) {
	resp := map[string]any{
		"access_token": "at-" + randomString(), "token_type": "Bearer", "expires_in": 3600, "id_token": op.idToken(nonce),
	}
	if refresh {
		rt := "rt-" + randomString()
		op.addRefreshToken(rt)
		resp["refresh_token"] = rt
	}
	writeTestJSON(w, http.StatusOK, resp)
}

func (op *testOP) device(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil || !op.clientOK(r) {
		oauthError(w, http.StatusUnauthorized, "invalid_client")
		return
	}
	op.deviceAuths.Add(1)
	dc := "dc-" + randomString()
	op.mu.Lock()
	op.devicePolls[dc] = 0
	op.mu.Unlock()
	writeTestJSON(w, http.StatusOK, map[string]any{
		"device_code": dc, "user_code": "WDJB-MJHT", "verification_uri": op.URL() + "/activate",
		"expires_in": 600, "interval": 1,
	})
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func oauthError(w http.ResponseWriter, status int, code string) {
	writeTestJSON(w, status, map[string]string{"error": code})
}

func writeTestJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
