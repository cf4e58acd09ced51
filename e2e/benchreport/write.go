package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// write prints the report: throughput with ratios, CPU per operation, latency (closed and open loop), memory per
// idle connection, issue 10's targets, and the skips and failures.
func (rep *report) write(w io.Writer) error {
	fmt.Fprintf(w, "BenchmarkProxy, medians of %d run(s) on this machine. The load generator shares the cores and the\n", rep.runs())
	fmt.Fprintln(w, "machine may be shared: read the ratios within this run, not the absolute figures.")
	sections := []func(io.Writer) error{rep.writeRates, rep.writeCPU, rep.writeLatency, rep.writeOpen, rep.writeIdle, rep.writeTargets}
	for _, section := range sections {
		if err := section(w); err != nil {
			return err
		}
	}
	rep.writeNotes(w)
	return nil
}

// runs is the largest number of values any metric has: -count.
func (rep *report) runs() int {
	n := 0
	for _, byPath := range rep.cases {
		for _, res := range byPath {
			for _, v := range res.metrics {
				n = max(n, len(v))
			}
		}
	}
	return n
}

// table is a right-aligned tabwriter whose rows are slices of cells.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, head ...string) *table {
	return newTableFlags(w, tabwriter.AlignRight, head...)
}

func newTableFlags(w io.Writer, flags uint, head ...string) *table {
	t := &table{tabwriter.NewWriter(w, 0, 0, 2, ' ', flags)}
	t.row(head...)
	return t
}

func (t *table) row(cells ...string) { fmt.Fprintln(t.tw, strings.Join(cells, "\t")+"\t") }

func (t *table) flush() error { return t.tw.Flush() }

// trafficOf lists the traffic kinds of kind k in order of appearance.
func (rep *report) trafficOf(k int) []string {
	var out []string
	for _, t := range rep.traffic {
		if kindOf(t) == k {
			out = append(out, t)
		}
	}
	return out
}

func (rep *report) writeRates(w io.Writer) error {
	traffic := rep.trafficOf(kindRate)
	if len(traffic) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nThroughput, closed loop (higher is better). goref = plain httputil.ReverseProxy + TLS; winch = winch -> kedge.")
	head := append([]string{"traffic", "unit"}, rep.paths...)
	for _, r := range ratios {
		head = append(head, r[0]+"/"+r[1])
	}
	t := newTable(w, head...)
	for _, tr := range traffic {
		unit := rep.rateUnit(tr)
		row := []string{tr, unit}
		for _, p := range rep.paths {
			row = append(row, rep.cell(tr, p, unit, "%.0f"))
		}
		for _, r := range ratios {
			row = append(row, fmtRatio(rep.ratio(tr, unit, r[0], r[1])))
		}
		t.row(row...)
	}
	return t.flush()
}

// cpuPaths are the proxied paths whose CPU per operation is shown.
var cpuPaths = []string{"goref", "kedge", "nginx", "winch"}

func (rep *report) writeCPU(w io.Writer) error {
	fmt.Fprintln(w, "\nProxy CPU time per operation, µs (lower is better): per request, stream message or 64 KiB CONNECT chunk;")
	fmt.Fprintln(w, "winch counts winch + kedge.")
	t := newTable(w, append(append([]string{"traffic"}, cpuPaths...), "kedge/nginx", "kedge/goref", "winch/kedge")...)
	rows := 0
	for _, tr := range rep.traffic {
		if kindOf(tr) == kindIdle {
			continue
		}
		row := []string{tr}
		any := false
		for _, p := range cpuPaths {
			c := rep.cell(tr, p, cpuMetric, "%.1f")
			any = any || (c != "-" && c != "skip")
			row = append(row, c)
		}
		if !any {
			continue
		}
		for _, r := range [][2]string{{"kedge", "nginx"}, {"kedge", "goref"}, {"winch", "kedge"}} {
			row = append(row, fmtRatio(rep.ratio(tr, cpuMetric, r[0], r[1])))
		}
		t.row(row...)
		rows++
	}
	if rows == 0 {
		fmt.Fprintln(w, "  (none reported)")
		return nil
	}
	return t.flush()
}

func (rep *report) writeLatency(w io.Writer) error {
	fmt.Fprintln(w, "\nLatency under the closed-loop load, ms (p50 / p99).")
	t := newTable(w, append([]string{"traffic"}, rep.paths...)...)
	rows := 0
	for _, tr := range rep.trafficOf(kindRate) {
		row := []string{tr}
		any := false
		for _, p := range rep.paths {
			p50, ok1 := rep.value(tr, p, "p50-ms")
			p99, ok2 := rep.value(tr, p, "p99-ms")
			if ok1 && ok2 {
				row, any = append(row, fmt.Sprintf("%.2f / %.2f", p50, p99)), true
			} else {
				row = append(row, rep.cell(tr, p, "p50-ms", "%.2f"))
			}
		}
		if any {
			t.row(row...)
			rows++
		}
	}
	if rows == 0 {
		return nil
	}
	return t.flush()
}

