// Command benchreport turns the output of `go test -bench BenchmarkProxy ./e2e/` into the report `make bench`
// prints, medians over -count runs: the closed-loop throughput of each traffic kind (HTTP/1.1, HTTP/2, gRPC unary
// and streaming, CONNECT) sent directly, through the plain ReverseProxy+TLS reference, through kedge, through nginx
// and through winch -> kedge, with ratios; the proxies' CPU time per operation with the kedge/nginx ratio; latency
// under closed-loop load and at a fixed rate (open-*, added over direct); resident memory per idle TLS connection
// (idle-*); then each of issue 10's targets with the measured value and HOLDS, MISS or n/a; and the skipped cases
// with their reasons.
//
// Usage: go test -run '^$' -bench BenchmarkProxy ./e2e/ | tee bench.txt; go run ./e2e/benchreport bench.txt
// (or on standard input). It exits 1 when a benchmark failed or the input holds no BenchmarkProxy results; a
// missed target is reported, not an error.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	in := stdin
	switch len(args) {
	case 0:
	case 1:
		f, err := os.Open(args[0])
		if err != nil {
			fmt.Fprintln(stderr, "benchreport:", err)
			return 1
		}
		defer f.Close()
		in = f
	default:
		fmt.Fprintln(stderr, "usage: benchreport [go-test-bench-output-file]")
		return 2
	}
	rep, err := parse(in)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if len(rep.traffic) == 0 {
		fmt.Fprintln(stderr, "benchreport: no BenchmarkProxy results in the input")
		return 1
	}
	if err := rep.write(stdout); err != nil {
		fmt.Fprintln(stderr, "benchreport:", err)
		return 1
	}
	if len(rep.failed) > 0 {
		return 1
	}
	return 0
}
