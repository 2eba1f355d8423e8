#!/usr/bin/env bash
# Installs and starts what selfheal's tests and local stack need:
# Debian packages (as root) and the Docker daemon. Safe to run repeatedly.
#
#   scripts/deps.sh          # PostgreSQL binaries, Docker, Prometheus, Alertmanager
#   scripts/deps.sh bench    # the same, and node_exporter to compare against
#
# Without root, it installs nothing and says what is missing.
set -euo pipefail

missing=()
need() { # need COMMAND PACKAGE
	command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}

have_postgres() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/postgres" ] && [ -x "$d/initdb" ] && return 0
	done
	command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ]
}

have_postgres || missing+=(postgresql)
need dockerd docker.io
need prometheus prometheus
need promtool prometheus
need prometheus-alertmanager prometheus-alertmanager
need amtool prometheus-alertmanager
need curl curl
need chromium chromium   # the status page's browser test
if [ "${1:-}" = bench ]; then
	need prometheus-node-exporter prometheus-node-exporter
fi

if [ ${#missing[@]} -gt 0 ]; then
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing Debian packages: ${missing[*]}" >&2
		echo "install them as root: apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# policy-rc.d keeps the packages from starting their own services.
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	rm -f /usr/sbin/policy-rc.d
fi

# The Docker daemon: start it in the background when it is not answering.
if ! docker info >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "the Docker daemon is not running and starting it needs root" >&2
		exit 1
	fi
	echo "starting dockerd (log: /var/log/selfheal-dockerd.log)"
	nohup dockerd >/var/log/selfheal-dockerd.log 2>&1 &
	for _ in $(seq 1 60); do
		docker info >/dev/null 2>&1 && break
		sleep 0.5
	done
	docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/selfheal-dockerd.log" >&2; exit 1; }
fi

# Docker Compose v2 (`docker compose`): the compose files need it.
"$(dirname "$0")/compose.sh"
