# kedge's container image: kedge and winch, static, on distroless, as user nonroot (65532).
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t ghcr.io/kedge-proxy/kedge:dev .
# `make image` builds the same image without a Docker engine (scripts/imagebuild); the test in scripts/imagebuild
# keeps this file's USER, ENTRYPOINT, EXPOSE, binaries, labels and Go version the same as that tool's and go.mod's.
# Both bases are pinned by tag. To pin by digest, as a release should, append the digest the registry reports,
# e.g. `crane digest gcr.io/distroless/static-debian12:nonroot`, as in
#   FROM gcr.io/distroless/static-debian12:nonroot@sha256:<digest>
# (a tag with a digest pulls the digest; the tag stays for readers). docs/kubernetes.md#container-image.

FROM golang:1.27.3-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY pkg/ pkg/
COPY proto/ proto/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-X github.com/kedge-proxy/kedge/pkg/shared/buildinfo.Version=${VERSION}" \
      -o /out/ ./cmd/kedge ./cmd/winch

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=
LABEL org.opencontainers.image.title="kedge" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/kedge-proxy/kedge" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/kedge /usr/local/bin/kedge
COPY --from=build /out/winch /usr/local/bin/winch
USER 65532:65532
# kedge's debug (/readyz, /metrics), HTTPS and gRPC-over-TLS ports: its flags' defaults.
EXPOSE 8080 8443 8444
ENTRYPOINT ["/usr/local/bin/kedge"]
