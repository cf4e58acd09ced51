package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/kedge-proxy/kedge/pkg/shared/testutil"
)

// soakDuration is how long TestSoak sends traffic: KEDGE_SOAK_DURATION (make soak: SOAK_DURATION, 10m), or 60 s,
// the run make test includes.
func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("KEDGE_SOAK_DURATION")
	if v == "" {
		return 60 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 20*time.Second {
		t.Fatalf("KEDGE_SOAK_DURATION=%q: want a duration of at least 20s", v)
	}
	return d
}

// soakTally accounts for every request of one kind: it succeeded, or failed in an expected, typed way while the
// backend it needs was being restarted, or it is unexpected (a lost request: the test fails).
type soakTally struct {
	name                 string
	ok, expected, failed atomic.Int64
	mu                   sync.Mutex
	firstFailures        []string
}

func (s *soakTally) fail(msg string) {
	s.failed.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.firstFailures) < 5 {
		s.firstFailures = append(s.firstFailures, time.Now().Format("15:04:05.000")+" "+msg)
	}
}

// soakSample is one reading of kedge's own process metrics.
type soakSample struct {
	at                     time.Duration
	rss, fds, goroutines   float64
	reloadsOK, reloadsFail float64
}

func (e *kedgeEnv) soakSample(t *testing.T, since time.Time) soakSample {
	t.Helper()
	num := func(series string) float64 {
		raw := e.metric(t, series)
		if raw == "" && strings.HasPrefix(series, "kedge_config_reloads_total") {
			return 0 // a labelled counter appears at its first increment
		}
		v, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			t.Fatalf("kedge's %s: %v", series, err)
		}
		return v
	}
	return soakSample{
		at:          time.Since(since).Round(time.Second),
		rss:         num("process_resident_memory_bytes"),
		fds:         num("process_open_fds"),
		goroutines:  num("go_goroutines"),
		reloadsOK:   num(`kedge_config_reloads_total{result="success"}`),
		reloadsFail: num(`kedge_config_reloads_total{result="failure"}`),
	}
}

// soakWindow is open while the HTTP backend is down or has just come back: requests needing it may then fail with
// kedge's typed error (a 5xx with X-Kedge-Error-Type), and only then. A request counts as inside the window if the
// two overlap: the window is open when its answer arrives, or closed after the request started.
type soakWindow struct {
	open     atomic.Bool
	closedAt atomic.Int64 // UnixNano of the last close
}

func (w *soakWindow) openNow() { w.open.Store(true) }

func (w *soakWindow) close() {
	w.closedAt.Store(time.Now().UnixNano())
	w.open.Store(false)
}

// expectedHTTP says whether a failed answer to a request started at started is the typed error of a backend restart.
func (w *soakWindow) expectedHTTP(resp *http.Response, started time.Time) bool {
	inside := w.open.Load() || w.closedAt.Load() > started.UnixNano()
	return inside && resp.StatusCode >= 500 && resp.Header.Get("X-Kedge-Error-Type") != ""
}

// soakWorker runs one request after another, pace apart, until the soak ends; bounded in count as well as in time.
// Requests that are under way when the soak ends finish and are counted.
func soakWorker(wg *sync.WaitGroup, end time.Time, pace time.Duration, one func(n int)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		limit := int(time.Until(end)/pace) + 1
		for n := 0; n < limit && time.Now().Before(end); n++ {
			one(n)
			time.Sleep(pace)
		}
	}()
}

