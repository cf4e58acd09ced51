#!/usr/bin/env bash
# bench.sh: `make bench`. Runs BenchmarkProxy (e2e/bench_test.go) — HTTP/1.1, HTTP/2, gRPC unary and streaming, and
# CONNECT, each sent directly, through a plain ReverseProxy+TLS reference, through kedge, through nginx (when
# installed) and through winch -> kedge, on this machine in one run — and prints the table of rates and ratios
# (e2e/benchreport). All traffic stays on 127.0.0.1; the run takes about 2 minutes on 2 cores.
#
# Environment: BENCHTIME (go test -benchtime, default 2s), COUNT (-count, default 1; the table shows medians),
# BENCH (the -bench pattern, default BenchmarkProxy, e.g. 'BenchmarkProxy/h1/'), PROFILE=<file> (first write a
# 5-second CPU profile of kedge under HTTP/1.1 load and print kedge's own top entries), OUT=<file> (keep the raw
# benchmark output there).
set -uo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
out=${OUT:-$(mktemp)}
[ -n "${OUT:-}" ] || trap 'rm -f "$out"' EXIT

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  echo "bench: nginx is not installed, so its cases are skipped (Debian: apt-get install -y nginx)" >&2
fi
if [ -n "${PROFILE:-}" ]; then
  export KEDGE_BENCH_CPUPROFILE
  KEDGE_BENCH_CPUPROFILE=$(realpath -m "$PROFILE")
fi

# -v makes go test print why a case was skipped; only result, skip and failure lines are shown while it runs.
"$GO" test -v -run '^$' -bench "${BENCH:-BenchmarkProxy}" -benchtime "${BENCHTIME:-2s}" -count "${COUNT:-1}" \
  -timeout 10m ./e2e/ 2>&1 | tee "$out" | grep --line-buffered -E '^(Benchmark[^ ]+-[0-9]+ |--- (SKIP|FAIL)|FAIL|ok|panic)'
status=${PIPESTATUS[0]}

echo
"$GO" run ./e2e/benchreport "$out" || status=1

if [ -n "${PROFILE:-}" ] && [ -s "$KEDGE_BENCH_CPUPROFILE" ]; then
  echo
  echo "kedge CPU profile under HTTP/1.1 load ($PROFILE), kedge's own code by cumulative time:"
  "$GO" tool pprof -top -cum -show 'kedge-proxy/kedge/' "$KEDGE_BENCH_CPUPROFILE" 2>/dev/null | sed -n '/flat%/,+15p'
fi
exit "$status"
