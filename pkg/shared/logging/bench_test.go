package logging_test

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/logging"
)

// BenchmarkInfo measures one per-request line as the proxies write it: a logger with a component field and about a
// dozen request fields, text format, to a discarding writer.
func BenchmarkInfo(b *testing.B) {
	for _, format := range []string{"text", "json"} {
		b.Run(format, func(b *testing.B) {
			l, err := logging.New(logging.Options{Level: "info", Format: format, Output: io.Discard})
			if err != nil {
				b.Fatal(err)
			}
			l = l.With(logging.FieldComponent, "httpproxy")
			boom := errors.New("upstream reset")
			b.ReportAllocs()
			for b.Loop() {
				l.Info("request",
					logging.FieldRequestID, "0123456789abcdef0123456789abcdef",
					logging.FieldMethod, "GET",
					logging.FieldHost, "svc.example.com",
					logging.FieldPath, "/api/v1/things",
					logging.FieldRoute, "svc",
					logging.FieldBackend, "svc-backend",
					logging.FieldEndpoint, "10.0.0.7:8080",
					logging.FieldStatus, 502,
					logging.FieldDuration, 1500*time.Microsecond,
					logging.FieldBytes, 1234,
					logging.FieldIdentity, "user@example.com",
					logging.FieldError, boom,
				)
			}
		})
	}
}
