package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
)

// Concurrency of the benchmarks: b.SetParallelism(n) runs n goroutines per GOMAXPROCS (2 on the CI box, so 64 HTTP
// requests in flight, like the reference `wrk -c 64`).
const (
	benchHTTPParallelism   = 32
	benchUnaryParallelism  = 16
	benchStreamParallelism = 2
	benchStreamMessages    = 1000 // messages per server stream; a benchmark opens as many streams as b.N needs
	benchBody              = 1024
	benchLoadTimeout       = 5 * time.Minute // bounds every closed-loop case, whatever b.N is
)

// BenchmarkProxy compares the same traffic sent directly to a TLS backend, through a plain ReverseProxy+TLS (the
// reliability catalog's reference, e2e/benchreport/refproxy), through kedge, through nginx (when installed) and
// through winch -> kedge, on one machine in one run. Names are BenchmarkProxy/<traffic>/<path>; e2e/benchreport
// turns the output into one table with ratios and issue 10's targets (make bench). Besides the rate, each proxied
// case reports the proxies' CPU time per operation (proxy-cpu-us/op, from /proc), which the load generator sharing
// the cores does not blur. Every case checks its first answer, so a misrouted benchmark fails instead of measuring
// errors.
//
// The traffic kinds: h1 and h2 (1 KiB GETs, closed loop), grpc-unary and grpc-stream (1 KiB answers), connect
// (64 KiB chunks through a tunnel), open-h1 and open-h2 (the same GETs at a fixed rate, half of kedge's closed-loop
// rate of this run, for latency without coordinated omission; bench_openloop_test.go) and idle-h1 and idle-h2
// (resident memory per idle TLS connection of a freshly started proxy; bench_idle_test.go).
//
// Environment: KEDGE_BENCH_CPUPROFILE=<file> first writes a 5-second CPU profile of kedge under the HTTP/1.1 load
// (KEDGE_BENCH_PROFILE_LOAD chooses another load, and with it the process: bench_profile_test.go);
// KEDGE_BENCH_IDLE_CONNS (default 10000, or 100 with -benchtime Nx) sets the idle connections per idle-* case;
// KEDGE_BENCH_OPEN_RATE (req/s) replaces half of kedge's measured rate in the open-* cases.
func BenchmarkProxy(b *testing.B) {
	e := newBenchEnv(b)
	if path := os.Getenv("KEDGE_BENCH_CPUPROFILE"); path != "" {
		e.profile(b, path)
	}
	sizeURL := "https://" + benchHost + "/size?bytes=1024"
	var (
		kedge    = []*benchProc{e.kedge}
		nginx    = []*benchProc{e.nginx}
		viaWinch = []*benchProc{e.winch, e.kedge}
	)
	tests := []struct {
		traffic, path string
		procs         []*benchProc // whose CPU time is reported per operation
		run           func(b *testing.B)
	}{
		{"h1", "direct", nil, func(b *testing.B) { benchHTTP(b, e.httpClient(e.directHTTPS, false), sizeURL, 1, "") }},
		{"h1", "goref", []*benchProc{e.ref}, func(b *testing.B) { benchHTTP(b, e.refClient(b, false), sizeURL, 1, "") }},
		{"h1", "kedge", kedge, func(b *testing.B) {
			e.saturation["h1"] = benchHTTP(b, e.httpClient(e.kedgeHTTPS, false), sizeURL, 1, benchToken)
		}},
		{"h1", "nginx", nginx, func(b *testing.B) { benchHTTP(b, e.nginxClient(b, false), sizeURL, 1, "") }},
		{"h1", "winch", viaWinch, func(b *testing.B) {
			benchHTTP(b, e.winchClient(b), "http://"+benchHost+"/size?bytes=1024", 1, "")
		}},
		{"h2", "direct", nil, func(b *testing.B) { benchHTTP(b, e.httpClient(e.directHTTPS, true), sizeURL, 2, "") }},
		{"h2", "goref", []*benchProc{e.ref}, func(b *testing.B) { benchHTTP(b, e.refClient(b, true), sizeURL, 2, "") }},
		{"h2", "kedge", kedge, func(b *testing.B) {
			e.saturation["h2"] = benchHTTP(b, e.httpClient(e.kedgeHTTPS, true), sizeURL, 2, benchToken)
		}},
		{"h2", "nginx", nginx, func(b *testing.B) { benchHTTP(b, e.nginxClient(b, true), sizeURL, 2, "") }},
		{"grpc-unary", "direct", nil, func(b *testing.B) { benchUnary(b, e.grpcTLS(b, e.directGRPC), "") }},
		{"grpc-unary", "kedge", kedge, func(b *testing.B) { benchUnary(b, e.grpcTLS(b, e.kedgeGRPC), benchToken) }},
		{"grpc-unary", "nginx", nginx, func(b *testing.B) { benchUnary(b, e.grpcNginx(b), "") }},
		{"grpc-unary", "winch", viaWinch, func(b *testing.B) { benchUnary(b, e.grpcWinch(b), "") }},
		{"grpc-stream", "direct", nil, func(b *testing.B) { benchStream(b, e.grpcTLS(b, e.directGRPC), "") }},
		{"grpc-stream", "kedge", kedge, func(b *testing.B) { benchStream(b, e.grpcTLS(b, e.kedgeGRPC), benchToken) }},
		{"grpc-stream", "nginx", nginx, func(b *testing.B) { benchStream(b, e.grpcNginx(b), "") }},
		{"grpc-stream", "winch", viaWinch, func(b *testing.B) { benchStream(b, e.grpcWinch(b), "") }},
		{"connect", "direct", nil, func(b *testing.B) { benchConnect(b, e.dialDirect) }},
		{"connect", "kedge", kedge, func(b *testing.B) { benchConnect(b, e.dialKedge) }},
		{"connect", "winch", viaWinch, func(b *testing.B) { benchConnect(b, e.dialWinch) }},
		{"open-h1", "direct", nil, func(b *testing.B) {
			benchOpenLoop(b, e.httpClient(e.directHTTPS, false), sizeURL, 1, "", e.openLoopRate(b, "h1"))
		}},
		{"open-h1", "kedge", kedge, func(b *testing.B) {
			benchOpenLoop(b, e.httpClient(e.kedgeHTTPS, false), sizeURL, 1, benchToken, e.openLoopRate(b, "h1"))
		}},
		{"open-h1", "nginx", nginx, func(b *testing.B) {
			benchOpenLoop(b, e.nginxClient(b, false), sizeURL, 1, "", e.openLoopRate(b, "h1"))
		}},
		{"open-h2", "direct", nil, func(b *testing.B) {
			benchOpenLoop(b, e.httpClient(e.directHTTPS, true), sizeURL, 2, "", e.openLoopRate(b, "h2"))
		}},
		{"open-h2", "kedge", kedge, func(b *testing.B) {
			benchOpenLoop(b, e.httpClient(e.kedgeHTTPS, true), sizeURL, 2, benchToken, e.openLoopRate(b, "h2"))
		}},
		{"open-h2", "nginx", nginx, func(b *testing.B) {
			benchOpenLoop(b, e.nginxClient(b, true), sizeURL, 2, "", e.openLoopRate(b, "h2"))
		}},
		{"idle-h1", "kedge", nil, func(b *testing.B) { e.benchIdle(b, false, e.idleKedge) }},
		{"idle-h1", "nginx", nil, func(b *testing.B) { e.benchIdle(b, false, e.idleNginx) }},
		{"idle-h2", "kedge", nil, func(b *testing.B) { e.benchIdle(b, true, e.idleKedge) }},
		{"idle-h2", "nginx", nil, func(b *testing.B) { e.benchIdle(b, true, e.idleNginx) }},
	}
	for _, tc := range tests {
		b.Run(tc.traffic+"/"+tc.path, func(b *testing.B) {
			before, first := benchCPU(tc.procs), benchCPU(tc.procs[:min(1, len(tc.procs))])
			tc.run(b)
			if len(tc.procs) > 0 && b.N > 0 {
				b.ReportMetric(float64(benchCPU(tc.procs)-before)/float64(time.Microsecond)/float64(b.N), "proxy-cpu-us/op")
				if len(tc.procs) > 1 {
					// winch -> kedge: winch's own share too.
					b.ReportMetric(float64(benchCPU(tc.procs[:1])-first)/float64(time.Microsecond)/float64(b.N), "first-proxy-cpu-us/op")
				}
			}
		})
	}
}

