#!/usr/bin/env bash
# fuzz.sh: `make fuzz`. Runs every fuzz target of the module (func Fuzz* in any package) for FUZZTIME each (default
# 1m; the issue's long run is FUZZTIME=10m), one after another. A crasher is written by go test to the package's
# testdata/fuzz/<Target>/ and the run stops with its failure: commit the input as a regression seed with the fix.
# FUZZ=<regexp> limits the targets. `make test` runs the seed corpora only (as plain tests).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-1m}
pattern=${FUZZ:-.}
n=0
for pkg in $("$GO" list ./...); do
  for target in $("$GO" test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' | grep -E "$pattern" || true); do
    n=$((n + 1))
    echo "== $pkg $target ($FUZZTIME)"
    "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg"
  done
done
echo "fuzzed $n targets for $FUZZTIME each"
