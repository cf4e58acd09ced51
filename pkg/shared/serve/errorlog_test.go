package serve_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
	"github.com/kedge-proxy/kedge/pkg/shared/serve"
)

func TestErrorLogLevels(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line, level string
	}{
		{"http: TLS handshake error from 1.2.3.4:5: EOF", "level=debug"},
		{"http: panic serving 1.2.3.4:5: boom", "level=warning"},
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log, err := logging.New(logging.Options{Level: "debug", Output: &buf})
			if err != nil {
				t.Fatal(err)
			}
			srv := serve.HTTPServer(http.NotFoundHandler(), serve.HTTPOptions{Name: "http_tls"}, log)
			srv.ErrorLog.Print(tt.line)
			out := buf.String()
			if !strings.Contains(out, tt.level) || !strings.Contains(out, "component=http_tls") {
				t.Errorf("log line %q, want %s and component=http_tls", out, tt.level)
			}
		})
	}
}
