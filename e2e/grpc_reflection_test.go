package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	grpcstatus "google.golang.org/grpc/status"
)

// TestGRPCReflectionRoute checks what docs/kedge.md#grpc-reflection says: server reflection (what grpcurl list
// uses) reaches a backend through kedge only where a route names grpc.reflection.*, and gets Unimplemented elsewhere.
func TestGRPCReflectionRoute(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	reflection.Register(srv)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	director := `{"grpc": {"routes": [
	  {"backend_name": "greeter", "service_name_matcher": "helloworld.*", "authority_host_matcher": "greeter.example.com"},
	  {"backend_name": "greeter", "service_name_matcher": "grpc.reflection.*", "authority_host_matcher": "greeter.example.com"},
	  {"backend_name": "greeter", "service_name_matcher": "helloworld.*", "authority_host_matcher": "other.example.com"}
	]}}`
	pool := fmt.Sprintf(`{"grpc": {"backends": [{"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %s}}]}}`, port)
	k := startKedge(t, director, pool)

	list := func(authority string) ([]string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		cc, err := grpc.NewClient(k.grpcAddr, grpc.WithAuthority(authority),
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: k.ca.Pool(), ServerName: authority})))
		if err != nil {
			return nil, err
		}
		defer cc.Close()
		stream, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
			return nil, err
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		return names, nil
	}
	names, err := list("greeter.example.com")
	if err != nil || !slices.Contains(names, "grpc.reflection.v1.ServerReflection") {
		t.Errorf("reflection where a route allows it: %v, %v; want the backend's services", names, err)
	}
	if _, err := list("other.example.com"); grpcstatus.Code(err) != codes.Unimplemented {
		t.Errorf("reflection where no route allows it: %v; want Unimplemented", err)
	}
}
