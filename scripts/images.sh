#!/usr/bin/env bash
# Builds selfheal's image from the repository's Dockerfile where no image
# registry is reachable: its two base images are made here first, and
# passed to it as build arguments (the Dockerfile itself is unchanged).
#
#   selfheal-local/debian:SUITE  a minimal Debian made from Debian's packages
#                                (debootstrap, then docker import)
#   selfheal-local/golang:GO     that Debian with gcc and this machine's Go
#                                toolchain and trust store
#   selfheal:local               the Dockerfile, built FROM those two
#
#   scripts/images.sh [--rebuild]            the three above
#   scripts/images.sh [--rebuild] standins   the base images, and stand-ins
#                                            for the compose stack's public
#                                            images (make test-deploy)
#
# Base images already built are kept; --rebuild makes them again. Needs
# root (debootstrap) and the Docker daemon.
set -euo pipefail
cd "$(dirname "$0")/.."

rebuild=false
[ "${1:-}" = --rebuild ] && { rebuild=true; shift; }
what=${1:-selfheal}
case $what in selfheal | standins) ;; *) echo "usage: $0 [--rebuild] [selfheal|standins]" >&2; exit 2 ;; esac
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
goroot=$(go env GOROOT)
gover=$(go env GOVERSION)
base=selfheal-local/debian:$suite
golang=selfheal-local/golang:${gover#go}

have() { ! $rebuild && docker image inspect "$1" >/dev/null 2>&1; }

work=$(mktemp -d /var/tmp/selfheal-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

if ! have "$base"; then
	command -v debootstrap >/dev/null || { echo "installing debootstrap"; apt-get install -y -qq debootstrap >/dev/null; }
	echo "building $base with debootstrap from $mirror (a few minutes)"
	debootstrap --variant=minbase "$suite" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -20 "$work/debootstrap.log" >&2; exit 1; }
	tar -C "$work/root" -c . | docker import - "$base" >/dev/null
	rm -rf "$work/root"
fi

if ! have "$golang"; then
	echo "building $golang from $goroot"
	mkdir -p "$work/golang"
	cp -a "$goroot" "$work/golang/go"
	# This machine's trust store: whatever stands between it and the Go
	# module proxy is trusted inside the build as it is here.
	cp /etc/ssl/certs/ca-certificates.crt "$work/golang/ca-certificates.crt"
	cat >"$work/golang/Dockerfile" <<EOF
FROM $base
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates && rm -rf /var/lib/apt/lists/*
COPY go /usr/local/go
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/go/bin:/root/go/bin:\$PATH GOPATH=/root/go
EOF
	docker build -q -t "$golang" "$work/golang" >/dev/null
fi

if [ "$what" = standins ]; then
	# deploy/compose/standins/docker-compose.standins.yml names these.
	dir=deploy/compose/standins
	echo "building the compose files' stand-ins (postgres, prometheus, alertmanager, nginx from Debian's packages; alpine: the Debian base; socket-proxy from $dir/socket-proxy)"
	CGO_ENABLED=0 go build -trimpath -o "$dir/socket-proxy/socket-proxy" ./$dir/socket-proxy
	for img in postgres:15 prometheus:v2.53.0 alertmanager:v0.27.0 socket-proxy:1 alpine:3.20 nginx:1.27-alpine; do
		docker build -q --build-arg BASE_IMAGE="$base" -f "$dir/${img%%:*}.Dockerfile" -t "selfheal-standin/$img" "$dir" >/dev/null
	done
	# For the override's build arguments of selfheal's own image; built
	# here once, so that the compose stack's `up --build` finds it in
	# Docker's build cache.
	printf 'SELFHEAL_GO_IMAGE=%s\nSELFHEAL_BASE_IMAGE=%s\n' "$golang" "$base" >"$dir/images.env"
	echo "building selfheal:latest from the Dockerfile (GO_IMAGE=$golang, BASE_IMAGE=$base)"
	docker build -q --build-arg GO_IMAGE="$golang" --build-arg BASE_IMAGE="$base" -t selfheal:latest . >/dev/null
	exit 0
fi

echo "building selfheal:local from the Dockerfile (GO_IMAGE=$golang, BASE_IMAGE=$base)"
docker build -q --build-arg GO_IMAGE="$golang" --build-arg BASE_IMAGE="$base" -t selfheal:local . >/dev/null
docker run --rm selfheal:local --version | head -1
