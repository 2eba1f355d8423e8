#!/usr/bin/env bash
# Installs Docker Compose v2 as the docker CLI's plugin (`docker compose`)
# where it is missing. Debian's docker-compose is 1.29, which cannot read
# the examples (depends_on's restart, name:), and no download site is
# reachable here: it is built from its source on the Go module proxy, as
# its own main module (its go.mod's exclude directives rule out
# `go install pkg@version`). A few minutes the first time; Go's build cache
# makes it quick after that.
set -euo pipefail

version=${COMPOSE_VERSION:-v2.40.3}
plugins=${DOCKER_CLI_PLUGINS:-/usr/local/lib/docker/cli-plugins}

if docker compose version >/dev/null 2>&1; then
	exit 0
fi
echo "building Docker Compose $version from the Go module proxy (a few minutes the first time)"
dir=$(go mod download -json "github.com/docker/compose/v2@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -n "$dir" ] || { echo "cannot download github.com/docker/compose/v2@$version" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
mkdir -p "$plugins"
(cd "$work/src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$version" \
	-o "$plugins/docker-compose" ./cmd)
docker compose version
