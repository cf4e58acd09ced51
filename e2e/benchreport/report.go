package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// rateUnits are the throughput metrics a benchmark may report, in order of preference.
var rateUnits = []string{"req/s", "msg/s", "MB/s"}

// knownPaths is the column order; paths the benchmark adds later are appended in the order they appear.
var knownPaths = []string{"direct", "goref", "kedge", "nginx", "winch"}

// ratios are the quotient columns of the throughput table: numerator path / denominator path.
var ratios = [][2]string{{"kedge", "direct"}, {"kedge", "nginx"}, {"kedge", "goref"}, {"nginx", "direct"}, {"winch", "kedge"}}

// Metrics the benchmark reports besides the rates.
const (
	cpuMetric      = "proxy-cpu-us/op" // CPU time of the proxies per operation
	rssMetric      = "rss-KiB/conn"    // resident memory per idle connection
	connsMetric    = "conns"           // idle connections held
	offeredMetric  = "offered-req/s"   // the fixed rate of an open-loop case
	achievedMetric = "achieved-req/s"  // the rate its answers came back at
)

// keptUp is how close an open-loop case's achieved rate must come to the offered one for its latency to count:
// below it the sender fell behind, the queue grew for the whole run, and the percentiles measure the machine.
const keptUp = 0.97

// percentiles are the open-loop latency metrics, in the order printed.
var percentiles = []struct{ metric, label string }{{"p50-ms", "p50"}, {"p99-ms", "p99"}, {"p999-ms", "p99.9"}}

// The kinds of traffic, told apart by name: open-* send at a fixed rate (latency), idle-* hold idle connections
// (memory), the others are closed-loop throughput.
const (
	kindRate = iota
	kindOpen
	kindIdle
)

func kindOf(traffic string) int {
	switch {
	case strings.HasPrefix(traffic, "open-"):
		return kindOpen
	case strings.HasPrefix(traffic, "idle-"):
		return kindIdle
	}
	return kindRate
}

// result is one BenchmarkProxy/<traffic>/<path> case: every metric it reported (several values with -count).
type result struct {
	metrics map[string][]float64
	skip    string
}

// report is the parsed benchmark output.
type report struct {
	traffic []string                      // in order of appearance
	paths   []string                      // column order
	cases   map[string]map[string]*result // traffic -> path -> result
	failed  []string                      // FAIL lines and failed benchmarks
}

// parse reads `go test -bench` output. Lines other than benchmark results, skips and failures are ignored.
func parse(r io.Reader) (*report, error) {
	rep := &report{cases: map[string]map[string]*result{}, paths: slices.Clone(knownPaths)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var (
		pending  string  // first message logged by the current benchmark (go test -v prints it before --- SKIP)
		lastSkip *result // a skip whose reason has not been seen yet
	)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "Benchmark"):
			pending, lastSkip = "", nil
			f := strings.Fields(line)
			traffic, path, ok := caseName(f[0])
			if !ok || len(f) < 4 {
				continue // another benchmark, or -v's line naming the case before it runs
			}
			res := rep.get(traffic, path)
			for i := 2; i+1 < len(f); i += 2 {
				v, err := strconv.ParseFloat(f[i], 64)
				if err != nil {
					break
				}
				res.metrics[f[i+1]] = append(res.metrics[f[i+1]], v)
			}
		case strings.HasPrefix(trimmed, "--- SKIP: "):
			lastSkip = nil
			if traffic, path, ok := caseName(strings.TrimPrefix(trimmed, "--- SKIP: ")); ok {
				res := rep.get(traffic, path)
				if res.skip = pending; pending == "" {
					res.skip, lastSkip = "skipped", res
				}
			}
			pending = ""
		case strings.HasPrefix(trimmed, "--- FAIL: "):
			msg := strings.TrimPrefix(trimmed, "--- FAIL: ")
			if pending != "" {
				msg += ": " + pending
			}
			rep.failed = append(rep.failed, msg)
			pending, lastSkip = "", nil
		case strings.HasPrefix(line, "    "):
			// "    bench_test.go:123: message": keep the message without the position.
			msg := trimmed
			if pos, after, ok := strings.Cut(msg, ": "); ok && strings.Contains(pos, ".go:") {
				msg = after
			}
			if lastSkip != nil {
				lastSkip.skip, lastSkip = msg, nil
			} else if pending == "" {
				pending = msg
			}
		case strings.HasPrefix(line, "FAIL\t"), strings.HasPrefix(line, "panic: "):
			rep.failed = append(rep.failed, trimmed)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("benchreport: reading the benchmark output: %w", err)
	}
	return rep, nil
}

// caseName splits "BenchmarkProxy/h1/kedge-2" into ("h1", "kedge").
func caseName(name string) (traffic, path string, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 3 || parts[0] != "BenchmarkProxy" {
		return "", "", false
	}
	path = parts[2]
	if i := strings.LastIndexByte(path, '-'); i > 0 {
		if _, err := strconv.Atoi(path[i+1:]); err == nil {
			path = path[:i] // the -GOMAXPROCS suffix
		}
	}
	return parts[1], path, true
}

func (rep *report) get(traffic, path string) *result {
	byPath, ok := rep.cases[traffic]
	if !ok {
		byPath = map[string]*result{}
		rep.cases[traffic] = byPath
		rep.traffic = append(rep.traffic, traffic)
	}
	if !slices.Contains(rep.paths, path) {
		rep.paths = append(rep.paths, path)
	}
	res, ok := byPath[path]
	if !ok {
		res = &result{metrics: map[string][]float64{}}
		byPath[path] = res
	}
	return res
}

// value is the median of a metric over the runs; ok is false when the case did not report it.
func (rep *report) value(traffic, path, metric string) (float64, bool) {
	res := rep.cases[traffic][path]
	if res == nil || len(res.metrics[metric]) == 0 {
		return 0, false
	}
	v := slices.Clone(res.metrics[metric])
	sort.Float64s(v)
	if n := len(v); n%2 == 0 {
		return (v[n/2-1] + v[n/2]) / 2, true
	}
	return v[len(v)/2], true
}

// rateUnit is the throughput metric of a traffic kind: the first of rateUnits any of its cases reported.
func (rep *report) rateUnit(traffic string) string {
	for _, u := range rateUnits {
		for _, res := range rep.cases[traffic] {
			if len(res.metrics[u]) > 0 {
				return u
			}
		}
	}
	return ""
}
