package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dashsql"
)

// historySQL fills the four tables that grow with use with n rows each of
// finished history, spread uniformly over each table's retention before the
// last day (alerts and events 30 days, jobs and actions 7), then adds the
// same recent activity at every size: the last day's 1,000 alerts, jobs and
// actions and 3,000 events. History is what the dashboards' default window
// (24 h) and `selfheal events` do not show: a read whose cost grows with it
// is a read not bounded by its window.
const historySQL = `
INSERT INTO alert_occurrences (fingerprint, starts_at, alertname, status, labels, remediation, ends_at, resolved_at,
                               first_received_at, last_received_at)
SELECT lpad(to_hex(i), 16, '0'), t, 'ServiceDown', 'resolved',
       jsonb_build_object('alertname', 'ServiceDown', 'service', 'svc-' || (i % 500)), 'service-down',
       t + interval '90 seconds', t + interval '90 seconds', t, t + interval '90 seconds'
FROM (SELECT i, now() - interval '1 day' - random() * interval '29 days' AS t FROM generate_series(1, $1) i) g;

INSERT INTO remediation_jobs (occurrence_id, remediation, step, state, outcome, target, reason, not_before, created_at, finished_at)
SELECT id, 'service-down', 1, 'done', 'succeeded', labels->>'service', 'running restart (attempt 1)', t, t, t + interval '2 seconds'
FROM (SELECT id, labels, now() - interval '1 day' - random() * interval '6 days' AS t FROM alert_occurrences LIMIT $1) o;

INSERT INTO recovery_actions (service_name, action_type, status, started_at, completed_at, remediation, category, attempt, details)
SELECT 'svc-' || (i % 500), 'restart', CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'succeeded' END, t, t + interval '2 seconds',
       'service-down', 'A', 1, '{"cooldown_seconds": 0}'
FROM (SELECT i, now() - interval '1 day' - random() * interval '6 days' AS t FROM generate_series(1, $1) i) g;

INSERT INTO self_healing_events (event_time, severity, event_type, service_name, remediation, message)
SELECT t, (ARRAY['INFO', 'INFO', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'])[1 + i % 6], 'decision', 'svc-' || (i % 500),
       'service-down', 'running restart (attempt 1)'
FROM (SELECT i, now() - interval '1 day' - random() * interval '29 days' AS t FROM generate_series(1, $1) i) g;
`

const recentSQL = `
INSERT INTO alert_occurrences (fingerprint, starts_at, alertname, status, labels, remediation, ends_at, resolved_at,
                               first_received_at, last_received_at)
SELECT 'recent' || lpad(to_hex(i), 10, '0'), t, 'ServiceDown', 'resolved',
       jsonb_build_object('alertname', 'ServiceDown', 'service', 'svc-' || (i % 50)), 'service-down',
       t + interval '90 seconds', t + interval '90 seconds', t, t + interval '90 seconds'
FROM (SELECT i, now() - interval '1 hour' - (i / 1000.0) * interval '22 hours' AS t FROM generate_series(1, 1000) i) g;

INSERT INTO recovery_actions (service_name, action_type, status, started_at, completed_at, remediation, category, attempt, details)
SELECT 'svc-' || (i % 50), 'restart', 'succeeded', t, t + interval '2 seconds', 'service-down', 'A', 1, '{"cooldown_seconds": 0}'
FROM (SELECT i, now() - interval '1 hour' - (i / 1000.0) * interval '22 hours' AS t FROM generate_series(1, 1000) i) g;

INSERT INTO self_healing_events (event_time, severity, event_type, service_name, remediation, message)
SELECT t, (ARRAY['INFO', 'INFO', 'WARNING'])[1 + i % 3], 'decision', 'svc-' || (i % 50), 'service-down', 'running restart (attempt 1)'
FROM (SELECT i, now() - interval '1 hour' - (i / 3000.0) * interval '22 hours' AS t FROM generate_series(1, 3000) i) g;
`

// hotSQL gives the decided target ($1) a long history of its own, $2
// rows of each kind spread over each table's retention: alerts and their
// jobs and events over the last six days, actions (its remediation's
// restarts) over six days, and an outage a minute over the last hour
// (service_failures keeps an hour). A target healed often is the one whose
// decisions matter; each decision must read only what its windows need,
// however long that target's history.
const hotSQL = `
INSERT INTO alert_occurrences (fingerprint, starts_at, alertname, status, labels, remediation, ends_at, resolved_at,
                               first_received_at, last_received_at)
SELECT 'hot' || lpad(to_hex(i), 13, '0'), t, 'ServiceDown', 'resolved',
       jsonb_build_object('alertname', 'ServiceDown', 'service', $1::text), 'service-down',
       t + interval '90 seconds', t + interval '90 seconds', t, t + interval '90 seconds'
FROM (SELECT i, now() - interval '10 minutes' - (i::float / $2) * interval '6 days' AS t FROM generate_series(1, $2) i) g;

INSERT INTO remediation_jobs (occurrence_id, remediation, step, state, outcome, target, reason, not_before, created_at, finished_at)
SELECT id, 'service-down', 1, 'done', 'succeeded', $1::text, 'running restart (attempt 1)', starts_at, starts_at,
       starts_at + interval '2 seconds'
FROM alert_occurrences WHERE fingerprint LIKE 'hot%' AND labels->>'service' = $1::text AND $2 > 0;

INSERT INTO recovery_actions (service_name, action_type, status, started_at, completed_at, remediation, category, attempt, details)
SELECT $1::text, 'restart', 'succeeded', t, t + interval '2 seconds', 'service-down', 'A', 1, '{"cooldown_seconds": 0}'
FROM (SELECT i, now() - interval '10 minutes' - (i::float / $2) * interval '6 days' AS t FROM generate_series(1, $2) i) g;

INSERT INTO self_healing_events (event_time, severity, event_type, service_name, remediation, message)
SELECT t, 'INFO', 'action_succeeded', $1::text, 'service-down', 'restart succeeded'
FROM (SELECT i, now() - interval '10 minutes' - (i::float / $2) * interval '6 days' AS t FROM generate_series(1, $2) i) g;

INSERT INTO service_failures (service_name, failure_type, status, failure_time, remediation)
SELECT $1::text, 'outage', 'detected', now() - interval '10 minutes' - i * interval '1 minute', 'service-down'
FROM generate_series(1, 50) i WHERE $2 > 0;
`

