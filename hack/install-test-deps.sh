#!/usr/bin/env bash
# Installs the database servers the tests start on their own (internal/testenv):
# MariaDB (mariadbd, mariadb-install-db) and PostgreSQL (postgres, initdb).
#
# Idempotent: installs only what is missing. Meant for CI on Debian 12, as
# root; uses only the Debian package mirror. It never starts a service: the
# tests run their own throwaway servers on random ports.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/usr/bin/$1" ]]; }

have_postgres() {
	local d
	if have postgres && have initdb; then return 0; fi
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x "$d/postgres" && -x "$d/initdb" ]] && return 0
	done
	return 1
}

packages=()
# my_print_defaults is used by mariadb-install-db.
if ! have mariadbd || ! have mariadb-install-db || ! have my_print_defaults; then
	packages+=(mariadb-server)
fi
if ! have_postgres; then
	packages+=(postgresql)
fi

if ((${#packages[@]} == 0)); then
	echo "install-test-deps: MariaDB and PostgreSQL are already installed"
	exit 0
fi

if ((EUID != 0)); then
	echo "install-test-deps: need root to install: ${packages[*]}" >&2
	exit 1
fi

# Keep the packages' maintainer scripts from starting the services
# (invoke-rc.d and deb-systemd-invoke honour policy-rc.d exit code 101).
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi

echo "install-test-deps: installing ${packages[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends "${packages[@]}"
