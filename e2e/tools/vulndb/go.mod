// The local Go vulnerability database and the pinned govulncheck that `make vuln` runs (vulncheck.sh beside this
// file). A module of its own, so that neither grows kedge's go.mod: `go tool govulncheck` in this directory runs the
// pinned govulncheck, and `go run .` converts a golang.org/x/vulndb snapshot (the version is pinned in the Makefile)
// into the database govulncheck reads with -db file://DIR. golang.org/x/mod is govulncheck's own dependency: the
// converter compares versions with the same semver package govulncheck uses.
module github.com/kedge-proxy/kedge/e2e/tools/vulndb

go 1.26.0

tool golang.org/x/vuln/cmd/govulncheck

require golang.org/x/mod v0.42.0

require (
	golang.org/x/sync v0.24.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/telemetry v0.0.0-20261010193011-f71dc92da45e // indirect
	golang.org/x/tools v0.52.0 // indirect
	golang.org/x/vuln v1.9.0 // indirect
)
