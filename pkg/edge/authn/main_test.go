package authn

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil/oidcissuer"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testClientID = "kedge"

// fakeClock is an injectable clock the tests move forward by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// oidcConfig is the configuration most tests use: client "kedge", permissions in "perms", "proxy" required.
func oidcConfig(iss *oidcissuer.Issuer) *OIDCConfig {
	return &OIDCConfig{
		IssuerURL:     iss.URL(),
		ClientID:      testClientID,
		PermsClaim:    "perms",
		RequiredPerms: []string{"proxy"},
		HTTPClient:    iss.HTTPClient(),
	}
}

// startAuth builds an Authenticator for cfg and runs it until the test ends. It does not wait for readiness.
func startAuth(tb testing.TB, cfg Config, reg prometheus.Registerer) *Authenticator {
	tb.Helper()
	a, err := New(cfg, logging.Discard(), reg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Run: %v", err)
		}
	})
	return a
}

// startOIDC runs an Authenticator against iss and waits until it is ready.
func startOIDC(tb testing.TB, iss *oidcissuer.Issuer, mutate ...func(*OIDCConfig)) *Authenticator {
	tb.Helper()
	cfg := oidcConfig(iss)
	for _, m := range mutate {
		m(cfg)
	}
	a := startAuth(tb, Config{OIDC: cfg}, prometheus.NewRegistry())
	testutil.Eventually(tb, "authenticator ready", func() bool { return a.Ready() == nil })
	return a
}

// wantDenied checks that err is an *Error with status and a reason containing reason, and that it does not echo
// token.
func wantDenied(t *testing.T, err error, status Status, reason, token string) {
	t.Helper()
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("error = %#v, want *Error", err)
	}
	if e.Status != status || !strings.Contains(e.Reason, reason) {
		t.Errorf("error = %v (status %v), want status %v and reason containing %q", e, e.Status, status, reason)
	}
	if token != "" {
		for _, part := range strings.Split(token, ".") {
			if len(part) > 8 && (strings.Contains(e.Error(), part) || (e.Err != nil && strings.Contains(e.Err.Error(), part))) {
				t.Errorf("error %q echoes part of the token", e)
			}
		}
	}
}
