#!/bin/sh
# Runs once, when the database is created: the read-only role Grafana logs
# in with. selfheal's migration 0004 grants it SELECT on selfheal's tables.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
	-v pw="$SELFHEAL_GRAFANA_DB_PASSWORD" <<'SQL'
CREATE ROLE selfheal_grafana LOGIN PASSWORD :'pw';
SQL
