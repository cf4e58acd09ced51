package main

import (
	"fmt"
	"io"
)

// target is one line of issue 10's table of goals (and the reliability catalog's), checked against this run.
type target struct {
	name    string
	measure func(rep *report) (float64, bool)
	atMost  bool    // the value must not exceed limit (CPU, latency, memory); otherwise it must reach it
	limit   float64 // in unit
	unit    string  // "x" for ratios, " ms", " KiB"
}

// rateRatio is num/den of traffic's throughput.
func rateRatio(traffic, num, den string) func(*report) (float64, bool) {
	return func(rep *report) (float64, bool) { return rep.ratio(traffic, rep.rateUnit(traffic), num, den) }
}

// metricRatio is num/den of a per-operation metric.
func metricRatio(traffic, metric, num, den string) func(*report) (float64, bool) {
	return func(rep *report) (float64, bool) { return rep.ratio(traffic, metric, num, den) }
}

// targets are issue 10's goals ("kedge and winch at nginx's speed"), then the catalog's goref target.
var targets = []target{
	{"h1 req/s vs nginx", rateRatio("h1", "kedge", "nginx"), false, 0.75, "x"},
	{"h1 CPU per request vs nginx", metricRatio("h1", cpuMetric, "kedge", "nginx"), true, 1.5, "x"},
	{"h2 req/s vs nginx", rateRatio("h2", "kedge", "nginx"), false, 0.70, "x"},
	{"h2 CPU per request vs nginx", metricRatio("h2", cpuMetric, "kedge", "nginx"), true, 2, "x"},
	{"gRPC unary calls/s vs nginx grpc_pass", rateRatio("grpc-unary", "kedge", "nginx"), false, 0.9, "x"},
	{"gRPC unary CPU per call vs nginx", metricRatio("grpc-unary", cpuMetric, "kedge", "nginx"), true, 1.5, "x"},
	{"gRPC stream msg/s vs direct", rateRatio("grpc-stream", "kedge", "direct"), false, 0.5, "x"},
	{"CONNECT MB/s vs direct", rateRatio("connect", "kedge", "direct"), false, 0.85, "x"},
	{"winch->kedge h1 vs kedge alone", rateRatio("h1", "winch", "kedge"), false, 0.8, "x"},
	{"winch->kedge gRPC unary vs kedge alone", rateRatio("grpc-unary", "winch", "kedge"), false, 0.8, "x"},
	{"open-loop h1 p99 added over direct", openAdded("open-h1", "p99-ms"), true, 1, " ms"},
	{"open-loop h2 p99 added over direct", openAdded("open-h2", "p99-ms"), true, 1, " ms"},
	{"idle TLS connection, h1", idleKiB("idle-h1"), true, 48, " KiB"},
	{"idle TLS connection, h2", idleKiB("idle-h2"), true, 48, " KiB"},
	{"h1 req/s vs goref (reliability catalog)", rateRatio("h1", "kedge", "goref"), false, 0.60, "x"},
	{"h2 req/s vs goref (reliability catalog)", rateRatio("h2", "kedge", "goref"), false, 0.60, "x"},
}

func openAdded(traffic, metric string) func(*report) (float64, bool) {
	return func(rep *report) (float64, bool) { return rep.added(traffic, "kedge", metric) }
}

func idleKiB(traffic string) func(*report) (float64, bool) {
	return func(rep *report) (float64, bool) { return rep.value(traffic, "kedge", rssMetric) }
}

// verdict is the measured value and whether the target holds: HOLDS, MISS, or n/a when this run did not measure it.
func (tg target) verdict(rep *report) (value, result string) {
	v, ok := tg.measure(rep)
	if !ok {
		return "-", "n/a"
	}
	format := "%.2f%s"
	if tg.unit == " KiB" {
		format = "%.1f%s"
	}
	value = fmt.Sprintf(format, v, tg.unit)
	if (tg.atMost && v <= tg.limit) || (!tg.atMost && v >= tg.limit) {
		return value, "HOLDS"
	}
	return value, "MISS"
}

func (rep *report) writeTargets(w io.Writer) error {
	fmt.Fprintln(w, "\nTargets (issue 10; kedge unless named; n/a = not measured in this run):")
	t := newTableFlags(w, 0, "  target", "measured", "goal", "")
	for _, tg := range targets {
		value, result := tg.verdict(rep)
		op := "≥"
		if tg.atMost {
			op = "≤"
		}
		t.row("  "+tg.name, value, fmt.Sprintf("%s %g%s", op, tg.limit, tg.unit), result)
	}
	return t.flush()
}
