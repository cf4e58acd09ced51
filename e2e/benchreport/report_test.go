package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sample is `go test -v -bench` output: results, a skip (reason before the --- SKIP line, as -v prints it), two
// runs of one case (-count 2), open-loop and idle-connection cases, noise lines, and another benchmark that must
// be ignored.
const sample = `goos: linux
pkg: github.com/kedge-proxy/kedge/e2e
BenchmarkProxy
BenchmarkProxy/h1/direct
BenchmarkProxy/h1/direct-2         	   59488	     48058 ns/op	         1.961 p50-ms	        18.35 p99-ms	     20000 req/s
BenchmarkProxy/h1/goref
BenchmarkProxy/h1/goref-2          	   17203	    158833 ns/op	         9.124 p50-ms	        27.92 p99-ms	       150.0 proxy-cpu-us/op	      5000 req/s
BenchmarkProxy/h1/kedge
BenchmarkProxy/h1/kedge-2          	   14637	    147813 ns/op	         8.394 p50-ms	        28.04 p99-ms	       120.0 proxy-cpu-us/op	      2000 req/s
BenchmarkProxy/h1/kedge-2          	   14637	    147813 ns/op	         8.394 p50-ms	        28.04 p99-ms	       120.0 proxy-cpu-us/op	      4000 req/s
BenchmarkProxy/h1/nginx
    bench_test.go:91: nginx is not installed (Debian package nginx: apt-get install -y nginx)
--- SKIP: BenchmarkProxy/h1/nginx
BenchmarkProxy/h1/winch-2          	   14637	    147813 ns/op	         8.394 p50-ms	        28.04 p99-ms	       240.0 proxy-cpu-us/op	      2700 req/s
BenchmarkProxy/grpc-unary/kedge-2  	   20000	     60000 ns/op	         1.0 p50-ms	         2.0 p99-ms	        80.0 proxy-cpu-us/op	      9000 req/s
BenchmarkProxy/grpc-unary/nginx-2  	   20000	     60000 ns/op	         1.0 p50-ms	         2.0 p99-ms	        40.0 proxy-cpu-us/op	     10000 req/s
BenchmarkProxy/connect/direct-2             	   44518	     50747 ns/op	1200.00 MB/s
BenchmarkProxy/connect/kedge-2              	   18510	    113154 ns/op	 600.00 MB/s	        85.36 proxy-cpu-us/op
BenchmarkProxy/open-h1/direct-2             	    6000	    333000 ns/op	      3000 offered-req/s	      2990 achieved-req/s	         0.20 p50-ms	         0.50 p99-ms	         2.00 p999-ms
BenchmarkProxy/open-h1/kedge-2              	    6000	    333000 ns/op	      3000 offered-req/s	      2950 achieved-req/s	         0.60 p50-ms	         1.75 p99-ms	         9.00 p999-ms	       110.0 proxy-cpu-us/op
BenchmarkProxy/open-h2/direct-2             	    6000	    333000 ns/op	      3000 offered-req/s	      2990 achieved-req/s	         0.20 p50-ms	         0.50 p99-ms	         2.00 p999-ms
BenchmarkProxy/open-h2/kedge-2              	    6000	    333000 ns/op	      3000 offered-req/s	      1000 achieved-req/s	       900.0 p50-ms	      1500 p99-ms	      1600 p999-ms	       110.0 proxy-cpu-us/op
BenchmarkProxy/idle-h1/kedge-2              	       1	9000000000 ns/op	     10000 conns	        33.50 rss-KiB/conn
BenchmarkProxy/idle-h1/nginx-2              	       1	9000000000 ns/op	     10000 conns	        15.00 rss-KiB/conn
BenchmarkOther-2                            	     100	     10 ns/op	 99 req/s
PASS
ok  	github.com/kedge-proxy/kedge/e2e	74.898s
`