func (rep *report) writeOpen(w io.Writer) error {
	traffic := rep.trafficOf(kindOpen)
	if len(traffic) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nOpen loop: latency in ms at a fixed rate (half of kedge's closed-loop rate), counted from when each")
	fmt.Fprintln(w, "request was due; +pN = added over direct at the same rate.")
	head := []string{"traffic", "path", "req/s", "achieved"}
	for _, p := range percentiles {
		head = append(head, p.label)
	}
	for _, p := range percentiles {
		head = append(head, "+"+p.label)
	}
	t := newTable(w, head...)
	for _, tr := range traffic {
		for _, p := range rep.paths {
			res := rep.cases[tr][p]
			if res == nil {
				continue
			}
			row := []string{tr, p, rep.cell(tr, p, offeredMetric, "%.0f"), rep.cell(tr, p, achievedMetric, "%.0f")}
			for _, pc := range percentiles {
				row = append(row, rep.cell(tr, p, pc.metric, "%.2f"))
			}
			for _, pc := range percentiles {
				cell := "-"
				if d, ok := rep.added(tr, p, pc.metric); ok && p != "direct" {
					cell = fmt.Sprintf("%+.2f", d)
				}
				row = append(row, cell)
			}
			t.row(row...)
		}
	}
	return t.flush()
}

// added is path's latency percentile minus direct's, in ms; not ok when either was not measured or fell behind.
func (rep *report) added(traffic, path, metric string) (float64, bool) {
	v, ok1 := rep.value(traffic, path, metric)
	d, ok2 := rep.value(traffic, "direct", metric)
	return v - d, ok1 && ok2 && rep.fellBehind(traffic, path) == "" && rep.fellBehind(traffic, "direct") == ""
}

// fellBehind says why an open-loop case's latency does not count (its answers came back well below the offered
// rate), or "" when it does.
func (rep *report) fellBehind(traffic, path string) string {
	offered, ok1 := rep.value(traffic, path, offeredMetric)
	achieved, ok2 := rep.value(traffic, path, achievedMetric)
	if !ok1 || !ok2 || achieved >= keptUp*offered {
		return ""
	}
	return fmt.Sprintf("%s/%s fell behind: answers at %.0f of the %.0f req/s offered, so its latency is the machine's "+
		"queue (rerun on a quieter machine or with a lower KEDGE_BENCH_OPEN_RATE)", traffic, path, achieved, offered)
}

func (rep *report) writeIdle(w io.Writer) error {
	traffic := rep.trafficOf(kindIdle)
	if len(traffic) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nIdle TLS connections: resident memory growth of a fresh proxy per connection, KiB (lower is better).")
	t := newTable(w, "traffic", "conns", "kedge", "nginx", "kedge/nginx")
	for _, tr := range traffic {
		conns := "-"
		for _, p := range []string{"kedge", "nginx"} {
			if n, ok := rep.value(tr, p, connsMetric); ok {
				conns = fmt.Sprintf("%.0f", n)
				break
			}
		}
		t.row(tr, conns, rep.cell(tr, "kedge", rssMetric, "%.1f"), rep.cell(tr, "nginx", rssMetric, "%.1f"),
			fmtRatio(rep.ratio(tr, rssMetric, "kedge", "nginx")))
	}
	return t.flush()
}

func (rep *report) writeNotes(w io.Writer) {
	var notes []string
	for _, tr := range rep.traffic {
		for _, p := range rep.paths {
			if res := rep.cases[tr][p]; res != nil && res.skip != "" {
				notes = append(notes, fmt.Sprintf("  %s/%s skipped: %s", tr, p, res.skip))
			}
		}
	}
	for _, tr := range rep.trafficOf(kindOpen) {
		for _, p := range rep.paths {
			if why := rep.fellBehind(tr, p); why != "" {
				notes = append(notes, "  "+why)
			}
		}
	}
	for _, f := range rep.failed {
		notes = append(notes, "  FAILED: "+f)
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
}

// cell is a metric's median formatted, "skip" for a skipped case, "-" when it was not reported.
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

// ratio is num's median of metric over den's.
func (rep *report) ratio(traffic, metric, num, den string) (float64, bool) {
	n, ok1 := rep.value(traffic, num, metric)
	d, ok2 := rep.value(traffic, den, metric)
	if !ok1 || !ok2 || d == 0 {
		return 0, false
	}
	return n / d, true
}

func fmtRatio(v float64, ok bool) string {
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.2f", v)
}
