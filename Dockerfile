# leasecron container image.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#                --build-arg COMMIT=$(git rev-parse HEAD) -t leasecron .
#
# The build stage runs on the builder's own platform and cross-compiles (pure Go, CGO off) for the
# target platform, so `docker buildx build --platform linux/amd64,linux/arm64` needs no emulation.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src

# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath \
      -ldflags "-s -w -X github.com/leasecron/leasecron/internal/version.Version=${VERSION} -X github.com/leasecron/leasecron/internal/version.Commit=${COMMIT}" \
      -o /out/leasecron ./cmd/controller

# distroless static: no shell, no package manager; ships CA certificates and the tz database
# (/usr/share/zoneinfo) that --timezone needs. The :nonroot tag runs as 65532.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="leasecron" \
      org.opencontainers.image.description="Leader-elected cron controller: each scheduled slot runs exactly once across replicas" \
      org.opencontainers.image.source="https://github.com/leasecron/leasecron" \
      org.opencontainers.image.url="https://github.com/leasecron/leasecron" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/leasecron /leasecron
USER 65532:65532
# /healthz, /readyz, /metrics
EXPOSE 8080
ENTRYPOINT ["/leasecron"]
CMD ["run"]
