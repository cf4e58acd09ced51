package edge

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TestGRPCPortLimits checks that the gRPC port, like the HTTPS port, bounds how long a client may take to open a
// connection, how long it may keep one idle and how much header it may send; grpc-go's defaults are 120 s, forever
// and 16 MiB.
func TestGRPCPortLimits(t *testing.T) {
	t.Parallel()
	const handshake, idle = 300 * time.Millisecond, 300 * time.Millisecond
	srv := grpc.NewServer(grpcServerOptions(handshake, idle)...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })

	dial := func(t *testing.T) net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}

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
		cc, err := grpc.NewClient("passthrough:///"+ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
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
		c := dial(t)
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(c, c)
		if err := fr.WriteSettings(); err != nil {
			t.Fatal(err)
		}
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
