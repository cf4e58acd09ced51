package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sample is `go test -v -bench` output: results, a skip (reason before the --- SKIP line, as -v prints it), two
// runs of one case (-count 2), noise lines, and another benchmark that must be ignored.
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
BenchmarkProxy/connect/direct-2             	   44518	     50747 ns/op	1200.00 MB/s
BenchmarkProxy/connect/kedge-2              	   18510	    113154 ns/op	 600.00 MB/s	        85.36 proxy-cpu-us/op
BenchmarkOther-2                            	     100	     10 ns/op	 99 req/s
PASS
ok  	github.com/kedge-proxy/kedge/e2e	74.898s
`

func TestParse(t *testing.T) {
	rep, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rep.traffic, ","); got != "h1,connect" {
		t.Errorf("traffic kinds %q, want h1,connect", got)
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
		{"grpc-unary", "kedge", "req/s", 0, false},
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
	text := out.String()
	for _, want := range []string{
		// h1: direct 20000, goref 5000, kedge 3000 (median), nginx skipped; kedge/direct 0.15, kedge/goref 0.60.
		"h1 req/s 20000 5000 3000 skip - 0.15 0.60 - -",
		"connect MB/s 1200 - 600 - - 0.50 - - -",
		"h1 kedge 8.39 28.04 120.0 0.80x",
		"h1/nginx skipped: nginx is not installed",
		"h1: kedge at 60% of goref, meets the catalog's target of 60%",
	} {
		if !strings.Contains(squeeze(text), want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(squeeze(text), "connect direct -") {
		t.Errorf("a row with no per-operation numbers was printed:\n%s", text)
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
		{"passing run from stdin", sample, nil, 0, "kedge/goref", ""},
		{"passing run from a file", "", []string{writeTemp(t, dir, "ok.txt", sample)}, 0, "Throughput", ""},
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
