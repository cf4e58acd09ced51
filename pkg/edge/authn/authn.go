// Package authn establishes who a kedge caller is: a verified client certificate, an OIDC ID token (go-oidc, with a
// rate-limited key set, azp check and a per-token verification cache) or the static bearer token, taken from
// Proxy-Authorization. It also applies the global required permissions and maps denials to HTTP and gRPC statuses.
// Per-route checks live in package authz.
package authn

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kedge-proxy/kedge/pkg/shared/collector"
	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

const (
	minRetryBackoff = 250 * time.Millisecond
	maxRetryBackoff = 30 * time.Second
)

// Authenticator checks proxy credentials. Its methods are safe for concurrent use.
type Authenticator struct {
	log        logging.Logger
	static     *[sha256.Size]byte // SHA-256 of the static token, or nil
	oidc       *oidcAuth          // nil without OIDC
	requireAny []string           // global required permissions (any-of)
	decisions  *prometheus.CounterVec
}

// New validates cfg and builds an Authenticator. It does no network I/O: with OIDC, Run performs discovery, and until
// then Ready reports an error and tokens are refused. reg may be nil (no metrics exported).
func New(cfg Config, log logging.Logger, reg prometheus.Registerer) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Authenticator{
		log: log.With(logging.FieldComponent, "authn"),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kedge_auth_decisions_total",
			Help: "Proxy authentication decisions by method (oidc, static-token, client-cert, anonymous) and result " +
				"(allowed, no-token, unauthenticated, forbidden).",
		}, []string{"method", "result"}),
	}
	jwks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kedge_auth_jwks_fetches_total",
		Help: "JWKS fetches by result (ok, error) and refetches refused by the rate limit (rate_limited).",
	}, []string{"result"})
	// Several Authenticators on one registry (tests) share their collectors.
	var err error
	if a.decisions, err = collector.Register(reg, a.decisions); err != nil {
		return nil, fmt.Errorf("authn: registering metrics: %w", err)
	}
	if jwks, err = collector.Register(reg, jwks); err != nil {
		return nil, fmt.Errorf("authn: registering metrics: %w", err)
	}
	if cfg.StaticToken != "" {
		h := sha256.Sum256([]byte(cfg.StaticToken))
		a.static = &h
	}
	if c := cfg.OIDC; c != nil {
		oc := *c
		oc.RequiredPerms = append([]string(nil), c.RequiredPerms...)
		oc.Audiences = oc.clientIDs()[1:] // a copy, without repeats
		if oc.HTTPClient == nil {
			oc.HTTPClient = &http.Client{Timeout: 10 * time.Second}
		}
		if oc.Now == nil {
			oc.Now = time.Now
		}
		if oc.KeyRefetchInterval == 0 {
			oc.KeyRefetchInterval = DefaultKeyRefetchInterval
		}
		if oc.KeyRefreshInterval == 0 {
			oc.KeyRefreshInterval = DefaultKeyRefreshInterval
		}
		a.requireAny = oc.RequiredPerms
		a.oidc = &oidcAuth{
			cfg:          oc,
			now:          oc.Now,
			observeFetch: func(r string) { jwks.WithLabelValues(r).Inc() },
			cache:        newTokenCache(cacheSize),
			notReady:     fmt.Errorf("OIDC issuer %s not contacted yet", oc.IssuerURL),
		}
	}
	return a, nil
}

// Enabled reports whether token authentication (OIDC or the static token) is configured.
func (a *Authenticator) Enabled() bool { return a.static != nil || a.oidc != nil }

// Ready returns nil when the Authenticator can verify tokens, or why not ("OIDC issuer https://... unreachable: ...").
func (a *Authenticator) Ready() error {
	if a.oidc == nil {
		return nil
	}
	return a.oidc.ready()
}

