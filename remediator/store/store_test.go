package store_test

import (
	"context"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/migrations"
	"github.com/selfheal/selfheal/remediator/model"
	"github.com/selfheal/selfheal/remediator/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Template(store.MigrateURL))) }

// takingDown is what action.TakingDown returns for the registered actions
// (the actions package tests that it is these).
var takingDown = []string{"restart", "stop_start"}

// open returns a migrated store on a fresh database, and a raw connection to
// the same database for arranging and inspecting rows.
func open(t *testing.T) (*store.Store, *pgx.Conn) {
	t.Helper()
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	// Enough connections for a test's claims, each holding one, as many
	// workers would.
	s, err := store.Open(ctx, dsn, store.Options{MaxConns: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return s, conn
}

// TestMigrateDatabasesAtOnce: several selfheal installations whose
// databases share one PostgreSQL server migrate at the same moment. Some
// migrations change what the server shares between its databases (a
// role's settings, in 0013), which PostgreSQL refuses to two transactions
// at once ("tuple concurrently updated"): each must still migrate.
func TestMigrateDatabasesAtOnce(t *testing.T) {
	t.Parallel()
	const n = 8
	stores := make([]*store.Store, n)
	for i := range stores {
		s, err := store.Open(context.Background(), pgtest.EmptyDSN(t), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		stores[i] = s
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() { _, errs[i] = s.Migrate(context.Background()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("database %d: %v", i, err)
		}
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	dsn := pgtest.EmptyDSN(t)
	ctx := context.Background()
	s, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ready(ctx); err == nil {
		t.Fatal("Ready before migrating: want an error")
	}
	all, _ := migrations.All()
	n, err := s.Migrate(ctx)
	if err != nil || n != len(all) {
		t.Fatalf("first Migrate = %d, %v; want %d, nil", n, err, len(all))
	}
	n, err = s.Migrate(ctx)
	if err != nil || n != 0 {
		t.Fatalf("second Migrate = %d, %v; want 0, nil", n, err)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("Ready after migrating: %v", err)
	}
}

func TestConcurrentMigrate(t *testing.T) {
	t.Parallel()
	dsn := pgtest.EmptyDSN(t)
	ctx := context.Background()
	errs := make(chan error, 4)
	total := make(chan int, 4)
	for range 4 {
		go func() {
			s, err := store.Open(ctx, dsn, store.Options{})
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			n, err := s.Migrate(ctx)
			total <- n
			errs <- err
		}()
	}
	sum := 0
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		sum += <-total
	}
	all, _ := migrations.All()
	if sum != len(all) {
		t.Fatalf("replicas applied %d migrations in all, want %d", sum, len(all))
	}
}

func TestSeedSchemaNames(t *testing.T) {
	t.Parallel()
	_, conn := open(t)
	ctx := context.Background()
	for _, rel := range []string{
		"service_failures", "recovery_actions", "reboot_events", "self_healing_events",
		"v_service_failure_summary", "v_recent_recovery_actions", "v_recent_healing_events",
	} {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, rel).Scan(&ok); err != nil || !ok {
			t.Errorf("relation %s missing (%v)", rel, err)
		}
	}
	for _, fn := range []string{
		"get_service_failure_count(text,numeric)", "is_service_in_cooldown(text,numeric)",
		"get_critical_events_count(numeric)", "record_service_failure(text,text,text)",
		"record_recovery_action(text,text,text,text,jsonb)", "cleanup_service_failures()",
	} {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT to_regprocedure($1) IS NOT NULL`, fn).Scan(&ok); err != nil || !ok {
			t.Errorf("function %s missing (%v)", fn, err)
		}
	}
}

// inTx runs f in a transaction that is rolled back, so now() is one fixed
// instant for every statement f runs: window edges can be tested exactly.
func inTx(t *testing.T, conn *pgx.Conn, f func(tx pgx.Tx)) {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	f(tx)
}

func queryInt(t *testing.T, tx pgx.Tx, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := tx.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func queryBool(t *testing.T, tx pgx.Tx, sql string, args ...any) bool {
	t.Helper()
	var b bool
	if err := tx.QueryRow(context.Background(), sql, args...).Scan(&b); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return b
}

func exec(t *testing.T, tx pgx.Tx, sql string, args ...any) {
	t.Helper()
	if _, err := tx.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestGetServiceFailureCount(t *testing.T) {
	t.Parallel()
	_, conn := open(t)
	inTx(t, conn, func(tx pgx.Tx) {
		if got := queryInt(t, tx, `SELECT get_service_failure_count('svc', 10)`); got != 0 {
			t.Fatalf("empty table: %d", got)
		}
		id := queryInt(t, tx, `SELECT record_service_failure('svc', 'restart', 'failed')`)
		if id <= 0 {
			t.Fatalf("record_service_failure returned %d", id)
		}
		exec(t, tx, `INSERT INTO service_failures (service_name, failure_type, status, failure_time) VALUES
			('svc', 't', 'failed', now() - interval '10 minutes'),                        -- on the edge: inside
			('svc', 't', 'failed', now() - interval '10 minutes' - interval '1 microsecond'), -- just outside
			('other', 't', 'failed', now())`)
		for _, tc := range []struct {
			service string
			minutes string
			want    int
		}{
			{"svc", "10", 2},
			{"svc", "11", 3},
			{"svc", "9.99", 1},
			{"svc", "0", 1}, // a failure at now() is within "the last 0 minutes"
			{"other", "10", 1},
			{"none", "10", 0},
		} {
			if got := queryInt(t, tx, `SELECT get_service_failure_count($1, $2::numeric)`, tc.service, tc.minutes); got != tc.want {
				t.Errorf("get_service_failure_count(%s, %s) = %d, want %d", tc.service, tc.minutes, got, tc.want)
			}
		}
		var status, ftype string
		if err := tx.QueryRow(context.Background(), `SELECT status, failure_type FROM service_failures WHERE id = $1`, id).Scan(&status, &ftype); err != nil || status != "failed" || ftype != "restart" {
			t.Errorf("recorded row: %q %q %v", status, ftype, err)
		}
	})
}

func TestIsServiceInCooldown(t *testing.T) {
	t.Parallel()
	_, conn := open(t)
	inTx(t, conn, func(tx pgx.Tx) {
		if queryBool(t, tx, `SELECT is_service_in_cooldown('svc', 5)`) {
			t.Fatal("no actions yet: not in cooldown")
		}
		exec(t, tx, `INSERT INTO recovery_actions (service_name, action_type, status, started_at)
			VALUES ('svc', 'restart', 'succeeded', now() - interval '5 minutes')`)
		if !queryBool(t, tx, `SELECT is_service_in_cooldown('svc', 5)`) {
			t.Error("action exactly 5 minutes ago: in a 5-minute cooldown")
		}
		if queryBool(t, tx, `SELECT is_service_in_cooldown('svc', 4.99)`) {
			t.Error("action 5 minutes ago: not in a 4.99-minute cooldown")
		}
		if queryBool(t, tx, `SELECT is_service_in_cooldown('other', 60)`) {
			t.Error("cooldown must be per service")
		}
	})
}

func TestGetCriticalEventsCount(t *testing.T) {
	t.Parallel()
	_, conn := open(t)
	inTx(t, conn, func(tx pgx.Tx) {
		exec(t, tx, `INSERT INTO self_healing_events (event_time, severity, event_type, message) VALUES
			(now(), 'CRITICAL', 'e', 'm'),
			(now() - interval '30 minutes', 'EMERGENCY', 'e', 'm'),
			(now() - interval '30 minutes' - interval '1 microsecond', 'CRITICAL', 'e', 'm'),
			(now(), 'ERROR', 'e', 'm'),
			(now(), 'WARNING', 'e', 'm'),
			(now(), 'INFO', 'e', 'm')`)
		if got := queryInt(t, tx, `SELECT get_critical_events_count(30)`); got != 2 {
			t.Errorf("get_critical_events_count(30) = %d, want 2", got)
		}
		if got := queryInt(t, tx, `SELECT get_critical_events_count(31)`); got != 3 {
			t.Errorf("get_critical_events_count(31) = %d, want 3", got)
		}
		if _, err := tx.Exec(context.Background(), `SAVEPOINT s`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(context.Background(), `INSERT INTO self_healing_events (severity, event_type, message) VALUES ('FATAL', 'e', 'm')`); err == nil {
			t.Error("severity outside INFO..EMERGENCY accepted")
		}
		exec(t, tx, `ROLLBACK TO SAVEPOINT s`)
	})
}

func TestRecordRecoveryAction(t *testing.T) {
	t.Parallel()
	_, conn := open(t)
	inTx(t, conn, func(tx pgx.Tx) {
		done := queryInt(t, tx, `SELECT record_recovery_action('svc', 'restart', 'succeeded')`)
		running := queryInt(t, tx, `SELECT record_recovery_action('svc', 'restart', 'running', NULL, '{"why":"test"}')`)
		failed := queryInt(t, tx, `SELECT record_recovery_action('svc', 'stop_start', 'failed', 'boom')`)
		if !queryBool(t, tx, `SELECT completed_at IS NOT NULL FROM recovery_actions WHERE id = $1`, done) {
			t.Error("a succeeded action is complete when recorded")
		}
		if !queryBool(t, tx, `SELECT completed_at IS NULL AND details->>'why' = 'test' FROM recovery_actions WHERE id = $1`, running) {
			t.Error("a running action has no completion time and keeps its details")
		}
		if !queryBool(t, tx, `SELECT error_message = 'boom' FROM recovery_actions WHERE id = $1`, failed) {
			t.Error("error message not stored")
		}
		if got := queryInt(t, tx, `SELECT count(*) FROM v_recent_recovery_actions WHERE service_name = 'svc'`); got != 3 {
			t.Errorf("v_recent_recovery_actions shows %d rows, want 3", got)
		}
		if _, err := tx.Exec(context.Background(), `SAVEPOINT s`); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(context.Background(), `SELECT record_recovery_action('svc', 'restart', 'exploded')`); err == nil {
			t.Error("unknown status accepted")
		}
		exec(t, tx, `ROLLBACK TO SAVEPOINT s`)
	})
}

func TestCleanupServiceFailures(t *testing.T) {
	t.Parallel()
	_, conn := open(t)
	inTx(t, conn, func(tx pgx.Tx) {
		exec(t, tx, `INSERT INTO service_failures (service_name, failure_type, status, failure_time) VALUES
			('svc', 't', 'failed', now() - interval '1 hour'),                          -- kept: exactly at retention
			('svc', 't', 'failed', now() - interval '1 hour' - interval '1 microsecond'), -- deleted
			('svc', 't', 'failed', now() - interval '2 days'),                          -- deleted
			('svc', 't', 'failed', now())`)
		if got := queryInt(t, tx, `SELECT cleanup_service_failures()`); got != 2 {
			t.Errorf("cleanup_service_failures() = %d, want 2", got)
		}
		if got := queryInt(t, tx, `SELECT count(*) FROM service_failures`); got != 2 {
			t.Errorf("%d rows left, want 2", got)
		}
	})
}

func TestViews(t *testing.T) {
	t.Parallel()
	_, conn := open(t)
	inTx(t, conn, func(tx pgx.Tx) {
		exec(t, tx, `INSERT INTO service_failures (service_name, failure_type, status, failure_time) VALUES
			('svc', 't', 'failed', now() - interval '5 minutes'),
			('svc', 't', 'failed', now() - interval '30 minutes'),
			('svc', 't', 'failed', now() - interval '2 hours')`)
		var f10, f1h int
		if err := tx.QueryRow(context.Background(), `SELECT failures_10m, failures_1h FROM v_service_failure_summary WHERE service_name = 'svc'`).Scan(&f10, &f1h); err != nil {
			t.Fatal(err)
		}
		if f10 != 1 || f1h != 2 {
			t.Errorf("summary = %d in 10m, %d in 1h; want 1, 2", f10, f1h)
		}
		exec(t, tx, `INSERT INTO self_healing_events (event_time, severity, event_type, message) VALUES
			(now(), 'INFO', 'e', 'recent'), (now() - interval '2 days', 'INFO', 'e', 'old')`)
		if got := queryInt(t, tx, `SELECT count(*) FROM v_recent_healing_events`); got != 1 {
			t.Errorf("v_recent_healing_events shows %d rows, want 1", got)
		}
	})
}

func TestRetentionKeepsUnfinishedWork(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, tx, `INSERT INTO recovery_actions (service_name, action_type, status, started_at) VALUES
		('svc', 'restart', 'succeeded', now() - interval '8 days'),
		('svc', 'restart', 'running', now() - interval '8 days'),
		('svc', 'restart', 'succeeded', now() - interval '1 day')`)
	exec(t, tx, `INSERT INTO self_healing_events (event_time, severity, event_type, message) VALUES
		(now() - interval '31 days', 'INFO', 'e', 'old'), (now(), 'INFO', 'e', 'new')`)
	exec(t, tx, `INSERT INTO alert_occurrences (fingerprint, starts_at, alertname, status, labels, last_received_at)
		VALUES ('old-queued', now() - interval '40 days', 'A', 'firing', '{}', now() - interval '40 days'),
		       ('old-done', now() - interval '40 days', 'A', 'firing', '{}', now() - interval '40 days')`)
	exec(t, tx, `INSERT INTO remediation_jobs (occurrence_id, remediation, step, state)
		SELECT id, 'r', 1, 'queued' FROM alert_occurrences WHERE fingerprint = 'old-queued'`)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	deleted, err := s.ApplyRetention(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"recovery_actions": 1, "self_healing_events": 1, "alert_occurrences": 1}
	for table, n := range want {
		if deleted[table] != n {
			t.Errorf("deleted %d from %s, want %d (all: %v)", deleted[table], table, n, deleted)
		}
	}
	var running int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`).Scan(&running); err != nil || running != 1 {
		t.Errorf("running action deleted: %d left (%v)", running, err)
	}
	var queued int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM alert_occurrences WHERE fingerprint = 'old-queued'`).Scan(&queued); err != nil || queued != 1 {
		t.Errorf("occurrence with a queued job deleted (%v)", err)
	}
}

func TestReadyFailsWhenDatabaseIsGone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := store.Open(ctx, "postgres://nobody@127.0.0.1:1/none?sslmode=disable", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ready(ctx); err == nil {
		t.Fatal("Ready with no server: want an error")
	}
}

func TestOpenHidesPasswordInBadURL(t *testing.T) {
	t.Parallel()
	_, err := store.Open(context.Background(), "postgres://u:hunter2@host:notaport/db", store.Options{})
	if err == nil {
		t.Fatal("want an error")
	}
	if got := err.Error(); got != "parse database URL: not a valid postgres:// URL or key=value connection string" {
		t.Fatalf("error = %q", got)
	}
}

// TestSeedOperatorQueriesRunUnchanged runs the seed's documented operator
// queries word for word: they name the time `timestamp` and the message
// `description`, which the schema keeps as generated columns.
func TestSeedOperatorQueriesRunUnchanged(t *testing.T) {
	t.Parallel()
	_, conn := open(t)
	inTx(t, conn, func(tx pgx.Tx) {
		exec(t, tx, `INSERT INTO self_healing_events (severity, event_type, message) VALUES ('CRITICAL', 'escalation', 'three failures')`)
		exec(t, tx, `SELECT record_recovery_action('llm-service', 'restart', 'succeeded')`)
		exec(t, tx, `SELECT record_service_failure('llm-service', 'restart', 'failed')`)
		var ts time.Time
		var typ, sev, desc string
		err := tx.QueryRow(context.Background(), `SELECT timestamp, event_type, severity, description FROM self_healing_events
			ORDER BY timestamp DESC LIMIT 20`).Scan(&ts, &typ, &sev, &desc)
		if err != nil || desc != "three failures" || sev != "CRITICAL" || time.Since(ts) > time.Minute {
			t.Fatalf("events query: %v %q %q %q %v", ts, typ, sev, desc, err)
		}
		for _, q := range []string{
			`SELECT * FROM recovery_actions WHERE timestamp > NOW() - INTERVAL '1 hour'`,
			`SELECT service_name, action_type, status, timestamp FROM recovery_actions WHERE timestamp > NOW() - INTERVAL '24 hours' ORDER BY timestamp DESC`,
			`SELECT * FROM service_failures WHERE timestamp > NOW() - INTERVAL '10 minutes'`,
			`SELECT * FROM v_service_failure_summary`,
			`SELECT * FROM v_recent_recovery_actions`,
			`SELECT * FROM v_recent_healing_events`,
			`SELECT get_service_failure_count('llm-service', 10)`,
			`SELECT is_service_in_cooldown('llm-service', 5)`,
			`SELECT get_critical_events_count(30)`,
		} {
			rows, err := tx.Query(context.Background(), q)
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			n := 0
			for rows.Next() {
				n++
			}
			if rows.Close(); rows.Err() != nil || n == 0 {
				t.Errorf("%s: %d rows, %v", q, n, rows.Err())
			}
		}
	})
}

// TestStatusSetsMatchTheSchema keeps the typed closed sets equal to the
// CHECK constraints of the migrated schema.
func TestStatusSetsMatchTheSchema(t *testing.T) {
	t.Parallel()
	_, conn := open(t)
	check := func(constraint string) []string {
		t.Helper()
		var def string
		if err := conn.QueryRow(context.Background(), `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1`,
			constraint).Scan(&def); err != nil {
			t.Fatalf("%s: %v", constraint, err)
		}
		var vals []string
		for _, part := range strings.Split(def, "'")[1:] {
			if !strings.HasPrefix(part, "::") && !strings.HasPrefix(part, ",") && !strings.HasPrefix(part, "]") {
				vals = append(vals, part)
			}
		}
		sort.Strings(vals)
		return vals
	}
	sorted := func(vs ...string) []string { sort.Strings(vs); return vs }
	var sev, states, outcomes, actions []string
	for _, v := range model.Severities {
		sev = append(sev, string(v))
	}
	for _, v := range model.JobStates {
		states = append(states, string(v))
	}
	for _, v := range model.JobOutcomes {
		outcomes = append(outcomes, string(v))
	}
	for _, v := range model.ActionStatuses {
		actions = append(actions, string(v))
	}
	for _, tc := range []struct {
		constraint string
		want       []string
	}{
		{"self_healing_events_severity_check", sorted(sev...)},
		{"remediation_jobs_state_check", sorted(states...)},
		{"remediation_jobs_outcome_check", sorted(outcomes...)},
		{"recovery_actions_status_check", sorted(actions...)},
	} {
		if got := check(tc.constraint); strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s holds %v; the Go constants %v", tc.constraint, got, tc.want)
		}
	}
}
