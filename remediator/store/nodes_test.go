package store_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/remediator/model"
	"github.com/selfheal/selfheal/remediator/store"
)

// fleetAlert is a ServiceDown for service on node.
func fleetAlert(node, service string) model.Alert {
	return model.Alert{
		Fingerprint: "fp-" + node + "-" + service, StartsAt: startsAt, Status: "firing", Alertname: "ServiceDown",
		Labels:      map[string]string{"alertname": "ServiceDown", "service": service, "node": node},
		Remediation: "service-down", Node: node,
	}
}

// enrolled opens the database as a role made by Enrol; the role is
// dropped when the test ends (roles outlive the test's database).
func enrolled(t *testing.T, admin *store.Store, adminDSN, name string, webhook bool) (*store.Store, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	e, err := admin.Enrol(ctx, name, webhook, adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.DSN, e.Role+":"+e.Password+"@") {
		t.Fatalf("DSN %q does not carry the role's credentials", e.DSN)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), adminDSN)
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{e.Role}.Sanitize())
			conn.Close(context.Background())
		}
	})
	s, err := store.Open(ctx, e.DSN, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	conn, err := pgx.Connect(ctx, e.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return s, conn
}

// migrated is a store on a fresh, migrated database as its owner, and the
// database's URL (to enrol roles from).
func migrated(t *testing.T) (*store.Store, string) {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	admin, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if _, err := admin.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return admin, dsn
}

func uniqueNode(prefix string) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// TestNodeCredentialsReachOnlyTheirNode: with the roles the migration and
// Enrol create, node A's credentials neither see nor change node B's jobs
// and audit rows, and cannot write rows for B; the webhook's role can
// ingest and nothing more. (Row-level security hides rows rather than
// failing the statement: a SELECT returns none of B's rows, an UPDATE
// changes none; writing a row for B, or touching what a role was not
// granted, fails.)
func TestNodeCredentialsReachOnlyTheirNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin, dsn := migrated(t)
	a, b := uniqueNode("edge-a"), uniqueNode("edge-b")
	nodeA, connA := enrolled(t, admin, dsn, a, false)
	_, connB := enrolled(t, admin, dsn, b, false)
	hook, hookConn := enrolled(t, admin, dsn, uniqueNode("ingest"), true)

	// The webhook's role ingests both nodes' alerts.
	res, err := hook.IngestAlerts(ctx, []model.Alert{fleetAlert(a, "llm"), fleetAlert(b, "llm")}, time.Minute)
	if err != nil || res.JobsQueued != 2 {
		t.Fatalf("ingest as the webhook's role: %+v, %v", res, err)
	}
	// A node's role migrates nothing and does not need to.
	if n, err := nodeA.Migrate(ctx); err != nil || n != 0 {
		t.Fatalf("migrate as a node: %d, %v", n, err)
	}

	// A claims its own job, and no other, even when asking for B's.
	if c, err := nodeA.ClaimJob(ctx, model.ClaimFilter{Known: []string{"service-down"}, Nodes: []string{b}}); err != nil || c != nil {
		t.Fatalf("A claimed B's job: %v, %v", c, err)
	}
	if c, err := nodeA.ClaimJob(ctx, model.ClaimFilter{Known: []string{"service-down"}}); err != nil || c == nil || c.Job().Node != a {
		t.Fatalf("A's claim: %+v, %v", c, err)
	} else {
		// Everything a decision writes, under A's role.
		if _, err := c.LoadState(ctx, model.StateQuery{Target: "llm", Remediation: "service-down", FailureWindow: time.Hour, StormWindow: time.Minute,
			CountOutage: true}); err != nil {
			t.Fatal(err)
		}
		adm, err := c.RecordIntent(ctx, model.Intent{Target: "llm", Action: "restart", Category: "A", Attempt: 1, Reason: "test"})
		if err != nil {
			t.Fatal(err)
		}
		id := adm.ActionID
		if err := c.Finish(ctx, model.Outcome{State: model.JobDone, Result: model.OutcomeFailed, Target: "llm", ActionID: id,
			ActionStatus: model.ActionFailed, Failure: &model.Failure{Type: "restart", Status: "failed"},
			Escalation: &model.Escalation{To: "critical-recovery", Reason: "test"},
			FollowUp:   &model.FollowUp{After: time.Hour},
			Events:     []model.Event{{Severity: model.SeverityInfo, Type: "test", Target: "llm", Message: "m"}}}); err != nil {
			t.Fatalf("finish as node A: %v", err)
		}
	}
	adminConn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer adminConn.Close(ctx)
	// Every row A wrote is A's; the jobs it queued too.
	for _, table := range []string{"recovery_actions", "service_failures", "escalations", "self_healing_events"} {
		if n := one(t, adminConn, `SELECT count(*) FROM `+table+` WHERE job_id IS NOT NULL AND node IS DISTINCT FROM $1`, a); n != 0 {
			t.Errorf("%s: %d rows written by A not marked as A's", table, n)
		}
	}
	if n := one(t, adminConn, `SELECT count(*) FROM remediation_jobs WHERE node = $1`, a); n != 3 {
		t.Errorf("A's jobs (its own, its escalation's, its follow-up): %d, want 3", n)
	}

	// B's rows are invisible to A, and unchangeable.
	for _, table := range []string{"remediation_jobs", "alert_occurrences", "recovery_actions", "self_healing_events", "nodes"} {
		col := "node"
		if table == "nodes" {
			col = "name"
		}
		if n := one(t, connA, `SELECT count(*) FROM `+table+` WHERE `+col+` = $1`, b); n != 0 {
			t.Errorf("A sees %d of B's rows in %s", n, table)
		}
	}
	if n := one(t, connB, `SELECT count(*) FROM remediation_jobs WHERE node = $1`, b); n != 1 {
		t.Errorf("B sees %d of its own jobs, want 1", n)
	}
	if tag, err := connA.Exec(ctx, `UPDATE remediation_jobs SET state = 'cancelled' WHERE node = $1`, b); err != nil || tag.RowsAffected() != 0 {
		t.Errorf("A updating B's jobs: %v rows, %v", tag.RowsAffected(), err)
	}
	if tag, err := connA.Exec(ctx, `DELETE FROM remediation_jobs WHERE node = $1`, b); err != nil || tag.RowsAffected() != 0 {
		t.Errorf("A deleting B's jobs: %v rows, %v", tag.RowsAffected(), err)
	}
	mustFail := func(conn *pgx.Conn, who, sql string, args ...any) {
		t.Helper()
		_, err := conn.Exec(ctx, sql, args...)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "42501" && pgErr.Code != "42P01") {
			t.Errorf("%s: %s: want a permission or row-level security error, got %v", who, sql, err)
		}
	}
	mustFail(connA, "A", `INSERT INTO recovery_actions (service_name, action_type, status, node) VALUES ('llm', 'restart', 'running', $1)`, b)
	mustFail(connA, "A", `UPDATE remediation_jobs SET node = $1 WHERE node = $2`, b, a)
	mustFail(connA, "A", `SELECT * FROM node_roles`)
	mustFail(connA, "A", `UPDATE engine_settings SET paused = true`)
	mustFail(connA, "A", `CREATE TABLE t (x int)`)
	// The webhook's role: no action, failure or setting.
	mustFail(hookConn, "webhook", `INSERT INTO recovery_actions (service_name, action_type, status) VALUES ('llm', 'restart', 'running')`)
	mustFail(hookConn, "webhook", `INSERT INTO service_failures (service_name, failure_type, status) VALUES ('llm', 'restart', 'failed')`)
	mustFail(hookConn, "webhook", `UPDATE engine_settings SET paused = true`)
	mustFail(hookConn, "webhook", `DELETE FROM remediation_jobs`)
	if _, err := hook.ApplyRetention(ctx); !store.PermissionDenied(err) {
		t.Errorf("retention on the webhook's role: %v, want permission denied", err)
	}
	if _, err := nodeA.ApplyRetention(ctx); err != nil {
		t.Errorf("retention on a node's role: %v", err)
	}
	// The status page reads the held-back targets as a decision would, on
	// any replica: the webhook's role and a node's may.
	for name, st := range map[string]*store.Store{"webhook": hook, "node": nodeA} {
		if _, err := st.HeldCandidates(ctx); err != nil {
			t.Errorf("held targets on the %s's role: %v", name, err)
		}
		if _, err := st.ReadState(ctx, model.StateQuery{Target: "llm", Remediation: "service-down", FailureWindow: time.Minute, StormWindow: time.Minute}); err != nil {
			t.Errorf("decision state on the %s's role: %v", name, err)
		}
	}
}