func TestParse(t *testing.T) {
	rep, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(rep.traffic, ","), "h1,grpc-unary,connect,open-h1,open-h2,idle-h1"; got != want {
		t.Errorf("traffic kinds %q, want %q", got, want)
	}
	tests := []struct {
		traffic, path, metric string
		want                  float64
		ok                    bool
	}{
		{"h1", "direct", "req/s", 20000, true},
		{"h1", "kedge", "req/s", 3000, true}, // median of two runs
		{"h1", "kedge", "proxy-cpu-us/op", 120, true},
		{"h1", "direct", "proxy-cpu-us/op", 0, false},
		{"h1", "nginx", "req/s", 0, false},
		{"connect", "kedge", "MB/s", 600, true},
		{"grpc-unary", "kedge", "req/s", 9000, true},
		{"grpc-stream", "kedge", "msg/s", 0, false},
		{"open-h1", "kedge", "p999-ms", 9, true},
		{"open-h1", "kedge", "offered-req/s", 3000, true},
		{"idle-h1", "nginx", "rss-KiB/conn", 15, true},
	}
	for _, tc := range tests {
		got, ok := rep.value(tc.traffic, tc.path, tc.metric)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s/%s %s = %v, %v; want %v, %v", tc.traffic, tc.path, tc.metric, got, ok, tc.want, tc.ok)
		}
	}
	if got := rep.cases["h1"]["nginx"].skip; !strings.HasPrefix(got, "nginx is not installed") {
		t.Errorf("skip reason %q", got)
	}
	if got := rep.rateUnit("connect"); got != "MB/s" {
		t.Errorf("connect unit %q, want MB/s", got)
	}
	if len(rep.failed) != 0 {
		t.Errorf("failures %q in a passing run", rep.failed)
	}
}

func TestCaseName(t *testing.T) {
	tests := []struct {
		in, traffic, path string
		ok                bool
	}{
		{"BenchmarkProxy/h1/kedge-2", "h1", "kedge", true},
		{"BenchmarkProxy/grpc-unary/winch", "grpc-unary", "winch", true},
		{"BenchmarkProxy/h1/x-y", "h1", "x-y", true}, // not a GOMAXPROCS suffix
		{"BenchmarkProxy/h1", "", "", false},
		{"BenchmarkOther/h1/kedge-2", "", "", false},
	}
	for _, tc := range tests {
		traffic, path, ok := caseName(tc.in)
		if traffic != tc.traffic || path != tc.path || ok != tc.ok {
			t.Errorf("caseName(%q) = %q, %q, %v; want %q, %q, %v", tc.in, traffic, path, ok, tc.traffic, tc.path, tc.ok)
		}
	}
}