// TestSoak sends mixed traffic through winch and kedge for soakDuration: HTTP/1.1 through winch's proxy port,
// HTTP/2 straight to kedge, gRPC unary calls through winch, gRPC bidi streams straight to kedge, a fresh CONNECT
// tunnel through winch for every TLS request to a backend, and WebSocket sessions (ws:// through winch's proxy port,
// two at a time, each 20 echoed messages over 2 s, a backend ping and a normal close that the backend must read).
// Endpoints move only through the reloads: kedge's host and srv resolvers ask the system's DNS servers (port 53 of
// /etc/resolv.conf's nameservers), which a test cannot point at a resolver of its own on a loopback port. Meanwhile kedge's documents are rewritten every 3 s (the
// gRPC backend moves between two endpoints and a route comes and goes; every fourth write is invalid and rejected)
// and the HTTP backend is killed and restarted every third of the run (at most every minute). Every request is
// accounted: it succeeds, or, only while the HTTP backend restarts, gets kedge's typed 5xx. After a warm-up (a
// quarter of the run, at most a minute) kedge's RSS, open fds and goroutines (from its /metrics) are sampled; once the
// load stops they must come back within 10% of the first post-warm-up sample (RSS: or 8 MiB; goroutines and fds: plus
// 5), and the run's peak may not exceed it by more than 50% (RSS: or 16 MiB). kedge is a build without -race.
func TestSoak(t *testing.T) {
	t.Parallel()
	duration := soakDuration(t)
	warmUp := min(duration/4, time.Minute)
	restartEvery := min(duration/3, time.Minute)

	var window soakWindow
	plain := newRestartable(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "soak "+r.URL.Path)
	}))
	greeter := []*testutil.GRPCBackend{testutil.NewGRPCBackend(t, "greeter"), testutil.NewGRPCBackend(t, "greeter")}
	other := testutil.NewEchoServer(t, testutil.EchoName("other"))
	backendCA := testutil.NewCA(t)
	tunnelled := testutil.NewEchoServer(t, testutil.EchoName("tunnelled"), testutil.EchoTLS(backendCA.Server(t, "tunnel.example.com")))
	ws := newWSBackend(t, backendCA.Server(t, "ws.example.com")) // its plain listener serves the soak
	docs := func(i int) (director, pool string) {
		extraRoute, extraBackend := "", ""
		if i%2 == 1 {
			extraRoute = `{"backend_name": "other", "host_matcher": "other.example.com"},`
			extraBackend = fmt.Sprintf(`{"name": "other", "host": {"dns_name": "127.0.0.1", "port": %d}},`, other.Port())
		}
		director = `{
  "http": {"routes": [` + extraRoute + `
    {"backend_name": "plain", "host_matcher": "hello.example.com", "port_matcher": 80},
    {"backend_name": "plain", "host_matcher": "plain.example.com"},
    {"backend_name": "ws", "host_matcher": "ws.example.com"},
    {"backend_name": "tunnel", "host_matcher": "tunnel.example.com", "port_matcher": 443, "proxy_mode": "CONNECT"}
  ]},
  "grpc": {"routes": [{"backend_name": "greeter", "service_name_matcher": "grpc.testing.TestService/*"}]}
}`
		pool = fmt.Sprintf(`{
  "http": {"backends": [`+extraBackend+`
    {"name": "plain", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "tunnel", "host": {"dns_name": "127.0.0.1", "port": %d}},
    {"name": "ws", "host": {"dns_name": "127.0.0.1", "port": %d}}
  ]},
  "grpc": {"backends": [{"name": "greeter", "host": {"dns_name": "127.0.0.1", "port": %d}}]}
}`, plain.port, tunnelled.Port(), port(ws.plain), grpcPort(greeter[i%2]))
		return director, pool
	}
	director, pool := docs(0)
	// kedge without -race (plainKedge): the race detector's shadow memory grows with the traffic, so only a plain
	// build's RSS says whether kedge holds on to memory. Request logs (info) are left out: thousands a second.
	k := startKedgeBinary(t, plainKedge(t), director, pool, "--log_level=warn")
	w := startWinch(t, fmt.Sprintf(`{"routes": [
  {"direct": {"key": "hello.example.com", "url": %[1]q}, "protocol": "HTTP"},
  {"direct": {"key": "ws.example.com", "url": %[1]q}, "protocol": "HTTP"},
  {"direct": {"key": "tunnel.example.com:443", "url": %[1]q}, "protocol": "HTTP"},
  {"direct": {"key": "greeter.example.com:443", "url": %[2]q}, "protocol": "GRPC"}
]}`, kedgeURL(k), kedgeGRPCURL(k)), "", "--client_tls_root_ca_files="+k.caFile, "--log_level=warn")

	proxyURL, _ := url.Parse(w.proxyURL)
	viaWinch := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	tunnels := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy:             http.ProxyURL(proxyURL),
		TLSClientConfig:   &tls.Config{RootCAs: backendCA.Pool()}, // end to end through the tunnel
		DisableKeepAlives: true,                                   // a new CONNECT tunnel for every request
	}}
	wsClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	h2 := k.client(true)
	defer viaWinch.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	unary := testpb.NewTestServiceClient(winchGRPC(t, w, "greeter.example.com:443"))
	streams := testpb.NewTestServiceClient(k.grpcConn(t, k.grpcAddr, ""))

	tallies := map[string]*soakTally{}
	kinds := []string{"HTTP/1.1 via winch", "HTTP/2", "gRPC unary via winch", "gRPC stream", "CONNECT via winch", "WebSocket via winch"}
	for _, name := range kinds {
		tallies[name] = &soakTally{name: name}
	}
	httpGet := func(tally *soakTally, c *http.Client, u, want string, restarts bool) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // not the test's: it outlives the soak
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		started := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			tally.fail(err.Error())
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err == nil && resp.StatusCode == http.StatusOK && strings.Contains(string(body), want):
			tally.ok.Add(1)
		case err == nil && restarts && window.expectedHTTP(resp, started):
			tally.expected.Add(1)
		default:
			tally.fail(fmt.Sprintf("%s: %s %s (X-Kedge-Error-Type %q, X-Winch-Error %q), %v",
				u, resp.Status, body, resp.Header.Get("X-Kedge-Error-Type"), resp.Header.Get("X-Winch-Error"), err))
		}
	}

	start := time.Now()
	end := start.Add(duration)
	var load sync.WaitGroup
	const pace = 10 * time.Millisecond
	for range 2 {
		soakWorker(&load, end, pace, func(n int) {
			httpGet(tallies[kinds[0]], viaWinch, fmt.Sprintf("http://hello.example.com/h1/%d", n), "soak /h1/", true)
		})
		soakWorker(&load, end, pace, func(n int) {
			httpGet(tallies[kinds[1]], h2, fmt.Sprintf("https://plain.example.com/h2/%d", n), "soak /h2/", true)
		})
		soakWorker(&load, end, pace, func(int) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := unary.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 10}); err != nil {
				tallies[kinds[2]].fail(err.Error())
				return
			}
			tallies[kinds[2]].ok.Add(1)
		})
	}
	soakWorker(&load, end, pace, func(int) {
		tally := tallies[kinds[3]]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stream, err := streams.FullDuplexCall(ctx)
		if err != nil {
			tally.fail(err.Error())
			return
		}
		for i := range 5 {
			if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 10}}}); err != nil {
				tally.fail(fmt.Sprintf("sending message %d: %v", i, err))
				return
			}
			if _, err := stream.Recv(); err != nil {
				tally.fail(fmt.Sprintf("message %d: %v", i, err))
				return
			}
		}
		_ = stream.CloseSend()
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			if s, _ := grpcstatus.FromError(err); s.Code() != codes.OK {
				tally.fail(fmt.Sprintf("end of stream: %v", err))
				return
			}
		}
		tally.ok.Add(1)
	})
	soakWorker(&load, end, 5*pace, func(n int) {
		httpGet(tallies[kinds[4]], tunnels, fmt.Sprintf("https://tunnel.example.com/connect/%d", n), "/connect/", false)
	})
	for i := range 2 { // two WebSocket sessions at a time, each a new one every 2.5 s or so; each one counts once
		soakWorker(&load, end, 500*time.Millisecond, func(n int) {
			if err := soakWebSocket(wsClient, fmt.Sprintf("ws://ws.example.com/soak/%d/%d", i, n)); err != nil {
				tallies[kinds[5]].fail(err.Error())
				return
			}
			tallies[kinds[5]].ok.Add(1)
		})
	}

	// The churn: reloads every 3 s, a backend restart every restartEvery, a metrics sample every 5 s.
	var samples []soakSample
	var baseline *soakSample
	reloads, invalid, restarts := 0, 0, 0
	nextRestart := start.Add(restartEvery)
	reloadTick, sampleTick := time.NewTicker(3*time.Second), time.NewTicker(5*time.Second)
	defer reloadTick.Stop()
	defer sampleTick.Stop()
	for time.Now().Before(end) {
		select {
		case <-reloadTick.C:
			reloads++
			if reloads%4 == 0 {
				atomicWrite(t, k.directorPath, `{"http": {"routes": [{"backend_name": "missing", "host_matcher": "plain.example.com"}]}}`)
				invalid++
				continue
			}
			director, pool := docs(reloads)
			atomicWrite(t, k.poolPath, pool)
			atomicWrite(t, k.directorPath, director)
		case <-sampleTick.C:
			s := k.soakSample(t, start)
			samples = append(samples, s)
			if baseline == nil && time.Since(start) >= warmUp {
				baseline = &samples[len(samples)-1]
			}
		case <-time.After(time.Until(nextRestart)):
			if time.Until(end) < 10*time.Second {
				nextRestart = end
				continue
			}
			window.openNow()
			plain.kill()
			time.Sleep(time.Second)
			plain.revive()
			restarts++
			nextRestart = nextRestart.Add(restartEvery)
			// The refused endpoint is skipped for --lbtransport_failed_target_backoff_duration (2s) after the revive.
			time.AfterFunc(5*time.Second, window.close)
		}
	}
	load.Wait()
	loadTime := time.Since(start)
	viaWinch.CloseIdleConnections()
	h2.CloseIdleConnections()
	wsClient.CloseIdleConnections()

	// Every request accounted.
	total := int64(0)
	for _, name := range kinds {
		tl := tallies[name]
		n := tl.ok.Load() + tl.expected.Load() + tl.failed.Load()
		total += n
		t.Logf("soak: %-22s %7d requests: %7d ok, %4d typed errors during backend restarts, %d lost", name, n, tl.ok.Load(), tl.expected.Load(), tl.failed.Load())
		if tl.failed.Load() > 0 {
			t.Errorf("%s: %d requests lost; first: %s", name, tl.failed.Load(), strings.Join(tl.firstFailures, "; "))
		}
		if tl.ok.Load() == 0 {
			t.Errorf("%s: no request succeeded", name)
		}
	}
	t.Logf("soak: %d requests in %v (%.0f/s); %d reloads written (%d invalid), %d backend restarts",
		total, loadTime.Round(time.Second), float64(total)/loadTime.Seconds(), reloads, invalid, restarts)
	if greeter[0].Calls() == 0 || greeter[1].Calls() == 0 {
		t.Errorf("the reloads did not move the gRPC traffic: %d and %d calls", greeter[0].Calls(), greeter[1].Calls())
	}
	if restarts == 0 {
		t.Error("the HTTP backend was never restarted")
	}

	// Resources: the peak after warm-up, and where kedge settles once the load has stopped.
	if baseline == nil {
		t.Fatalf("no sample after the %v warm-up", warmUp)
	}
	final := k.soakSample(t, start)
	settle := time.Now().Add(15 * time.Second)
	settled := func(s soakSample) bool {
		return s.goroutines <= baseline.goroutines*1.1+5 && s.fds <= baseline.fds*1.1+5 && s.rss <= max(baseline.rss*1.1, baseline.rss+8<<20)
	}
	for !settled(final) && time.Now().Before(settle) {
		time.Sleep(500 * time.Millisecond)
		final = k.soakSample(t, start)
	}
	peak := *baseline
	for _, s := range samples {
		if s.at >= baseline.at {
			peak.rss, peak.fds, peak.goroutines = math.Max(peak.rss, s.rss), math.Max(peak.fds, s.fds), math.Max(peak.goroutines, s.goroutines)
		}
	}
	row := func(what string, s soakSample) {
		t.Logf("soak: %-28s RSS %6.1f MiB, %4.0f fds, %5.0f goroutines", what, s.rss/(1<<20), s.fds, s.goroutines)
	}
	row(fmt.Sprintf("after warm-up (%v):", baseline.at), *baseline)
	row("peak after warm-up:", peak)
	row("after the load stopped:", final)
	t.Logf("soak: kedge counted %.0f reloads applied, %.0f rejected", final.reloadsOK, final.reloadsFail)
	if !settled(final) {
		t.Errorf("kedge did not come back within 10%% of the post-warm-up sample once the load stopped")
	}
	if peak.rss > max(baseline.rss*1.5, baseline.rss+16<<20) || peak.fds > baseline.fds*1.5+10 || peak.goroutines > baseline.goroutines*1.5+20 {
		t.Errorf("kedge grew more than 50%% over the post-warm-up sample during the soak")
	}
	if int(final.reloadsFail) < invalid || int(final.reloadsOK) < reloads-invalid {
		t.Errorf("kedge counted %.0f reloads applied and %.0f rejected; %d valid and %d invalid were written", final.reloadsOK, final.reloadsFail, reloads-invalid, invalid)
	}
	if w.proc.exited() || k.proc.exited() {
		t.Error("winch or kedge exited during the soak")
	}
	testutil.EventuallyWithin(t, 5*time.Second, "the WebSocket backend reads a normal close for every session", func() bool {
		return int64(ws.normalCloses()) >= tallies[kinds[5]].ok.Load()
	})
}