// TestJobsWaitForASilentNode: in a fleet, a job queued for a node that
// never heartbeated, or whose engine stopped, is recorded as waiting; a
// node's alias in an alert becomes its name; Nodes counts the queue.
func TestJobsWaitForASilentNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.DSN(t)
	s, err := store.Open(ctx, dsn, store.Options{NodeSilentAfter: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	ingest := func(a model.Alert) model.IngestResult {
		t.Helper()
		res, err := s.IngestAlerts(ctx, []model.Alert{a}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := ingest(fleetAlert("edge-01", "a")); res.Waiting != 1 || res.Nodes[0] != "edge-01" {
		t.Fatalf("a job for a node never heard from: %+v", res)
	}
	if _, err := s.NodeHeartbeat(ctx, model.NodeBeat{Name: "edge-01", Names: []string{"edge-01", "10.0.0.1"}, Engine: "e1"}); err != nil {
		t.Fatal(err)
	}
	alias := fleetAlert("10.0.0.1", "b")
	if res := ingest(alias); res.Waiting != 0 || len(res.Nodes) != 1 || res.Nodes[0] != "edge-01" {
		t.Fatalf("a job for a live node, by its alias: %+v", res)
	}
	if err := s.NodeStopped(ctx, "edge-01", "another-engine"); err != nil {
		t.Fatal(err)
	}
	if res := ingest(fleetAlert("EDGE-01", "c")); res.Waiting != 0 {
		t.Fatalf("a stop by an engine that is not the node's counts: %+v", res)
	}
	if err := s.NodeStopped(ctx, "edge-01", "e1"); err != nil {
		t.Fatal(err)
	}
	if res := ingest(fleetAlert("edge-01", "d")); res.Waiting != 1 {
		t.Fatalf("a job for a stopped node: %+v", res)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if n := one(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'node_silent' AND node = 'edge-01'`); n != 2 {
		t.Errorf("node_silent events: %d, want 2", n)
	}
	nodes, err := s.Nodes(ctx)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("nodes: %+v, %v", nodes, err)
	}
	if n := nodes[0]; n.Name != "edge-01" || n.Queued != 4 || !n.Stopped || n.LastHeartbeat.IsZero() || n.OldestQueued.IsZero() {
		t.Errorf("node: %+v", n)
	}
}

// TestListenForJobs: a notification for a node wakes that node's
// listener, not another's.
func TestListenForJobs(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	woken := map[string]chan struct{}{"edge-01": make(chan struct{}, 10), "edge-02": make(chan struct{}, 10)}
	for node, ch := range woken {
		go func() { _ = s.ListenForJobs(ctx, node, func() { ch <- struct{}{} }) }()
		select { // the first wake-up says it listens
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s never listened", node)
		}
	}
	if err := s.NotifyNodes(ctx, []string{"edge-01"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-woken["edge-01"]:
	case <-time.After(10 * time.Second):
		t.Fatal("edge-01 was not woken")
	}
	select {
	case <-woken["edge-02"]:
		t.Fatal("edge-02 was woken by edge-01's jobs")
	case <-time.After(200 * time.Millisecond):
	}
}

// TestNodeWakerRoundsAreSpaced: a first wake-up goes at once; one asked
// for within the interval waits for the next round, which carries every
// node asked for meanwhile.
func TestNodeWakerRoundsAreSpaced(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	woken := map[string]chan time.Time{}
	for _, node := range []string{"a", "b", "c"} {
		ch := make(chan time.Time, 10)
		woken[node] = ch
		go func() { _ = s.ListenForJobs(ctx, node, func() { ch <- time.Now() }) }()
		<-ch // listening
	}
	// Long enough that a loaded machine's delay in delivering a
	// notification (hundreds of milliseconds, seen in CI) cannot pass
	// for the interval, or hide it.
	const interval = 2 * time.Second
	w := store.NewNodeWaker(s, interval, func(err error) { t.Error(err) })
	go w.Run(ctx)
	next := func(node string) time.Time {
		t.Helper()
		select {
		case at := <-woken[node]:
			return at
		case <-time.After(10 * time.Second):
			t.Fatalf("%s was not woken", node)
			return time.Time{}
		}
	}
	start := time.Now()
	w.Wake([]string{"a"})
	first := next("a")
	if d := first.Sub(start); d > interval/2 {
		t.Errorf("the first wake-up took %s: it goes at once, not an interval later", d)
	}
	w.Wake([]string{"b"})
	w.Wake([]string{"c", ""})
	// The first round went at start or later, the second an interval
	// after it: measured from start, not from when the first arrived.
	if b, c := next("b"), next("c"); b.Sub(start) < interval || c.Sub(start) < interval {
		t.Errorf("the second round came %s and %s after the first was asked for; the interval is %s", b.Sub(start), c.Sub(start), interval)
	}
}
