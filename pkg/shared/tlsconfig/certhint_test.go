package tlsconfig_test

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
	"github.com/kedge-proxy/kedge/pkg/shared/tlsconfig"
)

func TestCertRequestsExplainsMissingClientCertificate(t *testing.T) {
	t.Parallel()
	ca := testutil.NewCA(t)
	for _, tc := range []struct {
		name      string
		auth      tls.ClientAuthType
		wantHint  bool
		wantError bool
	}{
		{"required", tls.RequireAndVerifyClientCert, true, true},
		{"optional", tls.VerifyClientCertIfGiven, true, false},
		{"not requested", tls.NoClientCert, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server(t)}, ClientAuth: tc.auth, ClientCAs: ca.Pool()}
			srv.StartTLS()
			defer srv.Close()
			cfg := &tls.Config{RootCAs: ca.Pool()}
			rec := tlsconfig.WatchCertRequests(cfg, "set --client_tls_cert_file")
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
			resp, err := c.Get(srv.URL)
			if err == nil {
				resp.Body.Close()
			}
			if (err != nil) != tc.wantError {
				t.Fatalf("request error = %v, want error %v", err, tc.wantError)
			}
			got := rec.Explain(errors.New("broken pipe"))
			if hinted := strings.Contains(got.Error(), "set --client_tls_cert_file"); hinted != tc.wantHint {
				t.Errorf("Explain = %q, want hint %v", got, tc.wantHint)
			}
		})
	}
	if err := tlsconfig.WatchCertRequests(&tls.Config{Certificates: []tls.Certificate{ca.Client(t, "me")}}, "x").Explain(errors.New("e")); err.Error() != "e" {
		t.Errorf("with a certificate configured Explain changed the error: %v", err)
	}
}
