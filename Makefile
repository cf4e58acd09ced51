# Everything CI runs is `make test`; .ci/run calls exactly that.
GO        ?= go
# The Go that builds and tests everything: go.mod's go line (go1.27.3: go1.26.8's standard library has 13 called
# vulnerabilities, docs/reliability.md#govulncheck). The go command fetches it from the module proxy once; a machine
# whose Go is older and whose GOTOOLCHAIN is `local` would otherwise refuse to build. Override to test another Go.
GOTOOLCHAIN ?= go$(shell sed -n 's/^go //p' go.mod)
export GOTOOLCHAIN
BIN       := bin
PKG       := github.com/kedge-proxy/kedge
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X $(PKG)/pkg/shared/buildinfo.Version=$(VERSION)
FUZZTIME  ?= 1m
FUZZ      ?= .
KUBEENV   := GOWORK=off $(GO) -C e2e/kubeenv
PROTOS    := kedgeconfig/director.proto kedgeconfig/backendpool.proto winchconfig/mapper.proto winchconfig/auth.proto

.PHONY: kube-warm kube-env e2e-kube kube-if-cached transfer fuzz all build test vet unit e2e h2spec bench bench-micro bench-smoke proto proto-check demo fmt clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/kedge ./cmd/kedge
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/winch ./cmd/winch

## image: kedge's container image without a Docker engine (scripts/imagebuild): kedge and winch built static
## (CGO_ENABLED=0, -trimpath, LDFLAGS), users and groups for nonroot (65532) and the build machine's CA bundle, written
## as $(IMAGE_TAR) for `docker load -i`, `crane push` or skopeo's docker-archive:. Same inputs, same digest (file and
## image times are the commit's, or SOURCE_DATE_EPOCH). The Dockerfile builds the same image with an engine.
## docs/kubernetes.md#container-image.
IMAGE     ?= ghcr.io/kedge-proxy/kedge:$(VERSION)
IMAGE_TAR ?= $(BIN)/kedge-image.tar
.PHONY: image
image:
	$(GO) run ./scripts/imagebuild -go $(GO) -ldflags '$(LDFLAGS)' -image $(IMAGE) -version $(VERSION) -out $(IMAGE_TAR) \
	  -revision "$$(git rev-parse HEAD 2>/dev/null)" \
	  -created "$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

## test: vet, formatting, generated-code freshness, unit + integration tests with -race, then e2e with the real binaries,
## then e2e-kube when etcd and kube-apiserver are cached (.ci/run runs make kube-warm first; under CI a cold cache fails).
test: vet proto-check unit e2e bench-smoke kube-if-cached

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 10m $$($(GO) list ./... | grep -v /e2e)

e2e:
	$(GO) test -race -count=1 -timeout 10m ./e2e/...

## kube-warm: build etcd and kube-apiserver (versions pinned in e2e/kubeenv/build/*/go.mod) from the module proxy into
## ${XDG_CACHE_HOME:-~/.cache}/kedge/kube, once per version: kube-apiserver takes 8-27 minutes cold and ~3 GB in the linker.
kube-warm:
	$(KUBEENV) run ./cmd/kube-env -warm

## kube-env: a real etcd and kube-apiserver on loopback; prints the kubeconfig's path and runs until Ctrl-C.
kube-env: kube-warm
	$(KUBEENV) build -o $(CURDIR)/$(BIN)/kube-env ./cmd/kube-env
	$(BIN)/kube-env

## e2e-kube: kedge and winch against the real API server (~4 min): kubectl through winch and kedge, docs/deploy and its
## RBAC, discovery, a 30 s outage of each, 1,000 Services. docs/kubernetes.md#tests-against-a-real-api-server.
e2e-kube: kube-warm
	$(GO) vet -tags kube ./e2e/
	cd e2e/kubeenv && GOWORK=off $(GO) vet ./... && GOWORK=off $(GO) test -count=1 ./...
	$(GO) test -race -tags kube -count=1 -timeout 15m -run '^TestKube' ./e2e/

kube-if-cached:
	@if $(KUBEENV) run ./cmd/kube-env -cached; then $(MAKE) --no-print-directory e2e-kube; \
	elif [ -n "$$CI" ]; then echo "CI: etcd and kube-apiserver are not cached (.ci/run runs make kube-warm)"; exit 1; \
	else echo "e2e-kube not run: run make kube-warm once (or make e2e-kube)"; fi

## h2spec: only the HTTP/2 conformance run (part of e2e): the pinned h2spec of e2e/tools/h2spec against the real kedge,
## failing on any case not in e2e/tools/h2spec/known-failures.txt. docs/reliability.md#h2spec.
h2spec:
	$(GO) test -count=1 -run '^TestH2spec$$' -v ./e2e/

## vuln: the pinned govulncheck (e2e/tools/vulndb/go.mod) on ./... against a local database built once from
## golang.org/x/vulndb@$(VULNDB_VERSION) into $${XDG_CACHE_HOME:-~/.cache}/kedge/vulndb; fails on a called vulnerability
## not in e2e/tools/vulndb/known-findings.txt; prints the snapshot's date. Part of make test (~1.5 min; the first run
## also builds govulncheck). VULNDB_VERSION is the pinned snapshot; bump it as docs/reliability.md#govulncheck says.
VULNDB_VERSION := v0.0.0-20261105234957-e22db6528018
.PHONY: vuln soak
test: vuln
vuln:
	GOWORK=off $(GO) -C e2e/tools/vulndb test -count=1 ./...
	GO=$(GO) VULNDB_VERSION=$(VULNDB_VERSION) e2e/tools/vulndb/vulncheck.sh

## soak: TestSoak for SOAK_DURATION (default 10m; make test runs it for 60 s with -race): HTTP/1.1, h2, gRPC unary and
## streaming and CONNECT through winch and kedge, with config reloads and backend restarts; no request lost, kedge's
## goroutines, fds and RSS bounded after warm-up. Binaries without -race. docs/reliability.md#soak.
SOAK_DURATION ?= 10m
SOAK_TIMEOUT  ?= 30m
soak:
	KEDGE_SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -timeout $(SOAK_TIMEOUT) -run '^TestSoak$$' -v ./e2e/

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
## Taken default ports are replaced by free ones; DEMO_FLAGS=--base_port=9000 moves all eight. Built, not `go run`:
## go run exits 1 on Ctrl-C even when the demo stops cleanly and exits 0.
demo: build
	$(GO) build -o $(BIN)/kedge-demo ./e2e/demo
	$(BIN)/kedge-demo --bin $(BIN) --examples docs/examples $(DEMO_FLAGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
