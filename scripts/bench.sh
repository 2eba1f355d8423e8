#!/usr/bin/env bash
# `make bench`: the load scenarios, against the selfheal binary, a durable
# PostgreSQL and the real Docker daemon. Results go to stdout and to
# .run/bench-<date>.txt; docs/benchmarks.md records them with the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .run
out=".run/bench-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
	echo "# $(date -u) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
	echo "# $(go version)"
	# Scenarios against the binary: each runs once and reports its figures.
	go test -count=1 -run '^$' -bench "${BENCH:-.}" -benchtime=1x -timeout 30m ./cmd/selfheal/
	# Collector costs: ordinary Go benchmarks (ns/op is the time per scrape).
	go test -count=1 -run '^$' -bench "${BENCH:-.}" -benchmem -timeout 30m ./exporter/
} 2>&1 | tee "$out"
echo "results saved in $out"
