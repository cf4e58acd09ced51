package admission_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/edge/admission"
	"github.com/kedge-proxy/kedge/pkg/edge/authn"
	"github.com/kedge-proxy/kedge/pkg/edge/authz"
	"github.com/kedge-proxy/kedge/pkg/edge/identity"
	"github.com/kedge-proxy/kedge/pkg/edge/ratelimit"
	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// table has a limited route (two requests, then one every ~17 minutes) and one that opts out of the identity.
func table(t *testing.T) *route.HTTPTable {
	t.Helper()
	tab, err := route.NewHTTPTable([]route.HTTPRoute{
		{Backend: "web", Host: "web.example.com", RateLimit: &route.RateLimit{RequestsPerSecond: 0.001, Burst: 2}},
		{Backend: "quiet", Host: "quiet.example.com", NoIdentityHeader: true},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func signer(t *testing.T) *identity.Signer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "identity.pem")
	testutil.WriteKeyFile(t, path, testutil.NewECKey(t))
	s, err := identity.New(identity.Config{KeyFile: path, Issuer: "https://kedge.test"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// admitter returns an Admitter whose gate wants the static token "good" (or no token when static is false).
func admitter(t *testing.T, static bool, p admission.Policies) *admission.Admitter {
	t.Helper()
	var gate *authz.Gate
	if static {
		auth, err := authn.New(authn.Config{StaticToken: "good"}, logging.Discard(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if gate, err = authz.NewGate(auth, nil); err != nil {
			t.Fatal(err)
		}
	}
	a, err := admission.NewWithPolicies(gate, nil, p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func request(host, token, remote string) *admission.HTTPRequest {
	req := &admission.HTTPRequest{
		Facts:  route.HTTPRequest{Host: host, Port: 443, Path: "/", Mode: route.ModeReverse},
		Caller: admission.Caller{RemoteAddr: remote},
	}
	if token != "" {
		req.Credentials = []string{"Bearer " + token}
	}
	return req
}

func policies(t *testing.T) admission.Policies {
	t.Helper()
	l, err := ratelimit.New(ratelimit.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Policies{Limiter: l, Identity: signer(t)}
}

func TestPoliciesOffCostNothing(t *testing.T) {
	t.Parallel()
	a, tab := admitter(t, true, admission.Policies{}), table(t)
	for i := range 10 {
		res := a.HTTP(t.Context(), tab, request("web.example.com", "good", "127.0.0.1:1"))
		if !res.Admitted() || res.Assertion != "" {
			t.Fatalf("request %d without policies: admitted %v (%v), assertion %q; want admitted, none", i, res.Admitted(), res.Decision.Err, res.Assertion)
		}
	}
}

func TestRateLimitAndIdentity(t *testing.T) {
	t.Parallel()
	a, tab := admitter(t, true, policies(t)), table(t)
	// Refused callers spend no tokens.
	for range 5 {
		if res := a.HTTP(t.Context(), tab, request("web.example.com", "bad", "127.0.0.1:1")); res.Decision.Result() != authz.ResultUnauthenticated {
			t.Fatalf("bad token: %s", res.Decision.Result())
		}
	}
	for i := range 2 {
		res := a.HTTP(t.Context(), tab, request("web.example.com", "good", "127.0.0.1:1"))
		if !res.Admitted() || strings.Count(res.Assertion, ".") != 2 {
			t.Fatalf("request %d of the burst: admitted %v (%v), assertion %q; want admitted with a JWT", i, res.Admitted(), res.Decision.Err, res.Assertion)
		}
	}
	res := a.HTTP(t.Context(), tab, request("web.example.com", "good", "127.0.0.1:1"))
	code, typ := authn.HTTPStatus(res.Decision.Err)
	h := http.Header{}
	authn.SetRefusalHeaders(h, res.Decision.Err)
	if res.Admitted() || res.Decision.Result() != authz.ResultRateLimited || code != http.StatusTooManyRequests ||
		typ != "rate-limited" || h.Get("Retry-After") == "" || res.Assertion != "" {
		t.Errorf("over the burst: admitted %v, result %s, %d %s, Retry-After %q, assertion %q; want a 429 refusal without assertion",
			res.Admitted(), res.Decision.Result(), code, typ, h.Get("Retry-After"), res.Assertion)
	}
	if res := a.HTTP(t.Context(), tab, request("quiet.example.com", "good", "127.0.0.1:1")); !res.Admitted() || res.Assertion != "" {
		t.Errorf("identity_header false route: admitted %v, assertion %q; want admitted without one", res.Admitted(), res.Assertion)
	}
}

func TestAnonymousCallersByAddress(t *testing.T) {
	t.Parallel()
	a, tab := admitter(t, false, policies(t)), table(t)
	for _, remote := range []string{"192.0.2.1:1000", "192.0.2.2:1000"} {
		for i := range 3 {
			res := a.HTTP(t.Context(), tab, request("web.example.com", "", remote))
			if want := i < 2; res.Admitted() != want || res.Assertion != "" {
				t.Errorf("%s request %d: admitted %v, assertion %q; want admitted %v, no assertion for anonymous callers",
					remote, i, res.Admitted(), res.Assertion, want)
			}
		}
	}
}

func TestRateLimitedCountedOnce(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	auth, err := authn.New(authn.Config{StaticToken: "good"}, logging.Discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	gate, err := authz.NewGate(auth, reg)
	if err != nil {
		t.Fatal(err)
	}
	a, err := admission.NewWithPolicies(gate, reg, policies(t))
	if err != nil {
		t.Fatal(err)
	}
	tab := table(t)
	for range 3 { // a burst of 2, then one over the limit
		a.HTTP(t.Context(), tab, request("web.example.com", "good", "127.0.0.1:1"))
	}
	for result, want := range map[string]int{authz.ResultAllowed: 2, authz.ResultRateLimited: 1} {
		got := testutil.MetricValue(t, reg, "kedge_authz_decisions_total", map[string]string{"route": "web", "result": result})
		if int(got) != want {
			t.Errorf("kedge_authz_decisions_total{route=web,result=%s} = %v, want %d", result, got, want)
		}
	}
}
