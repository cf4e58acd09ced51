package e2e

import (
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// The profile that `make bench PROFILE=file` takes before the benchmarks: 5 seconds of CPU of one process under
// one load. KEDGE_BENCH_PROFILE_LOAD chooses the load and so the process:
//
//	h1 (default), h2   HTTP GETs to kedge (KEDGE_BENCH_PROFILE_H2=1 is the older spelling of h2)
//	grpc               gRPC unary calls to kedge
//	grpc-stream        gRPC server-streaming calls to kedge (messages of the grpc-stream benchmark)
//	connect            bulk bytes through a CONNECT tunnel of kedge
//	winch-h1           plain-HTTP GETs through winch to kedge, profiling winch
//	winch-connect      bulk bytes through a CONNECT tunnel of winch (and so of kedge), profiling winch
//	winch-grpc         gRPC unary calls through winch to kedge, profiling winch
//	idle-h1, idle-h2   2,000 idle TLS connections to kedge (with KEDGE_BENCH_PROFILE_KIND=heap)
//
// KEDGE_BENCH_PROFILE_PROC=kedge profiles kedge under a winch-* load. KEDGE_BENCH_PROFILE_KIND=heap|allocs takes that profile (of the same process, after the same 5 seconds of load)
// instead of the CPU profile.

// profile writes the profile chosen by the environment to path.
func (e *benchEnv) profile(b *testing.B, path string) {
	load := os.Getenv("KEDGE_BENCH_PROFILE_LOAD")
	if load == "" {
		load = "h1"
		if os.Getenv("KEDGE_BENCH_PROFILE_H2") != "" {
			load = "h2"
		}
	}
	debug, host := e.kedgeDebug, ""
	if strings.HasPrefix(load, "winch-") && os.Getenv("KEDGE_BENCH_PROFILE_PROC") != "kedge" {
		// winch serves its debug endpoints on its proxy port, for Host localhost only.
		debug, host = strings.TrimPrefix(e.winchProxy, "http://"), "localhost"
	}
	var worker func(ctx context.Context)
	switch load {
	case "h1", "h2":
		c := e.httpClient(e.kedgeHTTPS, load == "h2")
		defer c.CloseIdleConnections()
		worker = func(ctx context.Context) { profileGets(ctx, c, "https://"+benchHost+"/size?bytes=1024", benchToken) }
	case "winch-h1":
		c := e.winchClient(b)
		defer c.CloseIdleConnections()
		worker = func(ctx context.Context) { profileGets(ctx, c, "http://"+benchHost+"/size?bytes=1024", "") }
	case "connect":
		worker = func(ctx context.Context) { profileBulk(ctx, b, e.dialKedge) }
	case "winch-connect":
		worker = func(ctx context.Context) { profileBulk(ctx, b, e.dialWinch) }
	case "grpc", "winch-grpc":
		var cc *grpc.ClientConn
		token := ""
		if load == "grpc" {
			cc, token = e.grpcTLS(b, e.kedgeGRPC), benchToken
		} else {
			cc = e.grpcWinch(b)
		}
		c := testpb.NewTestServiceClient(cc)
		req := &testpb.SimpleRequest{ResponseSize: benchBody}
		worker = func(ctx context.Context) {
			ctx = benchGRPCContext(ctx, token)
			for n := 0; n < 1_000_000 && ctx.Err() == nil; n++ {
				_, _ = c.UnaryCall(ctx, req)
			}
		}
	case "grpc-stream":
		c := testpb.NewTestServiceClient(e.grpcTLS(b, e.kedgeGRPC))
		params := make([]*testpb.ResponseParameters, benchStreamMessages)
		for i := range params {
			params[i] = &testpb.ResponseParameters{Size: benchBody}
		}
		req := &testpb.StreamingOutputCallRequest{ResponseParameters: params}
		worker = func(ctx context.Context) {
			ctx = benchGRPCContext(ctx, benchToken)
			for n := 0; n < 100_000 && ctx.Err() == nil; n++ {
				s, err := c.StreamingOutputCall(ctx, req)
				if err != nil {
					continue
				}
				for m := 0; m <= benchStreamMessages; m++ { // bounded: the stream ends after its messages
					if _, err := s.Recv(); err != nil {
						break
					}
				}
			}
		}
	case "idle-h1", "idle-h2":
		// 2,000 idle connections (one request each), held until the profile is taken: KEDGE_BENCH_PROFILE_KIND=heap
		// shows what each keeps.
		open := benchIdleOpener(e.tlsConfig(), e.kedgeHTTPS, benchToken, load == "idle-h2")
		conns, err := benchOpenIdle(context.Background(), 2000, open)
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		if err != nil {
			b.Fatal(err)
		}
		worker = func(ctx context.Context) { <-ctx.Done() }
	default:
		b.Fatalf("KEDGE_BENCH_PROFILE_LOAD=%q: want h1, h2, grpc, grpc-stream, connect, winch-h1, winch-connect, winch-grpc, idle-h1 or idle-h2", load)
	}
	workers := 2 * benchHTTPParallelism
	if strings.HasSuffix(load, "connect") || strings.HasPrefix(load, "idle-") {
		workers = 1 // one tunnel, as in the connect benchmark; or nothing but waiting
	}

	// Bounded: the load stops with the profile, after 30 s at most.
	ctx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker(ctx)
		}()
	}
	defer func() { stop(); wg.Wait() }()
	target := "http://" + debug + "/debug/pprof/profile?seconds=5"
	if kind := os.Getenv("KEDGE_BENCH_PROFILE_KIND"); kind != "" {
		select {
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
		target = "http://" + debug + "/debug/pprof/" + kind
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatalf("fetching the profile: %v", err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("the profile %s: %s, %v", target, resp.Status, err)
	}
}

// profileGets sends GETs through c until ctx ends (at most 1e6).
func profileGets(ctx context.Context, c *http.Client, target, token string) {
	for n := 0; n < 1_000_000 && ctx.Err() == nil; n++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if token != "" {
			req.Header.Set("Proxy-Authorization", "Bearer "+token)
		}
		if resp, err := c.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}

// profileBulk writes 64 KiB chunks through one tunnel to the byte sink until ctx ends (at most 1e6 chunks).
func profileBulk(ctx context.Context, b *testing.B, dial func(b *testing.B) (io.Writer, io.Reader, func())) {
	w, _, closeConn := dial(b)
	defer closeConn()
	go func() {
		<-ctx.Done()
		closeConn() // unblocks a write
	}()
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], 1<<62) // more than will ever be sent: the sink never answers
	if _, err := w.Write(hdr[:]); err != nil {
		return
	}
	chunk := make([]byte, benchChunk)
	for n := 0; n < 1_000_000 && ctx.Err() == nil; n++ {
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}