// BenchmarkHistory measures every read on a hot path with 0, 1M and 10M
// rows of history in each table (SELFHEAL_BENCH_HISTORY, a comma-separated
// list): the decision (alert received → Docker restart request, as in
// BenchmarkDecisionLatency), a scrape of /metrics, `selfheal events`, and
// each dashboard SQL panel over its default 24 h. Each size starts on a
// fresh durable cluster. Each size is measured twice: with its history
// spread over 500 services, and with the decided target hot as well —
// SELFHEAL_BENCH_HOT (5,000) rows of each kind of its own (hotSQL).
func BenchmarkHistory(b *testing.B) {
	sizes := envInts(b, "SELFHEAL_BENCH_HISTORY", []int{0, 1_000_000, 10_000_000})
	hot := envInt("SELFHEAL_BENCH_HOT", 5000)
	panels, err := dashsql.Queries("../../grafana/dashboards")
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) { historyAt(b, n, 0, panels) })
		if n > 0 {
			b.Run(fmt.Sprintf("rows=%d/hot=%d", n, hot), func(b *testing.B) { historyAt(b, n, hot, panels) })
		}
	}
}

func historyAt(b *testing.B, n, hot int, panels []dashsql.Query) {
	decisions := envInt("SELFHEAL_BENCH_DECISIONS", 30)
	rig := newDecisionRig(b, decisions)
	url, conn := rig.url, rig.conn
	waitReady(b, "selfheal", url+"/-/ready")
	ctx := context.Background()
	loadStart := time.Now()
	for _, stmt := range strings.Split(strings.TrimSpace(historySQL), ";\n") {
		if _, err := conn.Exec(ctx, stmt, n); err != nil {
			b.Fatalf("load history: %v", err)
		}
	}
	if _, err := conn.Exec(ctx, recentSQL); err != nil {
		b.Fatalf("load recent activity: %v", err)
	}
	for _, stmt := range strings.Split(strings.TrimSpace(hotSQL), ";\n") {
		if _, err := conn.Exec(ctx, stmt, rig.name, hot); err != nil {
			b.Fatalf("load the hot target's history: %v", err)
		}
	}
	// What a long-running database has: statistics, a visibility map, and
	// the loading's writes checkpointed (not still being written out while
	// the figures are taken).
	for _, stmt := range []string{"VACUUM ANALYZE", "CHECKPOINT"} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			b.Fatal(err)
		}
	}
	fmt.Printf("rows=%d hot=%d: history loaded in %s\n", n, hot, time.Since(loadStart).Round(time.Second))

	p50 := func(lat []time.Duration) time.Duration {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		return lat[len(lat)/2]
	}

	// The decision, as BenchmarkDecisionLatency measures it.
	lat := rig.measure(b, fmt.Sprintf("h%d-", n), decisions)
	b.ReportMetric(ms(p50(lat)), "decision-p50-ms")

	// A scrape of /metrics.
	lat = lat[:0]
	for range 50 {
		start := time.Now()
		resp, err := http.Get(url + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
	}
	b.ReportMetric(ms(p50(lat)), "metrics-p50-ms")

	// selfheal events, the command as people run it.
	lat = lat[:0]
	for range 10 {
		start := time.Now()
		cmd := exec.Command(binary, "events", "--limit=50")
		cmd.Env = append(os.Environ(), "SELFHEAL_DATABASE_URL="+conn.Config().ConnString())
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("selfheal events: %v\n%s", err, out)
		}
		lat = append(lat, time.Since(start))
	}
	b.ReportMetric(ms(p50(lat)), "events-p50-ms")

	// Every SQL panel over its default window, as Grafana's role reads it
	// (row-level security included).
	if _, err := conn.Exec(ctx, "SET ROLE selfheal_grafana"); err != nil {
		b.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET ROLE") //nolint:errcheck
	var slowest time.Duration
	for _, q := range panels {
		sql, err := dashsql.Expand(q.SQL, "24 hours")
		if err != nil {
			b.Fatal(err)
		}
		lat = lat[:0]
		for range 10 {
			start := time.Now()
			rows, err := conn.Query(ctx, sql)
			if err != nil {
				b.Fatalf("panel %q: %v", q.Panel, err)
			}
			for rows.Next() {
			}
			rows.Close()
			lat = append(lat, time.Since(start))
		}
		d := p50(lat)
		slowest = max(slowest, d)
		fmt.Printf("rows=%d: panel %-34q p50 %.2f ms\n", n, q.Panel, ms(d))
	}
	b.ReportMetric(ms(slowest), "slowest-panel-p50-ms")
}
