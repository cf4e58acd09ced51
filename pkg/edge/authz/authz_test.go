package authz

import (
	"errors"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/edge/authn"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	token := authn.Identity{Method: authn.MethodOIDC, Subject: "u1", Permissions: []string{"read", "deploy"}}
	cert := authn.Identity{Method: authn.MethodClientCert, Subject: "svc-a", CertNames: []string{"svc-a", "svc-a.example.com", "spiffe://example.org/a"}}
	both := token
	both.CertNames = cert.CertNames
	static := authn.Identity{Method: authn.MethodStaticToken}

	tests := []struct {
		name   string
		id     authn.Identity
		req    Requirement
		status authn.Status // 0: allowed
		reason string
	}{
		{name: "empty requirement, token", id: token},
		{name: "empty requirement, anonymous", id: authn.Identity{}},
		{name: "permission present", id: token, req: Requirement{Permissions: []string{"admin", "deploy"}}},
		{name: "permission absent", id: token, req: Requirement{Permissions: []string{"admin"}}, status: authn.Forbidden, reason: "missing permission: one of [admin]"},
		{name: "permission case differs", id: token, req: Requirement{Permissions: []string{"Deploy"}}, status: authn.Forbidden, reason: "missing permission"},
		{name: "static token has no permissions", id: static, req: Requirement{Permissions: []string{"deploy"}}, status: authn.Forbidden, reason: "missing permission: one of [deploy]"},
		{name: "identity allowed by CN", id: cert, req: Requirement{Identities: []string{"svc-a"}}},
		{name: "identity allowed by DNS SAN", id: cert, req: Requirement{Identities: []string{"svc-a.example.com"}}},
		{name: "identity allowed by URI SAN", id: cert, req: Requirement{Identities: []string{"spiffe://example.org/a"}}},
		{name: "identity not allowed", id: cert, req: Requirement{Identities: []string{"svc-b"}}, status: authn.Forbidden, reason: "client certificate not allowed"},
		{name: "identity is exact, not a suffix", id: cert, req: Requirement{Identities: []string{"example.com"}}, status: authn.Forbidden, reason: "client certificate not allowed"},
		{name: "identity required, token without cert", id: token, req: Requirement{Identities: []string{"svc-a"}}, status: authn.Forbidden, reason: "requires an allowed client certificate"},
		{name: "either list: permission", id: token, req: Requirement{Permissions: []string{"read"}, Identities: []string{"svc-x"}}},
		{name: "either list: identity", id: both, req: Requirement{Permissions: []string{"admin"}, Identities: []string{"svc-a"}}},
		{name: "either list: neither", id: both, req: Requirement{Permissions: []string{"admin"}, Identities: []string{"svc-x"}}, status: authn.Forbidden, reason: "missing permission: one of [admin] (and client certificate not allowed)"},
		{name: "anonymous on a protected route", id: authn.Identity{}, req: Requirement{Permissions: []string{"read"}}, status: authn.Unauthenticated, reason: "credentials required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Check(tt.id, tt.req)
			if tt.status == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			var e *authn.Error
			if !errors.As(err, &e) || e.Status != tt.status || !strings.Contains(e.Reason, tt.reason) {
				t.Fatalf("Check = %v, want %v containing %q", err, tt.status, tt.reason)
			}
		})
	}
}

func TestAuthorize(t *testing.T) {
	t.Parallel()
	cert := authn.Identity{Method: authn.MethodClientCert, Subject: "svc-a", CertNames: []string{"svc-a"}}
	noCred := &authn.Error{Status: authn.Unauthenticated, Reason: "no Proxy-Authorization header", Err: authn.ErrNoCredentials}
	badToken := &authn.Error{Status: authn.Unauthenticated, Reason: "token expired"}
	globalDenied := &authn.Error{Status: authn.Forbidden, Reason: "missing permission: one of [proxy]"}
	token := authn.Identity{Method: authn.MethodOIDC, Subject: "u1", Permissions: []string{"read"}}

	tests := []struct {
		name    string
		id      authn.Identity
		authErr error
		req     Requirement
		want    error // nil: allowed; otherwise errors.Is target or a status check below
		status  authn.Status
	}{
		{name: "token ok, route ok", id: token, req: Requirement{Permissions: []string{"read"}}},
		{name: "token ok, route denies", id: token, req: Requirement{Permissions: []string{"write"}}, status: authn.Forbidden},
		{name: "no token, cert allowed by route", id: cert, authErr: noCred, req: Requirement{Identities: []string{"svc-a"}}},
		{name: "no token, cert not allowed", id: cert, authErr: noCred, req: Requirement{Identities: []string{"svc-b"}}, want: noCred},
		{name: "no token, route without identities", id: cert, authErr: noCred, req: Requirement{}, want: noCred},
		{name: "no token, no cert", authErr: noCred, req: Requirement{Identities: []string{"svc-a"}}, want: noCred},
		{name: "bad token with an allowed cert", id: cert, authErr: badToken, req: Requirement{Identities: []string{"svc-a"}}, want: badToken},
		{name: "global permission missing", id: token, authErr: globalDenied, req: Requirement{}, want: globalDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Authorize(tt.id, tt.authErr, tt.req)
			switch {
			case tt.want != nil:
				if err != tt.want {
					t.Fatalf("Authorize = %v, want %v", err, tt.want)
				}
			case tt.status != 0:
				var e *authn.Error
				if !errors.As(err, &e) || e.Status != tt.status {
					t.Fatalf("Authorize = %v, want status %v", err, tt.status)
				}
			case err != nil:
				t.Fatalf("Authorize: %v", err)
			}
		})
	}
}
