#!/usr/bin/env bash
# `make run`: the whole loop on one machine, in the foreground. A
# throw-away PostgreSQL under .run/, `selfheal serve` with
# deploy/local/selfheal.yml, Prometheus (1 s intervals, the repo's rules),
# Alertmanager (routing to selfheal) and a demo container, selfheal-demo,
# to heal. Ctrl-C stops everything this script started.
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
	docker rm -f selfheal-demo >/dev/null 2>&1 || true
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

./selfheal serve --config.file=deploy/local/selfheal.yml --web.listen-address=:9595 >"$RUN/selfheal.log" 2>&1 &
pids+=($!)

mkdir -p "$RUN/prometheus" "$RUN/alertmanager"
prometheus --config.file=deploy/local/prometheus.yml --storage.tsdb.path="$RUN/prometheus" \
	--web.listen-address=:9090 >"$RUN/prometheus.log" 2>&1 &
pids+=($!)
prometheus-alertmanager --config.file=deploy/local/alertmanager.yml --storage.path="$RUN/alertmanager" \
	--web.listen-address=:9093 --cluster.listen-address= >"$RUN/alertmanager.log" 2>&1 &
pids+=($!)

# The demo container: a static binary in a FROM scratch image (no registry
# is needed), opted in with the label.
mkdir -p "$RUN/demo"
CGO_ENABLED=0 go build -o "$RUN/demo/testctr" ./internal/dockertest/testctr
cp deploy/local/demo.Dockerfile "$RUN/demo/Dockerfile"
docker build -q -t selfheal-demo:latest "$RUN/demo" >/dev/null
docker rm -f selfheal-demo >/dev/null 2>&1 || true
docker run -d --name selfheal-demo --label selfheal.demo=make-run selfheal-demo:latest >/dev/null

wait_up() { for _ in $(seq 1 100); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "$2 did not start; see .run/$2.log" >&2; return 1; }
wait_up http://localhost:9595/-/ready selfheal
wait_up http://localhost:9090/-/ready prometheus
wait_up http://localhost:9093/-/ready alertmanager

cat <<MSG

The whole loop is running (logs in .run/*.log):
  selfheal      http://localhost:9595/metrics      webhook /api/v1/webhook (token in .run/token)
  Prometheus    http://localhost:9090/alerts       1 s scrape and evaluation, rules from alerting/rules
  Alertmanager  http://localhost:9093              routes category A-D alerts to selfheal
  PostgreSQL    $SELFHEAL_DATABASE_URL
  demo          container selfheal-demo (label selfheal.demo=make-run: nothing else is touched)

Try, in another shell:
  docker kill selfheal-demo                          # two to three seconds later it runs again
      (the first kill restarts it, the second stops and starts it, the third in ten
       minutes escalates to critical recovery; a fourth is held back for a person:
       the status page at http://localhost:9595/ says so, and
       ./selfheal clear selfheal-demo lets selfheal heal it again)
  docker ps --filter name=selfheal-demo
  SELFHEAL_DATABASE_URL='$SELFHEAL_DATABASE_URL' ./selfheal events
  SELFHEAL_WEBHOOK_TOKEN=\$(cat .run/token) ./selfheal simulate ServiceDown service=selfheal-demo

Ctrl-C stops everything.
MSG
# Run until Ctrl-C, or until one of the components dies.
wait -n "${pids[@]}" || true
echo "a component stopped; see .run/*.log" >&2
