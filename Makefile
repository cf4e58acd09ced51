# Everything CI runs is `make test`; .ci/run calls exactly that.
GO        ?= go
BIN       := bin
PKG       := github.com/kedge-proxy/kedge
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X $(PKG)/pkg/shared/buildinfo.Version=$(VERSION)
FUZZTIME  ?= 1m
FUZZ      ?= .
PROTOS    := kedgeconfig/director.proto kedgeconfig/backendpool.proto winchconfig/mapper.proto winchconfig/auth.proto

.PHONY: transfer fuzz all build test vet unit e2e h2spec bench bench-micro bench-smoke proto proto-check demo fmt clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/kedge ./cmd/kedge
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/winch ./cmd/winch

## test: vet, formatting, generated-code freshness, unit + integration tests with -race, then e2e with the real binaries.
test: vet proto-check unit e2e bench-smoke

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 10m $$($(GO) list ./... | grep -v /e2e)

e2e:
	$(GO) test -race -count=1 -timeout 10m ./e2e/...

## h2spec: only the HTTP/2 conformance run (part of e2e): the pinned h2spec of e2e/tools/h2spec against the real kedge,
## failing on any case not in e2e/tools/h2spec/known-failures.txt. docs/reliability.md#h2spec.
h2spec:
	$(GO) test -count=1 -run '^TestH2spec$$' -v ./e2e/

## transfer: TestLargeTransfers with 1 GiB each way over HTTP/1.1, HTTP/2 and CONNECT (make test moves 256 MiB), kedge's
## peak RSS growing < 32 MiB. About 30 s on 2 cores. docs/reliability.md#large-transfers.
transfer:
	KEDGE_E2E_TRANSFER_BYTES=1073741824 $(GO) test -count=1 -timeout 10m -run '^TestLargeTransfers$$' -v ./e2e/

## bench: one report of direct vs plain ReverseProxy+TLS vs kedge vs nginx vs winch->kedge on h1, h2, gRPC
## unary/streaming (nginx grpc_pass) and CONNECT, with ratios and proxy CPU per request; open-loop latency at half
## of kedge's rate; memory per idle TLS connection (10,000); issue 10's targets with HOLDS/MISS. Medians of COUNT
## runs (make bench COUNT=3). scripts/bench.sh; ~3 min per run on 2 cores.
bench:
	GO=$(GO) scripts/bench.sh

## fuzz: every fuzz target for FUZZTIME each (default 1m; FUZZ=<regexp> picks targets); make test runs their seeds.
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZ=$(FUZZ) scripts/fuzz.sh

## bench-micro: the packages' own micro-benchmarks (routing, auth cache, proxy hot path).
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...

## bench-smoke: every benchmark once (-benchtime 1x; 100 idle connections), so they cannot rot (part of make test).
bench-smoke:
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./e2e/ ./pkg/...

## proto: regenerate the Go code for proto/ with the pinned pure-Go compiler (no protoc needed).
proto:
	cd proto/gen && $(GO) run . -root .. -module $(PKG)/proto $(PROTOS)

## proto-check: fail when the committed generated code is stale.
proto-check:
	@tmp=$$(mktemp -d) && cp -r proto/. $$tmp/ && \
	(cd $$tmp/gen && $(GO) run . -root .. -module $(PKG)/proto $(PROTOS)) && \
	for f in $$(cd proto && git ls-files '*.pb.go'); do \
	  cmp -s proto/$$f $$tmp/$$f || { echo "proto/$$f is stale: run make proto"; rm -rf $$tmp; exit 1; }; \
	done; rm -rf $$tmp; echo "generated code is up to date"

## demo: kedge, winch and a demo backend on loopback; prints real commands and their output, then runs until Ctrl-C.
demo: build
	$(GO) run ./e2e/demo --bin $(BIN) --examples docs/examples

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
