// The pinned h2spec that e2e/h2spec_test.go builds and runs against kedge. A module of its own, so that its
// dependencies stay out of kedge's go.mod; `go build github.com/summerwind/h2spec/cmd/h2spec` in this directory
// builds the pinned version (from the module cache, or the module proxy when the cache lacks it).
module github.com/kedge-proxy/kedge/e2e/tools/h2spec

go 1.26.0

tool github.com/summerwind/h2spec/cmd/h2spec

require (
	github.com/fatih/color v1.19.0 // indirect
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	github.com/spf13/cobra v1.10.2 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	github.com/summerwind/h2spec v2.2.1+incompatible // indirect
	golang.org/x/net v0.63.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)