// soakWebSocket is one WebSocket session of the soak: it opens u through client (winch's proxy port), exchanges 20
// messages 100 ms apart, has the backend ping it, and closes normally.
func soakWebSocket(client *http.Client, u string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // not the test's: it outlives the soak
	defer cancel()
	c, resp, err := wsDial(ctx, client, u, nil)
	if err != nil {
		return fmt.Errorf("%s: dial: %w (%s)", u, err, respSummary(resp))
	}
	defer c.CloseNow()
	for i := range 20 {
		msg := fmt.Sprintf("%s message %d %s", u, i, strings.Repeat("x", 1<<10))
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			return fmt.Errorf("%s: writing message %d: %w", u, i, err)
		}
		if _, back, err := c.Read(ctx); err != nil || string(back) != msg {
			return fmt.Errorf("%s: echo of message %d: %d bytes, %v", u, i, len(back), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("ping me")); err != nil {
		return fmt.Errorf("%s: asking for a ping: %w", u, err)
	}
	if _, answer, err := c.Read(ctx); err != nil || string(answer) != "pong seen" {
		return fmt.Errorf("%s: backend's ping: %q, %v", u, answer, err)
	}
	if err := c.Close(websocket.StatusNormalClosure, "soak"); err != nil {
		return fmt.Errorf("%s: closing: %w", u, err)
	}
	return nil
}
