#!/usr/bin/env bash
# Builds the test-only Kubernetes toolchain from source via the Go module proxy:
#   etcd, kube-apiserver, kube-controller-manager, kubectl, helm
# and, only when asked for by name, controller-gen (make generate) and promtool
# (the alert-rule tests, test/alerts; make tools-alerts) into ${LEASECRON_TOOLS_DIR:-<repo>/.cache/tools/bin} (git-ignored).
#
# Each tool comes from its own module under hack/tools/<dir>/ (go.mod + go.sum are
# committed, so builds are reproducible and the dependency graphs of etcd, kubernetes
# and helm never fight each other). The builds run with -mod=readonly: changing a
# version means editing the pin below AND updating that module (go get / go mod tidy).
#
# Idempotent: next to every binary a <name>.version stamp records the pinned
# version, the Go version, the ldflags and a hash of the module's go.mod/go.sum.
# A tool whose binary exists and whose stamp matches is skipped, so a warm run
# takes well under a second. Concurrent runs serialise on a lock file.
#
# Usage: hack/tools/build.sh [tool...]      (default: all tools but controller-gen and promtool)
#        FORCE=1 hack/tools/build.sh        (rebuild even when stamps match)
#
# Cold build on a 2-core machine (empty GOCACHE, warm module cache): ~10 minutes for
# everything (etcd ~55s, kube-apiserver ~5 min, kube-controller-manager ~2 min,
# kubectl ~30s, helm ~1 min); warm: < 1 s.
set -euo pipefail

# ---- pinned versions (must match hack/tools/*/go.mod) ------------------------
KUBE_VERSION=v1.37.2 # k8s.io/kubernetes (staging modules replaced with v0.37.2)
ETCD_VERSION=v3.6.16 # go.etcd.io/etcd/server/v3
HELM_VERSION=v3.22.0 # helm.sh/helm/v3
HELM_K8S_MAJOR=1     # k8s.io/client-go minor that helm v3.22.0 is built against (v0.37.x)
HELM_K8S_MINOR=37
CONTROLLER_TOOLS_VERSION=v0.23.0 # sigs.k8s.io/controller-tools: controller-gen, for make generate
PROMETHEUS_VERSION=v0.316.0 # github.com/prometheus/prometheus module; promtool, for test/alerts
PROMTOOL_RELEASE=3.16.0     # the Prometheus release that module version is (its VERSION file)
ALL_TOOLS=(etcd kube-apiserver kube-controller-manager kubectl helm)
# -----------------------------------------------------------------------------

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/../.." && pwd)"
BIN_DIR="${LEASECRON_TOOLS_DIR:-${REPO_ROOT}/.cache/tools/bin}"
mkdir -p "${BIN_DIR}"
BIN_DIR="$(cd "${BIN_DIR}" && pwd)"

# The tool modules are standalone: never let a go.work or a caller's -mod flag
# pull them into another build list.
export GOWORK=off CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

kube_ldflags() {
	local major minor v
	v="${KUBE_VERSION#v}"
	major="${v%%.*}"
	minor="${v#*.}"
	minor="${minor%%.*}"
	local -a kv=(
		"gitVersion=${KUBE_VERSION}"
		"gitMajor=${major}"
		"gitMinor=${minor}"
		"gitCommit=0000000000000000000000000000000000000000"
		"gitTreeState=clean"
		"buildDate=1970-01-01T00:00:00Z"
	)
	local out="-s -w" pair
	for pair in "${kv[@]}"; do
		out+=" -X k8s.io/component-base/version.${pair} -X k8s.io/client-go/pkg/version.${pair}"
	done
	printf '%s' "${out}"
}

