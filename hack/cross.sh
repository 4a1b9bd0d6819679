#!/usr/bin/env bash
# make cross: build and vet the shipped code for macOS and Windows (amd64 and
# arm64), so `make run` works there. The shipped code is every package but the
# test harness (internal/testenv/..., test/...), which starts Linux servers
# and is Linux-only. go vet checks a package together with its tests, and most
# packages' tests import that harness, so on these platforms each package is
# vetted from its non-test files (listed for the target platform, which
# applies its build tags); make lint vets everything, tests too, on Linux.
set -euo pipefail
GO=${GO:-go}
pkgs=$($GO list ./... | grep -v -e '/internal/testenv' -e '/test/')
for os in darwin windows; do
	for arch in amd64 arm64; do
		echo "cross: $os/$arch"
		export GOOS=$os GOARCH=$arch
		$GO build $pkgs
		for p in $pkgs; do
			# shellcheck disable=SC2046 # one argument per file
			$GO vet $($GO list -f '{{range .GoFiles}}{{$.Dir}}/{{.}} {{end}}' "$p")
		done
	done
done
