package e2e

import (
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// TestGRPCBackpressure streams 8 MB of messages through kedge, on the gRPC port and on the HTTPS port, to a backend
// that reads nothing until released: the client must come to a stop, because kedge holds only a bounded amount of
// a call (the stream window on the gRPC port, the paced body on the HTTPS port; unpaced, the HTTPS port read
// everything), and once the backend reads, every message must arrive. The gRPC port must announce
// --server_grpc_stream_window_bytes.
func TestGRPCBackpressure(t *testing.T) {
	t.Parallel()
	svc := &testutil.GatedService{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Fixed windows: the backend takes 64 KiB and stops, whatever its bandwidth estimate.
	backend := grpc.NewServer(grpc.InitialWindowSize(64<<10), grpc.InitialConnWindowSize(64<<10))
	testpb.RegisterTestServiceServer(backend, svc)
	go func() { _ = backend.Serve(ln) }()
	t.Cleanup(backend.Stop)
	const window = 256 << 10
	k := startKedge(t, `{"grpc": {"routes": [{"backend_name": "gated", "service_name_matcher": "grpc.testing.TestService/*"}]}}`,
		fmt.Sprintf(`{"grpc": {"backends": [{"name": "gated", "host": {"dns_name": "127.0.0.1", "port": %d}}]}}`,
			ln.Addr().(*net.TCPAddr).Port),
		fmt.Sprintf("--server_grpc_stream_window_bytes=%d", window))

	t.Run("window announced", func(t *testing.T) {
		fr := testutil.H2Start(t, k.dialTLS(t, k.grpcAddr, "h2"))
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		settings, ok := f.(*http2.SettingsFrame)
		if !ok {
			t.Fatalf("first frame %v, want SETTINGS", f)
		}
		if v, ok := settings.Value(http2.SettingInitialWindowSize); !ok || v != window {
			t.Errorf("SETTINGS_INITIAL_WINDOW_SIZE %d (sent: %v), want %d", v, ok, window)
		}
	})

	for _, port := range []struct{ name, addr string }{{"gRPC port", k.grpcAddr}, {"HTTPS port", k.https}} {
		t.Run(port.name, func(t *testing.T) {
			open := svc.Arm()
			defer open()
			client := testpb.NewTestServiceClient(k.grpcConn(t, port.addr, ""))
			stream, err := client.StreamingInputCall(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			const messages, size = 8000, 995
			var sent atomic.Int64
			sendErr := make(chan error, 1)
			go func() {
				for range messages {
					if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, size)}}); err != nil {
						sendErr <- err
						return
					}
					sent.Add(1)
				}
				sendErr <- nil
			}()
			last := testutil.Settled(sent.Load, 500*time.Millisecond, 20*time.Second) // the client stopped
			if last >= messages {
				t.Fatalf("the client sent all %d messages to a backend that reads nothing: kedge took them all", messages)
			}
			t.Logf("the client stopped after %d of %d messages (%d KB)", last, messages, last*(size+5)/1000)
			open()
			if err := <-sendErr; err != nil {
				t.Fatalf("sending once the backend reads: %v", err)
			}
			resp, err := stream.CloseAndRecv()
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetAggregatedPayloadSize(); got != messages*size {
				t.Errorf("the backend received %d bytes, want %d", got, messages*size)
			}
		})
	}
}
