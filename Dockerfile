# syntax=docker/dockerfile:1

# lr-relay: a static Go binary on a distroless base (CA certificates, /etc/passwd with "nonroot", no shell).
#   docker build -t lr-relay .
#   docker run --rm lr-relay --help

FROM golang:1.26 AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly
# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/lr-relay ./cmd/lr-relay

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/lr-relay /lr-relay
# 65532 is distroless's "nonroot"; numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# Metrics, /-/healthy and /-/ready (LR_HTTP_ADDR).
EXPOSE 9090
ENTRYPOINT ["/lr-relay"]
CMD ["run"]