// benchCPU sums the CPU time of procs; a process that is not running (skipped case) counts 0.
func benchCPU(procs []*benchProc) time.Duration {
	var total time.Duration
	for _, p := range procs {
		if p == nil {
			continue
		}
		if d, err := p.cpu(); err == nil {
			total += d
		}
	}
	return total
}

// httpClient sends every request over TLS to addr: HTTP/1.1 only (a pooled connection per goroutine), or HTTP/2
// (one multiplexed connection).
func (e *benchEnv) httpClient(addr string, h2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:     e.tlsConfig(),
		ForceAttemptHTTP2:   h2,
		MaxIdleConnsPerHost: 4 * benchHTTPParallelism,
		// Never more connections than it keeps idle: in the open-loop cases a burst would otherwise open new
		// connections and close them again, and the handshakes would become the load.
		MaxConnsPerHost: 4 * benchHTTPParallelism,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (e *benchEnv) nginxClient(b *testing.B, h2 bool) *http.Client {
	if e.nginxSkip != "" {
		b.Skip(e.nginxSkip)
	}
	return e.httpClient(e.nginxHTTPS, h2)
}

func (e *benchEnv) refClient(b *testing.B, h2 bool) *http.Client {
	return e.httpClient(e.refHTTPS, h2)
}

// winchClient sends plain-HTTP requests to winch as HTTP_PROXY; winch forwards them to kedge over TLS.
func (e *benchEnv) winchClient(b *testing.B) *http.Client {
	proxy, _ := url.Parse(e.winchProxy)
	tr := &http.Transport{Proxy: http.ProxyURL(proxy), MaxIdleConnsPerHost: 4 * benchHTTPParallelism}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// benchGet GETs target through c, with the proxy token when set, and reads the whole answer. It fails unless the
// answer is a 200 over HTTP/protoMajor with benchBody bytes.
func benchGet(ctx context.Context, c *http.Client, target string, protoMajor int, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Proxy-Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || n != benchBody || resp.ProtoMajor != protoMajor {
		return fmt.Errorf("%s %s with %d bytes (X-Kedge-Error: %q, %v); want HTTP/%d 200 with %d bytes",
			resp.Proto, resp.Status, n, resp.Header.Get("X-Kedge-Error"), err, protoMajor, benchBody)
	}
	return nil
}

// benchHTTP GETs url (a 1 KiB answer) b.N times from benchHTTPParallelism goroutines per CPU and returns the rate
// (requests per second). token, if set, is sent as the proxy token.
func benchHTTP(b *testing.B, c *http.Client, target string, protoMajor int, token string) float64 {
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), benchLoadTimeout)
	defer cancel()
	if err := benchGet(ctx, c, target, protoMajor, token); err != nil {
		b.Fatalf("first answer: %v", err)
	}
	lat := &benchLatencies{}
	b.SetParallelism(benchHTTPParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		defer func() { lat.add(mine) }()
		for pb.Next() {
			start := time.Now()
			if err := benchGet(ctx, c, target, protoMajor, token); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(start))
		}
	})
	b.StopTimer()
	lat.report(b)
	return benchReportRate(b, "req/s", 1)
}

