package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

const (
	benchIdleDialers = 32              // connections opened at once
	benchIdleTimeout = 5 * time.Minute // bounds one round of opening, whatever the count
	benchIdleURL     = "https://" + benchHost + "/size?bytes=1024"
)

// benchIdleConns is the default of KEDGE_BENCH_IDLE_CONNS: 10,000 in a timed run, 100 in a smoke run
// (-benchtime Nx), which must take seconds.
func benchIdleConns(tb testing.TB) int {
	if f := flag.Lookup("test.benchtime"); f != nil && strings.HasSuffix(f.Value.String(), "x") {
		return 100
	}
	return 10_000
}

// idleKedge starts a kedge of its own for one idle-* round; the proxy token goes with every request to it.
func (e *benchEnv) idleKedge(b *testing.B) (p *benchProc, addr, token string) {
	p, addr, _, _ = e.startKedge(b)
	return p, addr, benchToken
}

// idleNginx starts an nginx of its own for one idle-* round.
func (e *benchEnv) idleNginx(b *testing.B) (p *benchProc, addr, token string) {
	if e.nginxSkip != "" {
		b.Skip(e.nginxSkip)
	}
	p, addr, _ = startBenchNginx(b, e.dir, e.nginxConf)
	return p, addr, ""
}

// benchIdle measures what an idle client connection costs a proxy: it starts a fresh proxy, opens e.idleConns TLS
// connections to it (HTTP/2 when h2), sends one checked request on each and leaves them open, and reports the
// growth of the proxy's resident memory per connection (rss-KiB/conn). Each b.N iteration is one round with its own
// process, so memory freed by an earlier round cannot hide the cost. The growth is measured from a baseline taken
// after one request, so the proxy's lazy start-up allocations are not counted per connection.
func (e *benchEnv) benchIdle(b *testing.B, h2 bool, start func(b *testing.B) (*benchProc, string, string)) {
	n := e.idleConns
	benchRaiseNofile(b, uint64(n)+4096)
	var perConn float64
	for range b.N {
		p, addr, token := start(b)
		open := benchIdleOpener(e.tlsConfig(), addr, token, h2)
		ctx, cancel := context.WithTimeout(context.Background(), benchIdleTimeout)
		warm, err := open(ctx)
		if err != nil {
			cancel()
			b.Fatalf("first connection to %s: %v", p.name, err)
		}
		warm.Close()
		before, err := p.rss()
		if err != nil {
			cancel()
			b.Fatal(err)
		}
		conns, err := benchOpenIdle(ctx, n, open)
		cancel()
		if err == nil {
			var after int64
			if after, err = p.rss(); err == nil {
				perConn += float64(after-before) / 1024 / float64(n)
			}
		}
		for _, c := range conns {
			c.Close()
		}
		if err != nil {
			b.Fatalf("%d idle connections to %s: %v", n, p.name, err)
		}
		p.stop(b)
	}
	b.ReportMetric(perConn/float64(b.N), "rss-KiB/conn")
	b.ReportMetric(float64(n), "conns")
}

// benchOpenIdle opens n connections with open, benchIdleDialers at a time. On the first error it stops and returns
// it with the connections opened so far, for the caller to close.
func benchOpenIdle(ctx context.Context, n int, open func(context.Context) (io.Closer, error)) ([]io.Closer, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		conns    = make([]io.Closer, 0, n) // guarded by mu
		firstErr error                     // guarded by mu
	)
	for range benchIdleDialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				c, err := open(ctx)
				mu.Lock()
				if err != nil {
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					return
				}
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && len(conns) < n {
		firstErr = fmt.Errorf("opened %d: %w", len(conns), ctx.Err())
	}
	return conns, firstErr
}

// benchIdleOpener returns a function that opens one TLS connection to addr, sends one GET on it (with the proxy
// token when set), checks the answer, and returns the connection, now idle.
func benchIdleOpener(cfg *tls.Config, addr, token string, h2 bool) func(context.Context) (io.Closer, error) {
	alpn := "http/1.1"
	if h2 {
		alpn = "h2"
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{alpn}
	// Connections after the first resume its TLS session with a plain X25519 exchange, as a returning client
	// would: the connection costs the server the same once it is established, and opening 10,000 takes seconds
	// instead of half a minute.
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	dialer := &tls.Dialer{Config: cfg}
	tr := &http2.Transport{}
	return func(ctx context.Context) (io.Closer, error) {
		nc, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		c := nc.(*tls.Conn)
		if got := c.ConnectionState().NegotiatedProtocol; got != alpn {
			c.Close()
			return nil, fmt.Errorf("ALPN %q, want %q", got, alpn)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, benchIdleURL, nil)
		if err != nil {
			c.Close()
			return nil, err
		}
		if token != "" {
			req.Header.Set("Proxy-Authorization", "Bearer "+token)
		}
		var (
			conn io.Closer = c
			resp *http.Response
		)
		if h2 {
			cc, err := tr.NewClientConn(c)
			if err != nil {
				c.Close()
				return nil, err
			}
			conn = cc
			resp, err = cc.RoundTrip(req)
			if err != nil {
				cc.Close()
				return nil, err
			}
		} else {
			deadline, _ := ctx.Deadline()
			_ = c.SetDeadline(deadline)
			if err := req.Write(c); err != nil {
				c.Close()
				return nil, err
			}
			if resp, err = http.ReadResponse(bufio.NewReader(c), req); err != nil {
				c.Close()
				return nil, err
			}
			_ = c.SetDeadline(time.Time{})
		}
		got, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || got != benchBody {
			conn.Close()
			return nil, fmt.Errorf("%s %s with %d bytes (X-Kedge-Error: %q, %v); want 200 with %d bytes",
				resp.Proto, resp.Status, got, resp.Header.Get("X-Kedge-Error"), err, benchBody)
		}
		return conn, nil
	}
}

// benchRaiseNofile makes sure this process may hold need open files, raising RLIMIT_NOFILE (the hard limit too,
// which takes root) when it is lower; the proxies it starts inherit the limit. It skips the case when it cannot.
func benchRaiseNofile(b *testing.B, need uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	raised := syscall.Rlimit{Cur: need, Max: max(lim.Max, need)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		b.Skipf("%d open files are needed and ulimit -n is %d (hard %d), which could not be raised: %v; "+
			"raise it or set KEDGE_BENCH_IDLE_CONNS lower", need, lim.Cur, lim.Max, err)
	}
}