# tool_spec NAME -> sets MODDIR PKG VERSION LDFLAGS
tool_spec() {
	case "$1" in
	etcd)
		MODDIR=etcd PKG=go.etcd.io/etcd/server/v3 VERSION=${ETCD_VERSION}
		LDFLAGS="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}"
		;;
	kube-apiserver | kube-controller-manager | kubectl)
		MODDIR=kube PKG="k8s.io/kubernetes/cmd/$1" VERSION=${KUBE_VERSION}
		LDFLAGS="$(kube_ldflags)"
		;;
	helm)
		MODDIR=helm PKG=helm.sh/helm/v3/cmd/helm VERSION=${HELM_VERSION}
		LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
		LDFLAGS+=" -X helm.sh/helm/v3/internal/version.metadata="
		LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
		local p
		for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
			LDFLAGS+=" -X ${p}.k8sVersionMajor=${HELM_K8S_MAJOR} -X ${p}.k8sVersionMinor=${HELM_K8S_MINOR}"
		done
		;;
	controller-gen)
		MODDIR=controller-gen PKG=sigs.k8s.io/controller-tools/cmd/controller-gen VERSION=${CONTROLLER_TOOLS_VERSION}
		LDFLAGS="-s -w"
		;;
	promtool)
		MODDIR=promtool PKG=github.com/prometheus/prometheus/cmd/promtool VERSION=${PROMETHEUS_VERSION}
		LDFLAGS="-s -w -X github.com/prometheus/common/version.Version=${PROMTOOL_RELEASE}"
		;;
	*)
		echo "build.sh: unknown tool '$1' (known: ${ALL_TOOLS[*]} controller-gen promtool)" >&2
		exit 2
		;;
	esac
}

stamp_for() { # NAME: the content of the .version stamp that a fresh build would write
	local sum
	sum="$(cat "${SCRIPT_DIR}/${MODDIR}/go.mod" "${SCRIPT_DIR}/${MODDIR}/go.sum" | sha256sum | cut -c1-16)"
	printf '%s %s %s %s ldflags=%s mod=%s\n' "$1" "${PKG}" "${VERSION}" "$(go env GOVERSION)" \
		"$(printf '%s' "${LDFLAGS}" | sha256sum | cut -c1-16)" "${sum}"
}

build_one() {
	local name="$1" start stamp out rc=0
	tool_spec "${name}"
	if ! grep -qE "(^|[[:space:]])${PKG%%/cmd/*}[[:space:]]+${VERSION}([[:space:]]|$)" "${SCRIPT_DIR}/${MODDIR}/go.mod"; then
		# etcd's main package is the module root; kube/helm commands live under /cmd/.
		echo "build.sh: ${SCRIPT_DIR}/${MODDIR}/go.mod does not require ${PKG%%/cmd/*} ${VERSION}" >&2
		exit 1
	fi
	start=${SECONDS}
	stamp="$(stamp_for "${name}")"
	out="${BIN_DIR}/${name}"
	if [[ -z "${FORCE:-}" && -x "${out}" && -f "${out}.version" ]] && [[ "$(cat "${out}.version")" == "${stamp}" ]]; then
		printf '%-24s cached  %s  %3ds\n' "${name}" "${VERSION}" $((SECONDS - start))
		return 0
	fi
	rm -f "${out}.version"
	(cd "${SCRIPT_DIR}/${MODDIR}" && go build -trimpath -ldflags "${LDFLAGS}" -o "${out}.tmp.$$" "${PKG}") || rc=$?
	if [[ ${rc} -ne 0 ]]; then
		rm -f "${out}.tmp.$$"
		printf '%-24s FAILED  %s  %3ds\n' "${name}" "${VERSION}" $((SECONDS - start)) >&2
		return "${rc}"
	fi
	mv -f "${out}.tmp.$$" "${out}"
	printf '%s\n' "${stamp}" >"${out}.version"
	printf '%-24s built   %s  %3ds\n' "${name}" "${VERSION}" $((SECONDS - start))
}

main() {
	local tools=("$@") t
	[[ ${#tools[@]} -gt 0 ]] || tools=("${ALL_TOOLS[@]}")
	for t in "${tools[@]}"; do tool_spec "${t}"; done # validate names up front

	# Serialise concurrent invocations (e.g. parallel test packages or two shells).
	exec 9>"${BIN_DIR}/.build.lock"
	if command -v flock >/dev/null 2>&1; then
		flock 9
	fi

	local total_start=${SECONDS}
	for t in "${tools[@]}"; do
		build_one "${t}"
	done
	printf '%-24s %ds -> %s\n' "total" $((SECONDS - total_start)) "${BIN_DIR}"
}

main "$@"
