package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// TestRunShutdownDelay: after the context ends, /readyz answers 503 while the HTTPS port still accepts and serves
// (with Connection: close); the delay ends when it elapses or SkipShutdownDelay is called, then Run drains and
// returns and the HTTPS port refuses connections.
func TestRunShutdownDelay(t *testing.T) {
	tests := []struct {
		name  string
		delay time.Duration
		skip  bool // end the delay with SkipShutdownDelay (a second SIGTERM)
	}{
		{"ended by a second signal", time.Hour, true},
		{"elapses", 300 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, deps := testConfig(t)
			cfg.ShutdownDelay = tt.delay
			srv, err := New(cfg, deps)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx) }()
			debug, https, _ := srv.Addrs()
			tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // our own test certificate
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
			waitStatus(t, client, "http://"+debug+"/readyz", http.StatusOK)

			cancel()
			waitStatus(t, client, "http://"+debug+"/readyz", http.StatusServiceUnavailable)
			if tt.skip {
				// Still serving: a request on a new connection gets kedge's answer, and is told to reconnect.
				resp, err := client.Get("https://" + https + "/")
				if err != nil {
					t.Fatalf("HTTPS request during the shutdown delay: %v", err)
				}
				resp.Body.Close()
				if !resp.Close {
					t.Error("a response during the shutdown delay lacks Connection: close")
				}
				select {
				case err := <-done:
					t.Fatalf("Run returned during the shutdown delay: %v", err)
				default:
				}
				srv.SkipShutdownDelay()
				srv.SkipShutdownDelay() // idempotent
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run returned %v", err)
				}
			case <-time.After(tt.delay%time.Hour + cfg.DrainTimeout + 10*time.Second):
				t.Fatal("Run did not return after the shutdown delay")
			}
			tr.CloseIdleConnections()
			if resp, err := client.Get("https://" + https + "/"); err == nil {
				resp.Body.Close()
				t.Errorf("the HTTPS port still answers after Run returned: %s", resp.Status)
			}
		})
	}
}

// waitStatus polls url until it answers want.
func waitStatus(t *testing.T, client *http.Client, url string, want int) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("%s to answer %d", url, want), func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == want
	})
}
