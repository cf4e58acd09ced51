package serve_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/kedge-proxy/kedge/pkg/shared/serve"
	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// stillOpen reports whether server still carries bytes to client.
func stillOpen(t *testing.T, server, client net.Conn) error {
	t.Helper()
	if _, err := server.Write([]byte("x")); err != nil {
		return err
	}
	_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadFull(client, make([]byte, 1))
	return err
}

func TestTrackerDrain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// finishes: the connection's owner untracks it (without closing it) during the drain; otherwise it hangs.
		finishes bool
		deadline time.Duration
	}{
		{"a connection that finishes in time is left to its owner", true, 10 * time.Second},
		{"a connection that hangs is closed at the deadline", false, 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := serve.NewTracker()
			server, client := testutil.TCPPair(t)
			untrack := tr.Track(server)
			draining := tr.Draining()
			if tt.finishes {
				// The owner finishes once it sees the drain start, as a tunnel winding down would.
				go func() {
					<-draining
					time.Sleep(50 * time.Millisecond)
					untrack()
				}()
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(t.Context(), tt.deadline)
			defer cancel()
			closed, err := tr.Drain(ctx)
			took := time.Since(start)
			select {
			case <-draining:
			default:
				t.Error("Draining did not fire")
			}

			if tt.finishes {
				if err != nil || closed != 0 {
					t.Fatalf("Drain = %d, %v; want 0, nil once the connection finished", closed, err)
				}
				if ctx.Err() != nil {
					t.Errorf("Drain returned after the deadline (%v), not when the connection finished", took)
				}
				if err := stillOpen(t, server, client); err != nil {
					t.Errorf("Drain closed a connection that finished in time: %v", err)
				}
			} else {
				if !errors.Is(err, serve.ErrDrainTimeout) || closed != 1 {
					t.Fatalf("Drain = %d, %v; want 1, ErrDrainTimeout", closed, err)
				}
				if took < tt.deadline {
					t.Errorf("Drain returned after %v, before the %v deadline", took, tt.deadline)
				}
				_ = client.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
					t.Errorf("peer of the cut connection read %d bytes, %v; want EOF", n, err)
				}
			}

			// The tracker is closed now: a late connection is closed at once.
			late, lateClient := testutil.TCPPair(t)
			tr.Track(late)()
			_ = lateClient.SetReadDeadline(time.Now().Add(5 * time.Second))
			if n, err := lateClient.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Errorf("connection tracked after Drain: peer read %d bytes, %v; want EOF", n, err)
			}
		})
	}
}

func TestTrackerDrainIdle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name string
		tr   *serve.Tracker
	}{
		{"nil tracker", nil},
		{"empty tracker", serve.NewTracker()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Nothing in flight: nothing to time out, even with the deadline already gone.
			if closed, err := tt.tr.Drain(ctx); err != nil || closed != 0 {
				t.Errorf("Drain = %d, %v; want 0, nil", closed, err)
			}
		})
	}
}
