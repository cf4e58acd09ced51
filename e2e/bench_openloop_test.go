package e2e

import (
	"context"
	"math"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// The open-loop cases send at a fixed rate, whatever the answers do. A closed loop (benchHTTP) sends the next
// request only when an answer came back, so a stall slows the sender down and hides the queueing it causes; here a
// request's latency counts from the moment it was due, so a stall shows up in the percentiles of every request
// scheduled behind it.
const (
	benchOpenWarm     = 16   // requests sent concurrently before the measurement, so it pays for no handshakes
	benchOpenInflight = 4096 // most requests outstanding at once; past it the sender waits, which still counts
)

// openLoopRate is the rate every open-<kind> case of this run sends at: KEDGE_BENCH_OPEN_RATE when set, else half
// of kedge's closed-loop rate of <kind> measured earlier in this run. It is chosen at the first call, so direct,
// kedge and nginx see the same rate.
func (e *benchEnv) openLoopRate(b *testing.B, kind string) float64 {
	if r, ok := e.openRate[kind]; ok {
		return r
	}
	r := float64(benchEnvInt(b, "KEDGE_BENCH_OPEN_RATE", 0))
	if r == 0 {
		sat, ok := e.saturation[kind]
		if !ok || sat <= 0 {
			b.Skipf("no closed-loop rate of %s/kedge in this run to take half of (include BenchmarkProxy/%s/kedge or set KEDGE_BENCH_OPEN_RATE)", kind, kind)
		}
		r = sat / 2
	}
	e.openRate[kind] = r
	return r
}

// benchOpenLoop sends b.N GETs of target (1 KiB answers) at rate per second, each at its scheduled time whether or
// not the earlier ones have been answered, and reports the p50, p99 and p99.9 latency counted from the scheduled
// time, the rate it offered and the rate the answers came back at. Every answer is checked.
func benchOpenLoop(b *testing.B, c *http.Client, target string, protoMajor int, token string, rate float64) {
	if rate <= 0 || math.IsInf(rate, 0) || math.IsNaN(rate) {
		b.Fatalf("open loop at %v requests per second", rate)
	}
	defer c.CloseIdleConnections()
	interval := time.Duration(float64(time.Second) / rate)
	// Bounded: b.N requests, and all of them within their schedule plus 30 s.
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(b.N)*interval+30*time.Second)
	defer cancel()
	if err := benchGet(ctx, c, target, protoMajor, token); err != nil {
		b.Fatalf("first answer: %v", err)
	}
	benchWarm(ctx, b, c, target, protoMajor, token)

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error // guarded by mu
		failed   int   // guarded by mu
	)
	lat := make([]time.Duration, b.N) // element i is written only by request i's goroutine, read after wg.Wait
	inflight := make(chan struct{}, benchOpenInflight)
	b.ResetTimer()
	start := time.Now()
	sent := 0
	for ; sent < b.N; sent++ {
		due := start.Add(time.Duration(sent) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		select {
		case inflight <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer func() { <-inflight; wg.Done() }()
			if err := benchGet(ctx, c, target, protoMajor, token); err != nil {
				mu.Lock()
				if failed++; firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			lat[i] = time.Since(due)
		}(sent)
	}
	wg.Wait()
	b.StopTimer()
	if sent < b.N {
		b.Fatalf("open loop stopped after %d of %d requests: %v", sent, b.N, ctx.Err())
	}
	if failed > 0 {
		b.Fatalf("%d of %d requests failed, the first with: %v", failed, b.N, firstErr)
	}
	slices.Sort(lat)
	for _, p := range []struct {
		q    float64
		unit string
	}{{0.50, "p50-ms"}, {0.99, "p99-ms"}, {0.999, "p999-ms"}} {
		b.ReportMetric(float64(lat[int(float64(len(lat)-1)*p.q)])/float64(time.Millisecond), p.unit)
	}
	b.ReportMetric(rate, "offered-req/s")
	// The rate the answers came back at: well below the offered rate, the machine could not keep up and the
	// percentiles measure its queue (benchreport flags that).
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "achieved-req/s")
}

// benchWarm sends benchOpenWarm requests at once and checks every answer, so the client holds the connections the
// measured load will reuse.
func benchWarm(ctx context.Context, b *testing.B, c *http.Client, target string, protoMajor int, token string) {
	errs := make(chan error, benchOpenWarm)
	for range benchOpenWarm {
		go func() { errs <- benchGet(ctx, c, target, protoMajor, token) }()
	}
	var first error
	for range benchOpenWarm {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		b.Fatalf("warming up: %v", first)
	}
}
