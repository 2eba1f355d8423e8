#!/usr/bin/env bash
# `make run`: the local stack in the foreground. A throw-away PostgreSQL
# under .run/, and `selfheal serve` with deploy/local/selfheal.yml.
# Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

RUN="$PWD/.run"
PGPORT="${SELFHEAL_RUN_PGPORT:-15432}"
mkdir -p "$RUN"

pgbin=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/postgres" ] && pgbin="$d"; done
[ -n "$pgbin" ] || pgbin="$(pg_config --bindir)"

as_pg() { # initdb refuses root: run PostgreSQL as the postgres user then
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pids=()
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "stopping…"
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	as_pg "$pgbin/pg_ctl" -D "$RUN/pg" -m fast stop >/dev/null 2>&1 || true
	echo "stopped. State is kept in .run/ (make clean removes it)."
	exit 0
}
trap cleanup INT TERM EXIT

# PostgreSQL
if [ ! -f "$RUN/pg/PG_VERSION" ]; then
	mkdir -p "$RUN/pg"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$RUN" "$RUN/pg"
	as_pg "$pgbin/initdb" -D "$RUN/pg" -U postgres -A trust -E UTF8 >/dev/null
fi
[ "$(id -u)" -eq 0 ] && chown postgres: "$RUN"
as_pg "$pgbin/pg_ctl" -D "$RUN/pg" -l "$RUN/postgres.log" -w \
	-o "-p $PGPORT -k $RUN -c listen_addresses=127.0.0.1" start >/dev/null
as_pg "$pgbin/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qtAc \
	"SELECT 1 FROM pg_database WHERE datname = 'selfheal'" | grep -q 1 ||
	as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres selfheal
export SELFHEAL_DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/selfheal?sslmode=disable"

# The webhook token, made once.
[ -s "$RUN/token" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$RUN/token"
export SELFHEAL_WEBHOOK_TOKEN="$(cat "$RUN/token")"

./selfheal serve --config.file=deploy/local/selfheal.yml --web.listen-address=:9595 &
pids+=($!)

for _ in $(seq 1 50); do curl -fs http://localhost:9595/-/ready >/dev/null 2>&1 && break; sleep 0.2; done

cat <<MSG

selfheal is running.
  webhook   http://localhost:9595/api/v1/webhook   (token in .run/token)
  metrics   http://localhost:9595/metrics
  database  $SELFHEAL_DATABASE_URL

Try, in another shell:
  docker run -d --name demo --label selfheal.enable=true <image>; docker stop demo
  SELFHEAL_WEBHOOK_TOKEN=\$(cat .run/token) ./selfheal simulate ServiceDown service=demo
  SELFHEAL_DATABASE_URL='$SELFHEAL_DATABASE_URL' ./selfheal events

Ctrl-C stops everything.
MSG
wait "${pids[@]}"
