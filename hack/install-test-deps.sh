#!/usr/bin/env bash
# Installs the database servers the tests start on their own (internal/testenv):
# MariaDB (mariadbd, mariadb-install-db) and PostgreSQL (postgres, initdb), and
# the pg_cron extension for that PostgreSQL (postgresql-<major>-cron), which only
# `make bench` uses: it measures pg_cron side by side with leasecron. The tests
# do not need pg_cron, so failing to install it only warns.
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

# postgres_major prints the major version of the newest installed PostgreSQL
# server (the one internal/testenv runs), or nothing.
postgres_major() {
	local d best=""
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x "$d/postgres" ]] || continue
		d=${d%/bin}
		d=${d##*/}
		if [[ -z $best ]] || [[ $(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n1) == "$d" ]]; then
			best=$d
		fi
	done
	printf '%s' "$best"
}

packages=()
# my_print_defaults is used by mariadb-install-db.
if ! have mariadbd || ! have mariadb-install-db || ! have my_print_defaults; then
	packages+=(mariadb-server)
fi
if ! have_postgres; then
	packages+=(postgresql)
fi

# pg_cron for the PostgreSQL above; Debian 12's own PostgreSQL is 15.
major=$(postgres_major)
cron_package=""
if [[ -z $major ]]; then
	cron_package=postgresql-15-cron
elif [[ ! -e /usr/lib/postgresql/$major/lib/pg_cron.so ]]; then
	cron_package=postgresql-$major-cron
fi

if ((${#packages[@]} == 0)) && [[ -z $cron_package ]]; then
	echo "install-test-deps: MariaDB, PostgreSQL and pg_cron are already installed"
	exit 0
fi

if ((EUID != 0)); then
	if ((${#packages[@]} == 0)); then
		echo "install-test-deps: warning: $cron_package is not installed (needs root); make bench's pg_cron section will fail, the tests do not need it" >&2
		exit 0
	fi
	echo "install-test-deps: need root to install: ${packages[*]} $cron_package" >&2
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

export DEBIAN_FRONTEND=noninteractive
apt-get update
if ((${#packages[@]} > 0)); then
	echo "install-test-deps: installing ${packages[*]}"
	apt-get install -y --no-install-recommends "${packages[@]}"
fi
if [[ -n $cron_package ]]; then
	echo "install-test-deps: installing $cron_package"
	if ! apt-get install -y --no-install-recommends "$cron_package"; then
		echo "install-test-deps: warning: could not install $cron_package; make bench's pg_cron section will fail, the tests do not need it" >&2
	fi
fi
