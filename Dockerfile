# syntax=docker/dockerfile:1

# lr-relay: a static Go binary on a distroless base (CA certificates, /etc/passwd with "nonroot", no shell).
#   docker build -t lr-relay \
#     --build-arg VERSION="$(git describe --tags --always --dirty)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#   docker run --rm lr-relay version
#
# Base images are pinned by the digest of their multi-platform index, so a rebuild of the same commit uses the
# same bases (a tag moves with every rebuild upstream). The tag stays in front for readers and for Renovate.
# Where these digests came from (there was no registry access where this file was written):
#   golang:1.26.8   sha256:3c3e25a4... : the golang:1.26 index digest after Go 1.26.8, from Renovate PR
#                   github.com/vtmocanu/uzi/pull/1435 (2026-09-18), and pinned the same in several public
#                   Dockerfiles (some as golang:1.26.8@...).
#   static-debian12:nonroot sha256:afa5c872... : recorded in a public Dockerfile as
#                   gcr.io/distroless/static-debian12:nonroot "as of 2026-08-26", and pinned the same in
#                   about ten other public Dockerfiles.
# To refresh, and to verify before the first release, on a machine with registry access:
#   docker buildx imagetools inspect golang:1.26                              # first "Digest:" line
#   docker buildx imagetools inspect gcr.io/distroless/static-debian12:nonroot
# and replace the digests below (keep go.mod's go line and the golang tag on the same Go release).

FROM golang:1.26.8@sha256:3c3e25a4da13fd0478eed2df1eb35a0e667094a7124d3993a6a1d30f71c17e79 AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly GOTOOLCHAIN=local
# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
# The version reaches `lr-relay version`, the User-Agent of every Defender API call and lr_build_info, all
# through the one variable internal/app.Version (deploy/deploy_test.go checks this path).
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath \
      -ldflags="-s -w -X github.com/lr-relay/lr-relay/internal/app.Version=${VERSION}" \
      -o /out/lr-relay ./cmd/lr-relay

FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
# OCI image annotations (https://specs.opencontainers.org/image-spec/annotations/).
LABEL org.opencontainers.image.title="lr-relay" \
      org.opencontainers.image.description="Relays Microsoft Defender for Endpoint live response results from NATS JetStream, one event per command" \
      org.opencontainers.image.source="https://github.com/lr-relay/lr-relay" \
      org.opencontainers.image.url="https://github.com/lr-relay/lr-relay" \
      org.opencontainers.image.documentation="https://github.com/lr-relay/lr-relay#readme" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot" \
      org.opencontainers.image.base.digest="sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab"
COPY --from=build /out/lr-relay /lr-relay
# 65532 is distroless's "nonroot"; numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# Metrics, /-/healthy and /-/ready (LR_HTTP_ADDR).
EXPOSE 9090
ENTRYPOINT ["/lr-relay"]
CMD ["run"]
