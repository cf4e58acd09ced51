package authn

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		err           error
		wantHTTP      int
		wantType      wire.ErrorType
		wantCode      codes.Code
		wantMsg       string
		wantChallenge bool
	}{
		{name: "unauthenticated", err: unauthenticated("token expired", nil), wantHTTP: 401, wantType: wire.ErrUnauthorized,
			wantCode: codes.Unauthenticated, wantMsg: "unauthenticated: token expired", wantChallenge: true},
		{name: "no credentials", err: unauthenticated("no Proxy-Authorization header", ErrNoCredentials), wantHTTP: 401,
			wantType: wire.ErrUnauthorized, wantCode: codes.Unauthenticated, wantMsg: "unauthenticated: no Proxy-Authorization header", wantChallenge: true},
		{name: "forbidden", err: forbidden("missing permission: one of [a b]"), wantHTTP: 403, wantType: wire.ErrForbidden,
			wantCode: codes.PermissionDenied, wantMsg: "forbidden: missing permission: one of [a b]"},
		{name: "wrapped forbidden", err: fmt.Errorf("route x: %w", forbidden("nope")), wantHTTP: 403, wantType: wire.ErrForbidden,
			wantCode: codes.PermissionDenied, wantMsg: "forbidden: nope"},
		{name: "foreign error fails closed", err: errors.New("boom"), wantHTTP: 401, wantType: wire.ErrUnauthorized,
			wantCode: codes.Unauthenticated, wantMsg: "unauthenticated: authentication failed", wantChallenge: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, typ := HTTPStatus(tt.err)
			if code != tt.wantHTTP || typ != tt.wantType {
				t.Errorf("HTTPStatus = %d %q, want %d %q", code, typ, tt.wantHTTP, tt.wantType)
			}
			st := StatusOf(tt.err)
			if st.Code() != tt.wantCode || st.Message() != tt.wantMsg {
				t.Errorf("StatusOf = %v %q, want %v %q", st.Code(), st.Message(), tt.wantCode, tt.wantMsg)
			}
			rec := httptest.NewRecorder()
			WriteHTTPError(rec, tt.err)
			res := rec.Result()
			if res.StatusCode != tt.wantHTTP || res.Header.Get(wire.HeaderKedgeErrorType) != string(tt.wantType) ||
				res.Header.Get(wire.HeaderKedgeError) != tt.wantMsg || rec.Body.String() != tt.wantMsg+"\n" {
				t.Errorf("WriteHTTPError wrote %d %v %q", res.StatusCode, res.Header, rec.Body.String())
			}
			if got := res.Header.Get(wire.HeaderProxyAuthn) == "Bearer"; got != tt.wantChallenge {
				t.Errorf("Proxy-Authenticate: Bearer present = %v, want %v", got, tt.wantChallenge)
			}
		})
	}
	if StatusOf(nil) != nil {
		t.Errorf("StatusOf(nil) != nil")
	}
}

func TestIdentityString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   Identity
		want string
	}{
		{Identity{}, "anonymous"},
		{Identity{Method: MethodOIDC, Subject: "u1", Email: "u@example.com", Permissions: []string{"p"}}, "oidc:sub=u1,email=u@example.com"},
		{Identity{Method: MethodOIDC, Subject: "u1"}, "oidc:sub=u1"},
		{Identity{Method: MethodOIDC, Subject: "u1\nforged=1"}, "oidc:sub=u1?forged=1"},
		{Identity{Method: MethodOIDC, Subject: "u1", CertNames: []string{"svc"}}, "oidc:sub=u1,cert:name=svc"},
		{Identity{Method: MethodStaticToken}, "static-token"},
		{Identity{Method: MethodClientCert, Subject: "alice", CertNames: []string{"alice", "a.example.com"}}, "cert:CN=alice"},
		{Identity{Method: MethodClientCert, CertNames: []string{"a.example.com"}}, "cert:name=a.example.com"},
	}
	for _, tt := range tests {
		if got := tt.id.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.id, got, tt.want)
		}
	}
}
