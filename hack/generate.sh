#!/usr/bin/env bash
# Generates from pkg/spec's API types (make generate):
#   charts/leasecron/crds/leasecron.io_scheduledjobs.yaml  the ScheduledJob CRD (Helm installs crds/)
#   pkg/spec/zz_generated.deepcopy.go                     DeepCopy, and runtime.Object for the roots
# with controller-gen (pinned in hack/tools/controller-gen, built by hack/tools/build.sh from the
# Go module proxy) and hack/crdgen (the zone list from Go's zone database, the schedule's rule).
#
# Usage: hack/generate.sh            write the files
#        hack/generate.sh --check    write nothing; exit 1 with one line if the checked-in files
#                                    are not what the types generate (make lint, so CI)
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"
check=false
case "${1:-}" in
--check) check=true ;;
"") ;;
*)
	echo "usage: hack/generate.sh [--check]" >&2
	exit 2
	;;
esac

crd=charts/leasecron/crds/leasecron.io_scheduledjobs.yaml
deepcopy=pkg/spec/zz_generated.deepcopy.go

# The build prints one line per tool (cached or built); only failures matter here.
if ! log="$(hack/tools/build.sh controller-gen 2>&1)"; then
	echo "${log}" >&2
	exit 1
fi
bin="${LEASECRON_TOOLS_DIR:-.cache/tools/bin}/controller-gen"

out="$(mktemp -d)"
trap 'rm -rf "${out}"' EXIT
"${bin}" object crd:generateEmbeddedObjectMeta=true paths=./pkg/spec \
	output:object:dir="${out}" output:crd:dir="${out}"
"${GO}" run ./hack/crdgen -zoneinfo "$("${GO}" env GOROOT)/lib/time/zoneinfo.zip" "${out}/$(basename "${crd}")"

if ${check}; then
	for f in "${crd}" "${deepcopy}"; do
		if ! cmp -s "${out}/$(basename "${f}")" "${f}"; then
			echo "${f} is not what pkg/spec/types.go generates: run make generate" >&2
			exit 1
		fi
	done
	exit 0
fi
mkdir -p "$(dirname "${crd}")"
cp "${out}/$(basename "${crd}")" "${crd}"
cp "${out}/$(basename "${deepcopy}")" "${deepcopy}"
