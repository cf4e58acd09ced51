package wire_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

func TestRemoveConnectionHeaders(t *testing.T) {
	t.Parallel()
	in := func() http.Header {
		return http.Header{
			"Connection":        {"keep-alive, X-Hop", "Upgrade"},
			"X-Hop":             {"1"},
			"Keep-Alive":        {"timeout=5"},
			"Proxy-Connection":  {"keep-alive"},
			"Te":                {"trailers"},
			"Trailer":           {"X-Sum"},
			"Transfer-Encoding": {"chunked"},
			"Upgrade":           {"websocket"},
			"X-End-To-End":      {"kept"},
			"Authorization":     {"Bearer t"},
		}
	}
	tests := []struct {
		name        string
		keepUpgrade bool
		want        []string
	}{
		{"plain request", false, []string{"Authorization", "X-End-To-End"}},
		{"upgrade request", true, []string{"Authorization", "Connection", "Upgrade", "X-End-To-End", "X-Hop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := in()
			wire.RemoveConnectionHeaders(h, tt.keepUpgrade)
			var got []string
			for k := range h {
				got = append(got, k)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("left %v, want %v", got, tt.want)
			}
		})
	}
}

func TestHopMetadata(t *testing.T) {
	t.Parallel()
	drop := []string{":authority", ":path", "proxy-authorization", "connection", "keep-alive", "proxy-connection", "te",
		"trailer", "transfer-encoding", "upgrade", "host", "content-type", "content-length", "user-agent",
		"grpc-accept-encoding", "grpc-encoding", "grpc-timeout", "grpc-status", "grpc-message",
		"grpc-status-details-bin", "grpc-message-type", "grpc-previous-rpc-attempts", "grpc-retry-pushback-ms"}
	keep := []string{"authorization", "x-kedge-request-id", "x-kedge-info-logs", "x-custom", "grpc-trace-bin",
		"x-forwarded-for", "cookie"}
	for _, k := range drop {
		if !wire.HopMetadata(k) {
			t.Errorf("HopMetadata(%q) = false, want true", k)
		}
	}
	for _, k := range keep {
		if wire.HopMetadata(k) {
			t.Errorf("HopMetadata(%q) = true, want false", k)
		}
	}
	if !wire.ConnectionHeader("TRANSFER-encoding") || wire.ConnectionHeader("Content-Type") {
		t.Error("ConnectionHeader must ignore case and know only connection headers")
	}
}
