package grpcproxy

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/edge/route"
	"github.com/kedge-proxy/kedge/pkg/shared/wire"
)

const streamMessages = 20

func payload(s string) *testgrpc.Payload { return &testgrpc.Payload{Body: []byte(s)} }

func TestStreamingKinds(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: []route.GRPCRoute{{Service: "grpc.testing.TestService/*", Backend: "a"}}, backends: []string{"a"}})
	client := e.client(t, "")
	tests := []struct {
		name string
		run  func(t *testing.T) []string // returns what arrived, in order
		want []string
	}{
		{
			name: "unary",
			run: func(t *testing.T) []string {
				resp, err := client.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{Payload: payload("hello")})
				if err != nil {
					t.Fatalf("UnaryCall: %v", err)
				}
				return []string{string(resp.GetPayload().GetBody())}
			},
			want: []string{"hello"},
		},
		{
			name: "client streaming",
			run: func(t *testing.T) []string {
				stream, err := client.StreamingInputCall(callCtx(t))
				if err != nil {
					t.Fatalf("StreamingInputCall: %v", err)
				}
				for i := range streamMessages {
					if err := stream.Send(&testgrpc.StreamingInputCallRequest{Payload: payload(fmt.Sprint(i))}); err != nil {
						t.Fatalf("Send %d: %v", i, err)
					}
				}
				if _, err := stream.CloseAndRecv(); err != nil {
					t.Fatalf("CloseAndRecv: %v", err)
				}
				return strings.Split(stream.Trailer().Get("x-received")[0], ",")
			},
			want: numbered("", streamMessages),
		},
		{
			name: "server streaming",
			run: func(t *testing.T) []string {
				req := &testgrpc.StreamingOutputCallRequest{}
				for range streamMessages {
					req.ResponseParameters = append(req.ResponseParameters, &testgrpc.ResponseParameters{})
				}
				stream, err := client.StreamingOutputCall(callCtx(t), req)
				if err != nil {
					t.Fatalf("StreamingOutputCall: %v", err)
				}
				return recvAll(t, stream)
			},
			want: numbered("a-", streamMessages),
		},
		{
			name: "bidi ping-pong",
			run: func(t *testing.T) []string {
				stream, err := client.FullDuplexCall(callCtx(t))
				if err != nil {
					t.Fatalf("FullDuplexCall: %v", err)
				}
				var got []string
				for i := range streamMessages {
					if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload(fmt.Sprint(i))}); err != nil {
						t.Fatalf("Send %d: %v", i, err)
					}
					resp, err := stream.Recv()
					if err != nil {
						t.Fatalf("Recv %d: %v", i, err)
					}
					got = append(got, string(resp.GetPayload().GetBody()))
				}
				if err := stream.CloseSend(); err != nil {
					t.Fatalf("CloseSend: %v", err)
				}
				if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
					t.Fatalf("Recv after CloseSend = %v, want EOF", err)
				}
				return got
			},
			want: numbered("", streamMessages),
		},
		{
			name: "bidi send all then receive",
			run: func(t *testing.T) []string {
				stream, err := client.FullDuplexCall(callCtx(t))
				if err != nil {
					t.Fatalf("FullDuplexCall: %v", err)
				}
				for i := range streamMessages {
					if err := stream.Send(&testgrpc.StreamingOutputCallRequest{Payload: payload(fmt.Sprint(i))}); err != nil {
						t.Fatalf("Send %d: %v", i, err)
					}
				}
				if err := stream.CloseSend(); err != nil {
					t.Fatalf("CloseSend: %v", err)
				}
				return recvAll(t, stream)
			},
			want: numbered("", streamMessages),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.run(t); !slices.Equal(got, tt.want) {
				t.Errorf("messages = %v, want %v", got, tt.want)
			}
		})
	}
}

func numbered(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint(prefix, i)
	}
	return out
}

func recvAll(t *testing.T, stream grpc.ServerStreamingClient[testgrpc.StreamingOutputCallResponse]) []string {
	t.Helper()
	var got []string
	for range streamMessages + 1 {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		got = append(got, string(resp.GetPayload().GetBody()))
	}
	t.Fatalf("more than %d messages", streamMessages)
	return nil
}

// TestHeadersAndTrailers checks that the backend's response headers and trailers reach the client, also when the
// backend answers with an error and no message (the original's grpc-proxy lost those headers) and when the backend
// sends headers before any message while the client waits for them before sending.
func TestHeadersAndTrailers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{routes: []route.GRPCRoute{{Backend: "a"}}, backends: []string{"a"}})
	client := e.client(t, "")
	fail := &testgrpc.EchoStatus{Code: int32(codes.FailedPrecondition), Message: "backend refuses"}
	tests := []struct {
		name     string
		run      func(t *testing.T) (header, trailer metadata.MD, err error)
		wantCode codes.Code
	}{
		{
			name: "unary ok",
			run: func(t *testing.T) (header, trailer metadata.MD, err error) {
				_, err = client.UnaryCall(callCtx(t), &testgrpc.SimpleRequest{}, grpc.Header(&header), grpc.Trailer(&trailer))
				return header, trailer, err
			},
		},
		{
			name: "unary error without message",
			run: func(t *testing.T) (header, trailer metadata.MD, err error) {
				req := &testgrpc.SimpleRequest{ResponseStatus: fail}
				_, err = client.UnaryCall(callCtx(t), req, grpc.Header(&header), grpc.Trailer(&trailer))
				return header, trailer, err
			},
			wantCode: codes.FailedPrecondition,
		},
		{
			name: "server streaming error without message",
			run: func(t *testing.T) (header, trailer metadata.MD, err error) {
				stream, err := client.StreamingOutputCall(callCtx(t), &testgrpc.StreamingOutputCallRequest{ResponseStatus: fail})
				if err != nil {
					t.Fatalf("StreamingOutputCall: %v", err)
				}
				_, err = stream.Recv()
				header, _ = stream.Header()
				return header, stream.Trailer(), err
			},
			wantCode: codes.FailedPrecondition,
		},
		{
			name: "bidi headers before any message",
			run: func(t *testing.T) (header, trailer metadata.MD, err error) {
				stream, err := client.FullDuplexCall(callCtx(t))
				if err != nil {
					t.Fatalf("FullDuplexCall: %v", err)
				}
				// Nothing is sent before the headers arrive: this only returns if the proxy forwards them early.
				header, err = stream.Header()
				if err != nil {
					t.Fatalf("Header: %v", err)
				}
				if err := stream.Send(&testgrpc.StreamingOutputCallRequest{ResponseStatus: fail}); err != nil {
					t.Fatalf("Send: %v", err)
				}
				_, err = stream.Recv()
				return header, stream.Trailer(), err
			},
			wantCode: codes.FailedPrecondition,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			header, trailer, err := tt.run(t)
			if st := status.Convert(err); st.Code() != tt.wantCode || (tt.wantCode == codes.FailedPrecondition && st.Message() != fail.Message) {
				t.Fatalf("status = %v %q, want %v", st.Code(), st.Message(), tt.wantCode)
			}
			if got := header.Get("x-backend"); len(got) != 1 || got[0] != "a" {
				t.Errorf("header x-backend = %q, want [a] (header %v)", got, header)
			}
			if got := header.Get(wire.MetadataRequestID); len(got) != 1 {
				t.Errorf("header %s = %q, want one value", wire.MetadataRequestID, got)
			}
			if got := trailer.Get("x-backend-trailer"); len(got) != 1 || got[0] != "a" {
				t.Errorf("trailer x-backend-trailer = %q, want [a] (trailer %v)", got, trailer)
			}
		})
	}
}