func (e *benchEnv) grpcTLS(b *testing.B, addr string) *grpc.ClientConn {
	return benchGRPCConn(b, addr, grpc.WithTransportCredentials(credentials.NewTLS(e.tlsConfig())))
}

// grpcNginx dials nginx's TLS port, whose grpc_pass location proxies the test service to the plaintext backend.
func (e *benchEnv) grpcNginx(b *testing.B) *grpc.ClientConn {
	if e.nginxSkip != "" {
		b.Skip(e.nginxSkip)
	}
	return e.grpcTLS(b, e.nginxHTTPS)
}

// grpcWinch dials winch's plaintext gRPC port with the destination as :authority.
func (e *benchEnv) grpcWinch(b *testing.B) *grpc.ClientConn {
	return benchGRPCConn(b, e.winchGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithAuthority(benchGreeter))
}

func benchGRPCConn(b *testing.B, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithNoProxy())...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return cc
}

// benchGRPCContext carries the proxy token as metadata, when there is one.
func benchGRPCContext(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "proxy-authorization", "Bearer "+token)
}

// benchUnary makes b.N UnaryCalls with a 1 KiB answer from benchUnaryParallelism goroutines per CPU over one conn.
func benchUnary(b *testing.B, cc *grpc.ClientConn, token string) {
	c := testpb.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(benchGRPCContext(context.Background(), token), benchLoadTimeout)
	defer cancel()
	req := &testpb.SimpleRequest{ResponseSize: benchBody}
	if resp, err := c.UnaryCall(ctx, req); err != nil || len(resp.GetPayload().GetBody()) != benchBody {
		b.Fatalf("first call: %v", err)
	}
	lat := &benchLatencies{}
	b.SetParallelism(benchUnaryParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		defer func() { lat.add(mine) }()
		for pb.Next() {
			start := time.Now()
			if _, err := c.UnaryCall(ctx, req); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(start))
		}
	})
	b.StopTimer()
	benchReportRate(b, "req/s", 1)
	lat.report(b)
}

