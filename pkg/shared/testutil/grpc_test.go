package testutil_test

import (
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

func dialBackend(t *testing.T, b *testutil.GRPCBackend) testpb.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(b.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

func checkHeaderTrailer(t *testing.T, header, trailer metadata.MD, name string) {
	t.Helper()
	if got := header.Get("x-backend"); len(got) != 1 || got[0] != name {
		t.Errorf("header x-backend = %v, want [%s]", got, name)
	}
	if got := trailer.Get("x-trailer"); len(got) != 1 || got[0] != name {
		t.Errorf("trailer x-trailer = %v, want [%s]", got, name)
	}
}

func TestGRPCUnary(t *testing.T) {
	t.Parallel()
	b := testutil.NewGRPCBackend(t, "g1")
	c := dialBackend(t, b)
	tests := []struct {
		name     string
		req      *testpb.SimpleRequest
		wantCode codes.Code
	}{
		{"ok", &testpb.SimpleRequest{ResponseSize: 10}, codes.OK},
		{"requested status", &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "nope"}}, codes.NotFound},
		{"bad size", &testpb.SimpleRequest{ResponseSize: -1}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var header, trailer metadata.MD
			ctx := metadata.AppendToOutgoingContext(t.Context(), "x-case", tt.name)
			resp, err := c.UnaryCall(ctx, tt.req, grpc.Header(&header), grpc.Trailer(&trailer))
			if code := status.Code(err); code != tt.wantCode {
				t.Fatalf("code = %v (%v), want %v", code, err, tt.wantCode)
			}
			checkHeaderTrailer(t, header, trailer, "g1")
			if got := b.LastMetadata().Get("x-case"); len(got) != 1 || got[0] != tt.name {
				t.Errorf("LastMetadata x-case = %v, want [%s]", got, tt.name)
			}
			if err == nil && (len(resp.GetPayload().GetBody()) != int(tt.req.ResponseSize) || resp.GetServerId() != "g1") {
				t.Errorf("payload %d bytes, server_id %q", len(resp.GetPayload().GetBody()), resp.GetServerId())
			}
		})
	}
	if b.Calls() != int64(len(tests)) {
		t.Errorf("Calls = %d, want %d", b.Calls(), len(tests))
	}
}

func TestGRPCStreams(t *testing.T) {
	t.Parallel()
	b := testutil.NewGRPCBackend(t, "g2")
	c := dialBackend(t, b)
	params := []*testpb.ResponseParameters{{Size: 1}, {Size: 2, IntervalUs: 1000}, {Size: 3}}

	t.Run("server streaming", func(t *testing.T) {
		t.Parallel()
		s, err := c.StreamingOutputCall(t.Context(), &testpb.StreamingOutputCallRequest{ResponseParameters: params})
		if err != nil {
			t.Fatal(err)
		}
		got := recvSizes(t, s.Recv)
		if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
			t.Errorf("sizes = %v, want [1 2 3]", got)
		}
		header, _ := s.Header()
		checkHeaderTrailer(t, header, s.Trailer(), "g2")
	})
	t.Run("client streaming", func(t *testing.T) {
		t.Parallel()
		s, err := c.StreamingInputCall(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{3, 4} {
			if err := s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := s.CloseAndRecv()
		if err != nil || resp.GetAggregatedPayloadSize() != 7 {
			t.Errorf("aggregated = %d, %v; want 7", resp.GetAggregatedPayloadSize(), err)
		}
	})
	t.Run("full duplex", func(t *testing.T) {
		t.Parallel()
		s, err := c.FullDuplexCall(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Header(); err != nil { // sent before any message
			t.Fatal(err)
		}
		for i := range 2 {
			if err := s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: params[:1]}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != nil {
				t.Fatalf("recv %d: %v", i, err)
			}
		}
		_ = s.Send(&testpb.StreamingOutputCallRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Aborted)}})
		if _, err := s.Recv(); status.Code(err) != codes.Aborted {
			t.Errorf("after requested status: %v, want Aborted", err)
		}
	})
	t.Run("half duplex", func(t *testing.T) {
		t.Parallel()
		s, err := c.HalfDuplexCall(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: params}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if got := recvSizes(t, s.Recv); len(got) != 6 {
			t.Errorf("got %d responses, want 6", len(got))
		}
	})
}

func recvSizes(t *testing.T, recv func() (*testpb.StreamingOutputCallResponse, error)) []int {
	t.Helper()
	var sizes []int
	for range 1000 {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return sizes
		}
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		sizes = append(sizes, len(m.GetPayload().GetBody()))
	}
	t.Fatal("stream did not end")
	return nil
}
