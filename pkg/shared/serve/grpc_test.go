package serve_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/serve"
)

// gatedService sends one message, then waits for release (or the end of the RPC) before sending a second.
type gatedService struct {
	testpb.UnimplementedTestServiceServer
	entered chan struct{}
	release chan struct{}
}

func (s *gatedService) StreamingOutputCall(_ *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	if err := stream.Send(&testpb.StreamingOutputCallResponse{}); err != nil {
		return err
	}
	s.entered <- struct{}{}
	select {
	case <-s.release:
	case <-stream.Context().Done():
		return status.FromContextError(stream.Context().Err()).Err()
	}
	return stream.Send(&testpb.StreamingOutputCallResponse{})
}

func TestGRPCDrain(t *testing.T) {
	t.Parallel()
	const drain = 300 * time.Millisecond
	tests := []struct {
		name     string
		release  bool // the stream finishes during the drain
		wantErr  error
		wantCode codes.Code
	}{
		{"stream completes within drain", true, nil, codes.OK},
		{"stream cut at deadline", false, serve.ErrDrainTimeout, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			svc := &gatedService{entered: make(chan struct{}, 1), release: make(chan struct{})}
			srv := grpc.NewServer()
			testpb.RegisterTestServiceServer(srv, svc)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- serve.GRPC(ctx, srv, ln, drain) }()

			cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cc.Close() }()
			stream, err := testpb.NewTestServiceClient(cc).StreamingOutputCall(t.Context(), &testpb.StreamingOutputCallRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatal(err)
			}
			<-svc.entered
			start := time.Now()
			cancel()
			waitRefused(t, addr)
			if tt.release {
				close(svc.release)
			}
			_, err = stream.Recv()
			if tt.release && err == nil {
				_, err = stream.Recv()
				if errors.Is(err, io.EOF) {
					err = nil
				}
			}
			if code := status.Code(err); code != tt.wantCode {
				t.Errorf("stream ended with %v, want code %v", err, tt.wantCode)
			}
			select {
			case err := <-done:
				if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
					t.Errorf("GRPC = %v, want %v", err, tt.wantErr)
				}
			case <-time.After(drain + 2*time.Second):
				t.Fatal("GRPC did not return")
			}
			if took := time.Since(start); took > drain+time.Second {
				t.Errorf("GRPC returned after %v, want at most %v", took, drain+time.Second)
			}
		})
	}
}
