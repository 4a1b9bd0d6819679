// Package release tests what a release ships, without a registry or a
// Docker engine (neither is reachable here):
//
//   - TestMakeRelease runs `make release` into a temp DIST and checks what
//     it wrote: SHA256SUMS lists exactly the two binaries, the chart and
//     the LICENSE, in
//     the format `sha256sum -c` verifies, each with its real hash; the
//     binaries are static, stripped ELF files for x86-64 and AArch64, the
//     host's one prints the stamped version and commit; the chart archive's
//     Chart.yaml carries Chart.yaml's version (or CHART_VERSION) and the
//     release's version as appVersion. hack/release.sh's bad input is one
//     line, exit 2, nothing written.
//   - TestDockerfile and TestDockerignore check the rules the image build
//     keeps, read from the files themselves: a pinned `# syntax` line first;
//     every base image at an explicit tag, never `latest` and never a
//     digest (none could be verified here; a release pins digests, see the
//     README's Release section); the Go image at go.mod's Go version; the
//     module download layer keyed on go.mod and go.sum alone; BuildKit cache
//     mounts for the module and build caches; the link flags of `make
//     build`, with the version and commit from build args. The
//     .dockerignore, evaluated with Docker's matching rules, sends exactly
//     the files `go build ./cmd/controller` reads (per `go list -deps`):
//     no tests, testdata, .git, .cache, bin, dist or test/.
//
// It needs Go, make, sha256sum and the helm of hack/tools/build.sh (make
// tools). A warm run takes a few seconds plus two links of the binary.
package release