// benchStream receives b.N 1 KiB messages from server streams of benchStreamMessages each, benchStreamParallelism streams
// per CPU at a time.
func benchStream(b *testing.B, cc *grpc.ClientConn, token string) {
	c := testpb.NewTestServiceClient(cc)
	params := make([]*testpb.ResponseParameters, benchStreamMessages)
	for i := range params {
		params[i] = &testpb.ResponseParameters{Size: benchBody}
	}
	req := &testpb.StreamingOutputCallRequest{ResponseParameters: params}
	open := func() (grpc.ServerStreamingClient[testpb.StreamingOutputCallResponse], context.CancelFunc, error) {
		ctx, cancel := context.WithTimeout(benchGRPCContext(context.Background(), token), time.Minute)
		s, err := c.StreamingOutputCall(ctx, req)
		if err != nil {
			cancel()
		}
		return s, cancel, err
	}
	s, cancel, err := open()
	if err != nil {
		b.Fatal(err)
	}
	if m, err := s.Recv(); err != nil || len(m.GetPayload().GetBody()) != benchBody {
		b.Fatalf("first message: %v", err)
	}
	cancel()
	b.SetParallelism(benchStreamParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var (
			s      grpc.ServerStreamingClient[testpb.StreamingOutputCallResponse]
			cancel context.CancelFunc = func() {}
		)
		defer func() { cancel() }()
		for pb.Next() {
			// Bounded: a stream that ends is reopened once; a fresh stream that ends at once is an error.
			for try := 0; ; try++ {
				if s == nil {
					var err error
					if s, cancel, err = open(); err != nil {
						b.Error(err)
						return
					}
				}
				_, err := s.Recv()
				if err == nil {
					break
				}
				cancel()
				s = nil
				if err != io.EOF {
					b.Error(err)
					return
				}
				if try > 0 {
					b.Error("a freshly opened server stream ended before its first message")
					return
				}
			}
		}
	})
	b.StopTimer()
	benchReportRate(b, "msg/s", 1)
}

// benchReportRate reports b.N*perOp divided by the elapsed time, in unit, and returns it (0 when no time passed).
func benchReportRate(b *testing.B, unit string, perOp float64) float64 {
	s := b.Elapsed().Seconds()
	if s <= 0 {
		return 0
	}
	rate := float64(b.N) * perOp / s
	b.ReportMetric(rate, unit)
	return rate
}

// benchLatencies collects per-request durations from the RunParallel goroutines.
type benchLatencies struct {
	mu  sync.Mutex
	all []time.Duration // guarded by mu
}

func (l *benchLatencies) add(d []time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all = append(l.all, d...)
}

// report adds p50 and p99 in milliseconds.
func (l *benchLatencies) report(b *testing.B) {
	if len(l.all) == 0 {
		return
	}
	slices.Sort(l.all)
	pct := func(p float64) float64 { return float64(l.all[int(float64(len(l.all)-1)*p)]) / 1e6 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
