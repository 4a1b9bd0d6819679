#!/usr/bin/env bash
# Builds a release into ${DIST:-dist}/ (run it as `make release`, which passes the
# version, commit and link flags `make build` uses):
#
#   leasecron_<version>_linux_amd64   static binaries (CGO off, -trimpath, stripped,
#   leasecron_<version>_linux_arm64   version and commit stamped), plain files, mode 0755
#   leasecron-<chart version>.tgz     the Helm chart; its version is Chart.yaml's unless
#                                     CHART_VERSION is given, its appVersion is <version>
#   LICENSE                           the project's licence (Apache-2.0), as the binaries need it
#   SHA256SUMS                        sha256sum's format, for `cd dist && sha256sum -c SHA256SUMS`
#
# It needs Go and helm (HELM, default ${LEASECRON_TOOLS_DIR:-.cache/tools/bin}/helm, built by
# `make tools`), nothing from a registry. Only the files above are written: other files in DIST
# stay, and SHA256SUMS lists exactly this run's files (it is removed first, so a failed run
# leaves no stale list). Bad input (a version that cannot be a file name, no helm, no LDFLAGS)
# is one line on stderr and exit 2, before anything is written.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"

GO="${GO:-go}"
DIST="${DIST:-dist}"
HELM="${HELM:-${LEASECRON_TOOLS_DIR:-${ROOT}/.cache/tools/bin}/helm}"
VERSION="${VERSION:-}"
COMMIT="${COMMIT:-}"
LDFLAGS="${LDFLAGS:-}"
CHART_VERSION="${CHART_VERSION:-}"
PLATFORMS=(linux/amd64 linux/arm64)

fail() {
	echo "release: $*" >&2
	exit 2
}

# The file names carry the version, so it must be a plain name (git describe's output is).
name_re='^[A-Za-z0-9][A-Za-z0-9._+-]*$'
[[ -n "${LDFLAGS}" ]] || fail "LDFLAGS is empty: run 'make release' (it passes the link flags of 'make build')"
[[ -n "${COMMIT}" ]] || fail "COMMIT is empty: run 'make release' or give COMMIT=<git commit>"
[[ "${VERSION}" =~ ${name_re} ]] ||
	fail "VERSION '${VERSION}' is not a usable version: give letters, digits and . _ + - only, e.g. VERSION=v1.2.3"
if [[ -n "${CHART_VERSION}" && ! "${CHART_VERSION}" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$ ]]; then
	fail "CHART_VERSION '${CHART_VERSION}' is not a semantic version (Helm requires one): give e.g. CHART_VERSION=0.3.0"
fi
[[ -x "${HELM}" ]] || fail "helm not found at ${HELM}: build it with 'make tools' (or give HELM=/path/to/helm)"

mkdir -p "${DIST}"
DIST="$(cd "${DIST}" && pwd)"
rm -f "${DIST}/SHA256SUMS"

files=()
for platform in "${PLATFORMS[@]}"; do
	os="${platform%/*}"
	arch="${platform#*/}"
	out="leasecron_${VERSION}_${os}_${arch}"
	echo "release: building ${out}"
	CGO_ENABLED=0 GOOS="${os}" GOARCH="${arch}" "${GO}" build -trimpath -ldflags "${LDFLAGS}" \
		-o "${DIST}/${out}" ./cmd/controller
	files+=("${out}")
done

chart_args=(package charts/leasecron --destination "${DIST}" --app-version "${VERSION}")
[[ -z "${CHART_VERSION}" ]] || chart_args+=(--version "${CHART_VERSION}")
# helm prints "Successfully packaged chart and saved it to: <path>".
chart="$("${HELM}" "${chart_args[@]}")"
chart="${chart##*/}"
[[ "${chart}" == leasecron-*.tgz && -f "${DIST}/${chart}" ]] ||
	{ echo "release: helm package wrote no chart in ${DIST} (it said: ${chart})" >&2; exit 1; }
echo "release: packaged ${chart}"
files+=("${chart}")
cp LICENSE "${DIST}/LICENSE"
files+=(LICENSE)

(cd "${DIST}" && sha256sum -- "${files[@]}" >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
echo "release: wrote ${DIST}/SHA256SUMS (${#files[@]} files); verify with: cd ${DIST} && sha256sum -c SHA256SUMS"
