# syntax=docker/dockerfile:1.12
# leasecron container image. Build it with `make image`, which stamps the version and commit
# from git:
#
#   DOCKER_BUILDKIT=1 docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#                                  --build-arg COMMIT=$(git rev-parse --short HEAD) -t leasecron .
#
# The build cannot read git itself: .dockerignore keeps .git (and everything `go build` does not
# need) out of the build context, so without the build args the image says version "dev".
#
# The build stage runs on the builder's own platform and cross-compiles (pure Go, CGO off) for the
# target platform, so `docker buildx build --platform linux/amd64,linux/arm64` needs no emulation.
#
# Base images are pinned by tag here, never by a digest nobody checked: a release pins them by
# digest on a machine that reaches the registry (README, "Release"). The Go image's version
# matches go.mod's go line; test/release checks that, and every other rule this file keeps.

FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
WORKDIR /src

# Dependencies first: this layer is rebuilt only when go.mod or go.sum change. The module cache
# and the build cache are BuildKit cache mounts: they persist between builds on one builder
# (and stay out of the image), so a source change recompiles only the packages it touches.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download

COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
# The same flags as `make build` (the Makefile's LDFLAGS).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
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
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=build /out/leasecron /leasecron
# The licence the binary is under, where image scanners look for it.
COPY LICENSE /licenses/LICENSE
USER 65532:65532
# /healthz, /readyz, /metrics
EXPOSE 8080
ENTRYPOINT ["/leasecron"]
CMD ["run"]
