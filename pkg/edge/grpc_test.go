package edge

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// TestGRPCPortLimits checks that the gRPC port, like the HTTPS port, bounds how long a client may take to open a
// connection, how long it may keep one idle and how much header it may send; grpc-go's defaults are 120 s, forever
// and 16 MiB.
func TestGRPCPortLimits(t *testing.T) {
	t.Parallel()
	const handshake, idle = 300 * time.Millisecond, 300 * time.Millisecond
	addr := serveGRPC(t, grpc.NewServer(grpcServerOptions(handshake, idle, 0)...))
	dial := func(t *testing.T) net.Conn { return dialDeadline(t, addr) }

	t.Run("silent client is dropped", func(t *testing.T) {
		t.Parallel()
		c := dial(t)
		_, err := io.Copy(io.Discard, c) // the server's SETTINGS, then its close
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("a client that never sent the HTTP/2 preface is still connected after 5s")
		}
	})

	t.Run("header list bounded", func(t *testing.T) {
		t.Parallel()
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		call := func(md metadata.MD) error {
			ctx, cancel := context.WithTimeout(metadata.NewOutgoingContext(t.Context(), md), 5*time.Second)
			defer cancel()
			return cc.Invoke(ctx, "/pkg.Svc/Method", &emptypb.Empty{}, &emptypb.Empty{})
		}
		// The server knows no method: a call it accepted ends Unimplemented.
		if err := call(metadata.Pairs("x-small", "v")); status.Code(err) != codes.Unimplemented {
			t.Fatalf("small metadata: %v, want Unimplemented", err)
		}
		if err := call(metadata.Pairs("x-big", strings.Repeat("v", 100<<10))); status.Code(err) == codes.Unimplemented {
			t.Fatalf("100 KiB of metadata was accepted, want the 64 KiB header limit of the HTTPS port")
		}
	})

	t.Run("idle connection gets GOAWAY", func(t *testing.T) {
		t.Parallel()
		fr := testutil.H2Start(t, dial(t))
		for range 100 {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("no GOAWAY for an idle connection: %v", err)
			}
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				return
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = fr.WriteSettingsAck()
				}
			}
		}
		t.Fatal("no GOAWAY in 100 frames")
	})
}

// TestGRPCPortStreamWindow checks that --server_grpc_stream_window_bytes bounds what a call holds on the gRPC port:
// the server announces the window, and a client that sends past it to a handler that reads nothing has its stream
// reset (FLOW_CONTROL_ERROR) instead of being buffered.
func TestGRPCPortStreamWindow(t *testing.T) {
	t.Parallel()
	const window = 256 << 10
	stuck := grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		<-ss.Context().Done()
		return ss.Context().Err()
	})
	addr := serveGRPC(t, grpc.NewServer(append(grpcServerOptions(10*time.Second, time.Minute, window), stuck)...))
	fr := testutil.H2Start(t, dialDeadline(t, addr))
	// The server's SETTINGS come first.
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	settings, ok := f.(*http2.SettingsFrame)
	if !ok || settings.IsAck() {
		t.Fatalf("first frame %v, want the server's SETTINGS", f)
	}
	if v, ok := settings.Value(http2.SettingInitialWindowSize); !ok || v != window {
		t.Fatalf("SETTINGS_INITIAL_WINDOW_SIZE %d (sent: %v), want %d", v, ok, window)
	}
	if err := fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	// Then the connection's window, opened from HTTP/2's initial 65535 to 16 MiB so that it holds no stream back.
	f, err = fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if wu, ok := f.(*http2.WindowUpdateFrame); !ok || wu.StreamID != 0 || wu.Increment != 16<<20-65535 {
		t.Fatalf("second frame %v, want the connection's WINDOW_UPDATE to 16 MiB", f)
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, hf := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/pkg.Svc/Stuck"},
		{":authority", "kedge.test"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	// Twice the window, in frames of 16 KiB, without waiting for WINDOW_UPDATE: the handler reads nothing, so the
	// server hands none of the stream's window back.
	chunk := make([]byte, 16<<10)
	go func() {
		for range 2 * window / len(chunk) {
			if err := fr.WriteData(1, false, chunk); err != nil {
				return
			}
		}
	}()
	for range 200 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no reset for a stream sent past its window: %v", err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID != 1 || f.ErrCode != http2.ErrCodeFlowControl {
				t.Fatalf("stream %d reset with %v, want stream 1 with FLOW_CONTROL_ERROR", f.StreamID, f.ErrCode)
			}
			return
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v: the connection's window was overrun, want only the stream's", f.ErrCode)
		}
	}
	t.Fatal("no reset in 200 frames")
}

// serveGRPC serves srv on an ephemeral loopback port until the test ends and returns its address.
func serveGRPC(t *testing.T, srv *grpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return ln.Addr().String()
}

// dialDeadline connects to addr with a 5-second deadline on the connection, closed when the test ends.
func dialDeadline(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}