// Run performs OIDC discovery and the first key fetch, retrying with backoff (and logging why) until they succeed,
// then refreshes the keys every KeyRefreshInterval (sooner if the issuer's Cache-Control max-age says so); a refresh
// forgets keys the issuer no longer publishes, and the verifications they made. It owns no goroutines beyond its own, returns nil when ctx is
// done, and must be called at most once. Without OIDC it just waits for ctx.
func (a *Authenticator) Run(ctx context.Context) error {
	o := a.oidc
	if o == nil {
		<-ctx.Done()
		return nil
	}
	backoff := minRetryBackoff
	var st *oidcState
	for st == nil {
		var err error
		st, err = o.discover(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		var mm *IssuerMismatchError
		if errors.As(err, &mm) {
			o.setNotReady(fmt.Errorf("OIDC issuer %s: %w; set --server_oidc_provider_url to the provider's issuer exactly", o.cfg.IssuerURL, err))
			a.log.Warn("OIDC issuer misconfigured, retrying", "issuer", o.cfg.IssuerURL, logging.FieldError, err,
				"retry_in", backoff.String())
		} else {
			o.setNotReady(fmt.Errorf("OIDC issuer %s unreachable: %w", o.cfg.IssuerURL, err))
			a.log.Warn("OIDC issuer unreachable, retrying", "issuer", o.cfg.IssuerURL, logging.FieldError, err,
				"retry_in", backoff.String())
		}
		if !sleep(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
	o.state.Store(st)
	o.setNotReady(nil)
	a.log.Info("OIDC issuer ready", "issuer", o.cfg.IssuerURL, "algorithms", strings.Join(st.algs, ","))

	for sleep(ctx, o.refreshWait(st.keys)) {
		if err := st.keys.refresh(ctx, true); err != nil && ctx.Err() == nil {
			a.log.Warn("refreshing OIDC signing keys; keeping the previous ones", "issuer", o.cfg.IssuerURL,
				logging.FieldError, err)
		}
	}
	return nil
}

// refreshWait is the time until the next background JWKS refresh: KeyRefreshInterval, or the issuer's shorter
// Cache-Control max-age, but not less than KeyRefetchInterval (an issuer saying max-age=0 is not polled in a loop).
func (o *oidcAuth) refreshWait(ks *keySet) time.Duration {
	wait := o.cfg.KeyRefreshInterval
	if ma := ks.cacheMaxAge(); ma > 0 && ma < wait {
		wait = max(ma, min(o.cfg.KeyRefetchInterval, wait))
	}
	return wait
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Authenticate checks the proxy credentials of one request: header is the Proxy-Authorization value ("" if none),
// peer the TLS state (nil without TLS). The identity always carries the verified client certificate's names.
//
//   - No token authentication configured: the certificate identity (or the anonymous one) and nil; a
//     Proxy-Authorization header is ignored.
//   - Token authentication configured, no header: an *Error wrapping ErrNoCredentials, together with the certificate
//     identity if there is one, so that a route allowing that identity can still admit the request (authz.Authorize).
//   - A token: its identity, or an *Error saying why it was refused. A valid token without one of the global
//     required permissions returns the identity and a Forbidden *Error (for the audit log).
//
// Whenever the error is not nil, the identity is for logging only (apart from the ErrNoCredentials case above).
func (a *Authenticator) Authenticate(ctx context.Context, header string, peer *tls.ConnectionState) (Identity, error) {
	cert := certIdentity(peer)
	if !a.Enabled() {
		a.count(cert.Method, nil)
		return cert, nil
	}
	header = strings.TrimSpace(header)
	if header == "" {
		err := unauthenticated("no Proxy-Authorization header", ErrNoCredentials)
		a.count(cert.Method, err)
		return cert, err
	}
	method := MethodOIDC
	if a.static != nil {
		method = MethodStaticToken
	}
	token, perr := parseBearer(header)
	if perr != nil {
		a.count(method, perr)
		return cert, perr
	}
	var id Identity
	var derr *Error
	if a.static != nil {
		id, derr = a.checkStatic(token)
	} else {
		id, derr = a.oidc.verify(ctx, token)
	}
	if derr == nil && len(a.requireAny) > 0 && !hasAny(id.Permissions, a.requireAny) {
		derr = forbidden(fmt.Sprintf("missing permission: one of %v", a.requireAny))
	}
	if id.Method == MethodAnonymous {
		id = cert
	} else {
		id.CertNames = cert.CertNames
	}
	if derr != nil {
		a.count(method, derr)
		return id, derr
	}
	a.count(method, nil)
	return id, nil
}

func (a *Authenticator) checkStatic(token string) (Identity, *Error) {
	h := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(h[:], a.static[:]) != 1 {
		return Identity{}, unauthenticated("bearer token is invalid", nil)
	}
	return Identity{Method: MethodStaticToken}, nil
}

// parseBearer extracts the token of "Bearer <token>" (scheme case-insensitive, exactly one space, RFC 7235).
func parseBearer(header string) (string, *Error) {
	scheme, token, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "bearer") {
		return "", unauthenticated("Proxy-Authorization is not a Bearer token", nil)
	}
	switch {
	case len(token) > MaxTokenBytes:
		return "", unauthenticated("bearer token too large", nil)
	case token == "" || !visibleASCII(token):
		return "", unauthenticated("Proxy-Authorization Bearer token is malformed", nil)
	}
	return token, nil
}

func hasAny(have, want []string) bool {
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

// count records one decision in kedge_auth_decisions_total.
func (a *Authenticator) count(method string, err error) {
	if method == MethodAnonymous {
		method = "anonymous"
	}
	result := "allowed"
	if err != nil {
		e := classify(err)
		switch {
		case e.Status == Forbidden:
			result = "forbidden"
		case method == MethodClientCert:
			result = "no-token"
		default:
			result = "unauthenticated"
		}
	}
	a.decisions.WithLabelValues(method, result).Inc()
}
