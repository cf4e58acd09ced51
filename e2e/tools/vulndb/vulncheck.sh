#!/usr/bin/env bash
# make vuln: govulncheck (pinned in this directory's go.mod) on kedge's ./... against a local copy of the Go
# vulnerability database, built once per snapshot from the golang.org/x/vulndb module (VULNDB_VERSION) that the Go
# module proxy serves, into ${XDG_CACHE_HOME:-~/.cache}/kedge/vulndb/<version>. Fails on a called vulnerability that
# known-findings.txt does not list, and on a listed one no longer found. `vulncheck.sh warm` only builds the
# database and govulncheck (.ci/run). docs/reliability.md#govulncheck.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
GO="${GO:-go}"
: "${VULNDB_VERSION:?VULNDB_VERSION (a golang.org/x/vulndb pseudo-version) is required}"
db="${XDG_CACHE_HOME:-$HOME/.cache}/kedge/vulndb/$VULNDB_VERSION"

if [ ! -f "$db/index/db.json" ]; then
  src="$(GOWORK=off GOFLAGS=-mod=mod "$GO" mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
  [ -d "$src/data/osv" ] || { echo "vulndb: golang.org/x/vulndb@$VULNDB_VERSION has no data/osv ($src)" >&2; exit 1; }
  mkdir -p "$(dirname "$db")"
  # The converter writes $db.tmp and renames it to $db, so a half-built database is never read.
  GOWORK=off "$GO" -C "$here" run . -src "$src" -version "$VULNDB_VERSION" -out "$db"
fi
stamp="$(sed -n 's/.*"modified":"\([^"]*\)".*/\1/p' "$db/index/db.json")"
age=$(( ( $(date +%s) - $(date -d "$stamp" +%s) ) / 86400 ))
echo "vulndb: snapshot golang.org/x/vulndb@$VULNDB_VERSION of $stamp ($age days old) in $db"

if [ "${1:-}" = warm ]; then
  GOWORK=off "$GO" -C "$here" build -o /dev/null golang.org/x/vuln/cmd/govulncheck
  exit 0
fi
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
GOWORK=off "$GO" -C "$here" tool govulncheck -C "$root" -db "file://$db" -format json ./... >"$report"
GOWORK=off "$GO" -C "$here" run . -findings "$report" -known "$here/known-findings.txt"
