package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
)

// demoBackend is the service "inside the cluster": plain HTTP, gRPC, and a TLS endpoint that answers like a
// Kubernetes API server at /version.
type demoBackend struct {
	http, grpc, tls *net.TCPAddr
	servers         []*http.Server
	grpcServer      *grpc.Server
}

func startBackend(httpAddr, grpcAddr, tlsAddr string, cert tls.Certificate) (*demoBackend, error) {
	b := &demoBackend{}
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hello from the demo backend: %s %s (Host %s, Authorization %q, Proxy-Authorization %q)\n",
			r.Method, r.URL.Path, r.Host, r.Header.Get("Authorization"), r.Header.Get("Proxy-Authorization"))
	})
	apiserver := http.NewServeMux()
	apiserver.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"major": "1", "minor": "31", "gitVersion": "v1.31.0-kedge-demo", "platform": "linux/amd64",
			"seenAuthorization": r.Header.Get("Authorization"),
		})
	})
	apiserver.Handle("/", hello)

	for _, l := range []struct {
		addr string
		h    http.Handler
		tls  bool
		dst  **net.TCPAddr
	}{{httpAddr, hello, false, &b.http}, {tlsAddr, apiserver, true, &b.tls}} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			b.close()
			return nil, fmt.Errorf("demo backend: %w", err)
		}
		*l.dst = ln.Addr().(*net.TCPAddr)
		srv := &http.Server{Handler: l.h, ReadHeaderTimeout: 10 * time.Second}
		if l.tls {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
			ln = tls.NewListener(ln, srv.TLSConfig)
		}
		b.servers = append(b.servers, srv)
		go func() { _ = srv.Serve(ln) }()
	}

	ln, err := net.Listen("tcp", grpcAddr)
	if err != nil {
		b.close()
		return nil, fmt.Errorf("demo backend: %w", err)
	}
	b.grpc = ln.Addr().(*net.TCPAddr)
	b.grpcServer = grpc.NewServer()
	testpb.RegisterTestServiceServer(b.grpcServer, greeter{})
	go func() { _ = b.grpcServer.Serve(ln) }()
	return b, nil
}

func (b *demoBackend) close() {
	for _, s := range b.servers {
		_ = s.Close()
	}
	if b.grpcServer != nil {
		b.grpcServer.Stop()
	}
}

// greeter answers UnaryCall with a payload naming the caller's :authority, so the demo shows where the call went.
type greeter struct {
	testpb.UnimplementedTestServiceServer
}

func (greeter) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	msg := fmt.Sprintf("hello over gRPC (authority %v, request id %v)", md.Get(":authority"), md.Get("x-kedge-request-id"))
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: []byte(msg)}}, nil
}
