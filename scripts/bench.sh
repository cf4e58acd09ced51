#!/usr/bin/env bash
# bench.sh: `make bench`. Runs BenchmarkProxy (e2e/bench*_test.go) on this machine in one run and prints one report
# (e2e/benchreport): HTTP/1.1, HTTP/2, gRPC unary and streaming and CONNECT sent directly, through a plain
# ReverseProxy+TLS reference, through kedge, through nginx (grpc_pass for gRPC; when installed) and through
# winch -> kedge, with rates, ratios and the proxies' CPU per operation; open-loop latency at half of kedge's
# closed-loop rate (h1, h2; added over direct); resident memory per idle TLS connection (h1, h2; a fresh kedge and
# nginx each); and issue 10's targets with HOLDS or MISS. All traffic stays on 127.0.0.1; a run takes about
# 3 minutes on 2 cores (COUNT=3: about three times that). The figures are only as quiet as the machine.
#
# Environment: BENCHTIME (go test -benchtime, default 2s), COUNT (-count, default 1; the report shows medians),
# BENCH (the -bench pattern, default BenchmarkProxy, e.g. 'BenchmarkProxy/h1/'), KEDGE_BENCH_IDLE_CONNS (idle
# connections per idle-* case, default 10000), KEDGE_BENCH_OPEN_RATE (req/s of the open-* cases instead of half of
# kedge's rate), PROFILE=<file> (first write a 5-second CPU profile of kedge under HTTP/1.1 load and print the
# project's own top entries; KEDGE_BENCH_PROFILE_LOAD=h2|grpc|grpc-stream|connect|winch-h1|winch-connect|winch-grpc|idle-h1|idle-h2 chooses
# another load and KEDGE_BENCH_PROFILE_KIND=heap|allocs another profile: e2e/bench_profile_test.go), OUT=<file> (keep
# the raw benchmark output there).
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
  -timeout 30m ./e2e/ 2>&1 | tee "$out" | grep --line-buffered -E '^(Benchmark[^ ]+-[0-9]+ |--- (SKIP|FAIL)|FAIL|ok|panic)'
status=${PIPESTATUS[0]}

echo
"$GO" run ./e2e/benchreport "$out" || status=1

if [ -n "${PROFILE:-}" ] && [ -s "$KEDGE_BENCH_CPUPROFILE" ]; then
  echo
  echo "${KEDGE_BENCH_PROFILE_KIND:-CPU} profile under the ${KEDGE_BENCH_PROFILE_LOAD:-h1} load ($PROFILE), the project's own code by cumulative time:"
  "$GO" tool pprof -top -cum -show 'kedge-proxy/kedge/' "$KEDGE_BENCH_CPUPROFILE" 2>/dev/null | sed -n '/flat%/,+15p'
fi
exit "$status"
