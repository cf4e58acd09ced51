package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// rateUnits are the throughput metrics a benchmark may report, in order of preference.
var rateUnits = []string{"req/s", "msg/s", "MB/s"}

// knownPaths is the column order; paths the benchmark adds later are appended in the order they appear.
var knownPaths = []string{"direct", "goref", "kedge", "nginx", "winch"}

// ratios are the quotient columns: numerator path / denominator path.
var ratios = [][2]string{{"kedge", "direct"}, {"kedge", "goref"}, {"nginx", "direct"}, {"winch", "direct"}}

// targetRatio is reliability-catalog §5: kedge at >= 60% of the plain ReverseProxy+TLS reference.
const targetRatio = 0.60

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

// write prints the throughput table with ratios, the per-operation table, the skips and the target check.
func (rep *report) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "Throughput (higher is better). goref = plain httputil.ReverseProxy + TLS, the catalog's reference.")
	head := []string{"traffic", "unit"}
	head = append(head, rep.paths...)
	for _, r := range ratios {
		head = append(head, r[0]+"/"+r[1])
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, t := range rep.traffic {
		unit := rep.rateUnit(t)
		row := []string{t, unit}
		for _, p := range rep.paths {
			row = append(row, rep.cell(t, p, unit, "%.0f"))
		}
		for _, r := range ratios {
			row = append(row, rep.ratio(t, unit, r[0], r[1]))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w, "\nPer operation (lower is better): latency percentiles under load, and the proxies' CPU time per")
	fmt.Fprintln(w, "operation (request, stream message, or 64 KiB CONNECT chunk; winch = winch + kedge).")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "traffic\tpath\tp50 ms\tp99 ms\tproxy CPU µs/op\tCPU vs goref\t")
	for _, t := range rep.traffic {
		for _, p := range rep.paths {
			res := rep.cases[t][p]
			if res == nil || res.skip != "" {
				continue
			}
			cpuRatio := "-"
			if c, ok := rep.value(t, p, "proxy-cpu-us/op"); ok && p != "goref" {
				if ref, ok := rep.value(t, "goref", "proxy-cpu-us/op"); ok && ref > 0 {
					cpuRatio = fmt.Sprintf("%.2fx", c/ref)
				}
			}
			p50, p99, cpu := rep.cell(t, p, "p50-ms", "%.2f"), rep.cell(t, p, "p99-ms", "%.2f"), rep.cell(t, p, "proxy-cpu-us/op", "%.1f")
			if p50 == "-" && p99 == "-" && cpu == "-" {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", t, p, p50, p99, cpu, cpuRatio)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	var notes []string
	for _, t := range rep.traffic {
		for _, p := range rep.paths {
			if res := rep.cases[t][p]; res != nil && res.skip != "" {
				notes = append(notes, fmt.Sprintf("  %s/%s skipped: %s", t, p, res.skip))
			}
		}
	}
	for _, t := range []string{"h1", "h2"} {
		unit := rep.rateUnit(t)
		k, ok1 := rep.value(t, "kedge", unit)
		g, ok2 := rep.value(t, "goref", unit)
		if ok1 && ok2 && g > 0 {
			verdict := "meets"
			if k/g < targetRatio {
				verdict = "BELOW"
			}
			notes = append(notes, fmt.Sprintf("  %s: kedge at %.0f%% of goref, %s the catalog's target of %.0f%%", t, 100*k/g, verdict, 100*targetRatio))
		}
	}
	for _, f := range rep.failed {
		notes = append(notes, "  FAILED: "+f)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
	return nil
}

func (rep *report) cell(traffic, path, metric, format string) string {
	if res := rep.cases[traffic][path]; res != nil && res.skip != "" {
		return "skip"
	}
	v, ok := rep.value(traffic, path, metric)
	if !ok {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func (rep *report) ratio(traffic, unit, num, den string) string {
	n, ok1 := rep.value(traffic, num, unit)
	d, ok2 := rep.value(traffic, den, unit)
	if !ok1 || !ok2 || d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", n/d)
}