func TestWrite(t *testing.T) {
	rep, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rep.write(&out); err != nil {
		t.Fatal(err)
	}
	text := squeeze(out.String())
	for _, want := range []string{
		"medians of 2 run(s)",
		// h1: direct 20000, goref 5000, kedge 3000 (median), nginx skipped, winch 2700; kedge/direct 0.15,
		// kedge/nginx -, kedge/goref 0.60, nginx/direct -, winch/kedge 0.90.
		"h1 req/s 20000 5000 3000 skip 2700 0.15 - 0.60 - 0.90",
		"grpc-unary req/s - - 9000 10000 - - 0.90 - - -",
		"connect MB/s 1200 - 600 - - 0.50 - - - -",
		// CPU: goref kedge nginx winch, kedge/nginx kedge/goref winch/kedge.
		"h1 150.0 120.0 skip 240.0 - 0.80 2.00",
		"grpc-unary - 80.0 40.0 - 2.00 - -",
		"open-h1 - 110.0 - - - - -",
		"h1 1.96 / 18.35 9.12 / 27.92 8.39 / 28.04 skip 8.39 / 28.04",
		// Open loop: offered rate, p50 p99 p99.9, then added over direct.
		"open-h1 direct 3000 2990 0.20 0.50 2.00 - - -",
		"open-h1 kedge 3000 2950 0.60 1.75 9.00 +0.40 +1.25 +7.00",
		// open-h2/kedge answered at a third of the offered rate: its latency is not counted.
		"open-h2 kedge 3000 1000 900.00 1500.00 1600.00 - - -",
		"open-h2/kedge fell behind: answers at 1000 of the 3000 req/s offered",
		"open-loop h2 p99 added over direct - ≤ 1 ms n/a",
		"idle-h1 10000 33.5 15.0 2.23",
		"h1 req/s vs nginx - ≥ 0.75x n/a",
		"h1 CPU per request vs nginx - ≤ 1.5x n/a",
		"gRPC unary calls/s vs nginx grpc_pass 0.90x ≥ 0.9x HOLDS",
		"gRPC unary CPU per call vs nginx 2.00x ≤ 1.5x MISS",
		"CONNECT MB/s vs direct 0.50x ≥ 0.85x MISS",
		"winch->kedge h1 vs kedge alone 0.90x ≥ 0.8x HOLDS",
		"open-loop h1 p99 added over direct 1.25 ms ≤ 1 ms MISS",
		"idle TLS connection, h1 33.5 KiB ≤ 48 KiB HOLDS",
		"h1 req/s vs goref (reliability catalog) 0.60x ≥ 0.6x HOLDS",
		"h1/nginx skipped: nginx is not installed",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(text, "\nconnect - - - - -\n") {
		t.Errorf("a latency row with no numbers was printed:\n%s", out.String())
	}
}

func TestTargetVerdict(t *testing.T) {
	rep, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	fixed := func(v float64) func(*report) (float64, bool) { return func(*report) (float64, bool) { return v, true } }
	tests := []struct {
		name          string
		tg            target
		value, result string
	}{
		{"at least, met exactly", target{measure: fixed(0.75), limit: 0.75, unit: "x"}, "0.75x", "HOLDS"},
		{"at least, below", target{measure: fixed(0.62), limit: 0.75, unit: "x"}, "0.62x", "MISS"},
		{"at most, met exactly", target{measure: fixed(1), atMost: true, limit: 1, unit: " ms"}, "1.00 ms", "HOLDS"},
		{"at most, above", target{measure: fixed(49.04), atMost: true, limit: 48, unit: " KiB"}, "49.0 KiB", "MISS"},
		{"not measured", target{measure: rateRatio("h2", "kedge", "nginx"), limit: 0.7, unit: "x"}, "-", "n/a"},
		{"skipped denominator", target{measure: rateRatio("h1", "kedge", "nginx"), limit: 0.7, unit: "x"}, "-", "n/a"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			value, result := tc.tg.verdict(rep)
			if value != tc.value || result != tc.result {
				t.Errorf("verdict = %q, %q; want %q, %q", value, result, tc.value, tc.result)
			}
		})
	}
}

func TestKindOf(t *testing.T) {
	tests := []struct {
		traffic string
		want    int
	}{
		{"h1", kindRate},
		{"grpc-stream", kindRate},
		{"open-h1", kindOpen},
		{"idle-h2", kindIdle},
		{"idle", kindRate},
	}
	for _, tc := range tests {
		if got := kindOf(tc.traffic); got != tc.want {
			t.Errorf("kindOf(%q) = %d, want %d", tc.traffic, got, tc.want)
		}
	}
}

// squeeze turns every run of spaces into one, so expectations do not depend on column widths.
func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	failing := sample + "BenchmarkProxy/h2/kedge\n    bench_test.go:140: first answer: HTTP/2.0 502 Bad Gateway\n--- FAIL: BenchmarkProxy/h2/kedge\n--- FAIL: BenchmarkProxy\nFAIL\nFAIL\tgithub.com/kedge-proxy/kedge/e2e\t9.1s\n"
	tests := []struct {
		name, input string
		args        []string
		code        int
		stdout      string
		stderr      string
	}{
		{"passing run from stdin", sample, nil, 0, "kedge/nginx", ""},
		{"passing run from a file", "", []string{writeTemp(t, dir, "ok.txt", sample)}, 0, "Targets", ""},
		{"failed benchmark", failing, nil, 1, "FAILED: BenchmarkProxy/h2/kedge: first answer: HTTP/2.0 502 Bad Gateway", ""},
		{"no results", "PASS\n", nil, 1, "", "no BenchmarkProxy results"},
		{"missing file", "", []string{filepath.Join(dir, "nope.txt")}, 1, "", "nope.txt"},
		{"two files", "", []string{"a", "b"}, 2, "", "usage"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, strings.NewReader(tc.input), &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("exit %d, want %d; stdout lacks %q or stderr lacks %q:\n%s\n%s", code, tc.code, tc.stdout, tc.stderr, stdout.String(), stderr.String())
			}
		})
	}
}

func writeTemp(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
