package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/remediator/model"
	"github.com/selfheal/selfheal/remediator/store"
)

// claimAll claims n jobs, one claim each, as n workers would.
func claimAll(t *testing.T, s *store.Store, n int) []*store.Claim {
	t.Helper()
	var claims []*store.Claim
	for range n {
		c, err := s.ClaimJob(context.Background(), model.ClaimFilter{Known: []string{"service-down"}})
		if err != nil || c == nil {
			t.Fatalf("claim: %v, %v", c, err)
		}
		t.Cleanup(c.Release)
		claims = append(claims, c)
	}
	return claims
}

// intentsAtOnce has every claim record its intent at the same moment, and
// returns how many were admitted.
func intentsAtOnce(t *testing.T, claims []*store.Claim, limits model.Admission) (admitted int, seen []model.Admitted) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	start := make(chan struct{})
	for i, c := range claims {
		wg.Go(func() {
			<-start
			a, err := c.RecordIntent(context.Background(), model.Intent{Target: fmt.Sprintf("svc-%d", i), Action: "restart",
				Category: "A", Attempt: 1, Limits: limits, Owner: "test", Lease: time.Minute, Timeout: time.Minute})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
			seen = append(seen, a)
			if a.ActionID != 0 {
				admitted++
			}
		})
	}
	close(start)
	wg.Wait()
	return admitted, seen
}

// TestAdmissionIsAtomic: many workers, each past its own state read, record
// their intents at once; the storm brake and max_concurrent_actions admit
// exactly as many as they allow, because counting and inserting are one
// step under the admission lock — and the refused see the counts that
// refused them.
func TestAdmissionIsAtomic(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		limits model.Admission
		want   int
	}{
		{"max_concurrent_actions 1", model.Admission{MaxRunning: 1}, 1},
		{"max_concurrent_actions 3", model.Admission{MaxRunning: 3}, 3},
		{"storm brake 1", model.Admission{MaxInWindow: 1, Window: time.Hour}, 1},
		{"storm brake 2", model.Admission{MaxInWindow: 2, Window: time.Hour}, 2},
		{"no limit", model.Admission{}, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // a database and a container of its own
			s, conn := open(t)
			if _, err := s.IngestAlerts(context.Background(), stormAlerts(8, 8), time.Hour); err != nil {
				t.Fatal(err)
			}
			for round := range 5 {
				claims := claimAll(t, s, 8)
				admitted, seen := intentsAtOnce(t, claims, tc.limits)
				if admitted != tc.want {
					t.Fatalf("round %d: %d intents admitted at once, want %d", round, admitted, tc.want)
				}
				for _, a := range seen {
					if a.ActionID == 0 && a.Running < tc.limits.MaxRunning && a.InWindow < tc.limits.MaxInWindow {
						t.Errorf("refused under the limits: %+v", a)
					}
				}
				for _, c := range claims {
					c.Release()
				}
				// Next round: the actions ended and left the window, the
				// jobs are due again.
				for _, q := range []string{`UPDATE recovery_actions SET status = 'succeeded', started_at = now() - interval '2 hours'`,
					`DELETE FROM recovery_actions`, `UPDATE remediation_jobs SET not_before = now() WHERE state = 'queued'`} {
					if _, err := conn.Exec(context.Background(), q); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

// TestLeaseKeepsTheActionItsOwners: while its owner renews the lease, a
// running action is held — another worker that finds its job defers and
// counts nothing; the owner records the outcome on a transaction of its
// own. Once the lease lapses another may take it over, and the owner then
// learns that it lost it.
func TestLeaseKeepsTheActionItsOwners(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	owner := claimAll(t, s, 1)[0]
	a, err := owner.RecordIntent(ctx, model.Intent{Target: "llm", Action: "restart", Category: "A", Attempt: 1,
		Owner: "replica-a", Lease: 2 * time.Second, Timeout: 30 * time.Second})
	if err != nil || a.ActionID == 0 {
		t.Fatalf("intent: %+v, %v", a, err)
	}
	if c, err := s.ClaimJob(ctx, model.ClaimFilter{Known: []string{"service-down"}}); err != nil || c != nil {
		t.Fatalf("the job of a leased action was claimable: %v, %v", c, err)
	}
	// Due early (a worker deferring it, say): it is still held.
	if _, err := conn.Exec(ctx, `UPDATE remediation_jobs SET not_before = now()`); err != nil {
		t.Fatal(err)
	}
	other := claimAll(t, s, 1)[0]
	o, found, err := other.OrphanedAction(ctx, 2*time.Second)
	if err != nil || !found || !o.Held || o.Owner != "replica-a" || o.HeldFor <= 0 || o.HeldFor > 2*time.Second {
		t.Fatalf("orphan while leased: %+v, %v, %v", o, found, err)
	}
	if _, err := s.IngestAlerts(ctx, []model.Alert{{Fingerprint: "00000000000000b2", StartsAt: startsAt, Status: "firing",
		Alertname: "ServiceUnhealthy", Labels: map[string]string{"alertname": "ServiceUnhealthy", "service": "llm"},
		Remediation: "service-down"}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	second := claimAll(t, s, 1)[0]
	if second.Job().ID == other.Job().ID {
		t.Fatal("claimed the held job twice")
	}
	if ok, err := second.LockTarget(ctx, "llm"); err != nil || ok {
		t.Fatalf("the target of a running action could be locked by another job: %v, %v", ok, err)
	}
	second.Release()
	other.Release()
	// Renewed, it stays held; the renewal by another owner is refused.
	time.Sleep(time.Second)
	if resolved, err := owner.Renew(ctx, 2*time.Second); err != nil || resolved {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the first lease, within the renewed one
	other = claimAll(t, s, 1)[0]
	if o, _, _ := other.OrphanedAction(ctx, 2*time.Second); !o.Held {
		t.Fatalf("a renewed lease lapsed: %+v", o)
	}
	other.Release()
	// Not renewed, it lapses: the action may be taken over, and the next
	// step waits for its deadline.
	time.Sleep(2100 * time.Millisecond)
	other = claimAll(t, s, 1)[0]
	o, _, _ = other.OrphanedAction(ctx, 2*time.Second)
	if o.Held || o.RunsFor < 20*time.Second || o.RunsFor > 30*time.Second {
		t.Fatalf("a lapsed lease: %+v; want not held, running on for its timeout", o)
	}
	if err := other.Finish(ctx, model.Outcome{State: model.JobInterrupted, Target: "llm", ActionID: o.ActionID,
		ActionStatus: model.ActionInterrupted, FollowUp: &model.FollowUp{After: o.RunsFor}}); err != nil {
		t.Fatal(err)
	}
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs WHERE step = 2 AND not_before > now() + interval '20 seconds'`); n != 1 {
		t.Error("the next step does not wait for the interrupted action's deadline")
	}
	if _, err := owner.Renew(ctx, time.Minute); !errors.Is(err, model.ErrTakenOver) {
		t.Fatalf("renew after a takeover: %v", err)
	}
	err = owner.Finish(ctx, model.Outcome{State: model.JobDone, Result: model.OutcomeSucceeded, Target: "llm", ActionID: a.ActionID,
		ActionStatus: model.ActionSucceeded})
	if !errors.Is(err, model.ErrTakenOver) {
		t.Fatalf("finish after a takeover: %v", err)
	}
	if n := one(t, conn, `SELECT count(*) FROM recovery_actions WHERE id = $1 AND status = 'interrupted'`, a.ActionID); n != 1 {
		t.Error("the late outcome overwrote the takeover")
	}
	if n := one(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'outcome_after_takeover'`); n != 1 {
		t.Error("the late outcome is not recorded as an event")
	}
}

// TestActionOutlivesADatabaseRestart: PostgreSQL restarted while an action
// runs. The owner's claim held no connection, so nothing of it is lost:
// it renews its lease once the server is back and records its outcome; a
// worker that finds the job in the meantime finds it held.
func TestActionOutlivesADatabaseRestart(t *testing.T) {
	t.Parallel()
	cl := pgtest.NewCluster(t)
	dsn := cl.URL()
	ctx := context.Background()
	s, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	owner := claimAll(t, s, 1)[0]
	const lease = 5 * time.Second
	a, err := owner.RecordIntent(ctx, model.Intent{Target: "llm", Action: "stop_start", Category: "A", Attempt: 1,
		Owner: "replica-a", Lease: lease, Timeout: time.Minute})
	if err != nil || a.ActionID == 0 {
		t.Fatalf("intent: %+v, %v", a, err)
	}
	cl.Stop()
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	// The server started a moment ago: whatever the lease says, its owner
	// gets a lease's time to renew it.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE recovery_actions SET lease_until = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE remediation_jobs SET not_before = now()`); err != nil {
		t.Fatal(err)
	}
	// The pool's connections died with the server: the first use of each
	// fails, as a worker's next look would, and it tries again.
	again := func(what string, f func() error) {
		t.Helper()
		var err error
		for range 10 {
			if err = f(); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s after the restart: %v", what, err)
	}
	again("claim and find the action held", func() error {
		other, err := s.ClaimJob(ctx, model.ClaimFilter{Known: []string{"service-down"}})
		if err != nil || other == nil {
			return fmt.Errorf("claim: %v, %w", other, err)
		}
		defer other.Release()
		if o, found, err := other.OrphanedAction(ctx, lease); err != nil || !found || !o.Held {
			t.Fatalf("just after the restart: %+v, %v, %v; want held", o, found, err)
		}
		return nil
	})
	again("renew", func() error { _, err := owner.Renew(ctx, lease); return err })
	again("finish", func() error {
		return owner.Finish(ctx, model.Outcome{State: model.JobDone, Result: model.OutcomeSucceeded, Target: "llm",
			ActionID: a.ActionID, ActionStatus: model.ActionSucceeded})
	})
	if n := one(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'succeeded'`); n != 1 {
		t.Fatal("the outcome is not recorded")
	}
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'done' AND outcome = 'succeeded'`); n != 1 {
		t.Fatal("the job is not finished")
	}
}

// TestRetryIsBounded: a job whose handling fails is given back with a
// growing backoff, counted, and refused with an event after its attempts;
// the error stored is bounded however long it is.
func TestRetryIsBounded(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("value too long: " + strings.Repeat("x", 1<<20))
	for attempt := 1; attempt <= 3; attempt++ {
		if _, err := conn.Exec(ctx, `UPDATE remediation_jobs SET not_before = now()`); err != nil {
			t.Fatal(err)
		}
		c := claimAll(t, s, 1)[0]
		refused, err := c.Retry(ctx, cause, 3)
		if err != nil || refused != (attempt == 3) {
			t.Fatalf("attempt %d: refused %v, %v", attempt, refused, err)
		}
		if attempt < 3 {
			if n := one(t, conn, `SELECT count(*) FROM remediation_jobs WHERE attempts = $1 AND state = 'queued'
				AND not_before BETWEEN now() + ($2 - 0.5) * interval '1 second' AND now() + ($2 + 0.5) * interval '1 second'`,
				attempt, 1<<(attempt-1)); n != 1 {
				t.Fatalf("attempt %d: not counted with its backoff", attempt)
			}
		}
	}
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'done' AND outcome = 'refused'
		AND reason LIKE 'the job could not be handled in 3 attempts%' AND length(reason) < 2000`); n != 1 {
		t.Fatal("the job is not refused with a bounded reason")
	}
	if n := one(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'job_failed' AND severity = 'ERROR'`); n != 1 {
		t.Fatal("no job_failed event")
	}
}

// TestFleetNamesBelongToOneNode: a node's role cannot take another node's
// name or stamp its own heartbeat; every name is one node's, an exact name
// winning over an alias; a node changes only its own replicas rows; and a
// target lock is per node.
func TestFleetNamesBelongToOneNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin, dsn := migrated(t)
	a, b, c := uniqueNode("edge-a"), uniqueNode("edge-b"), uniqueNode("edge-c")
	nodeA, connA := enrolled(t, admin, dsn, a, false)
	nodeB, connB := enrolled(t, admin, dsn, b, false)
	beat := func(s *store.Store, name string, names ...string) []string {
		t.Helper()
		refused, err := s.NodeHeartbeat(ctx, model.NodeBeat{Name: name, Names: append([]string{name}, names...), Engine: name + "-engine"})
		if err != nil {
			t.Fatalf("heartbeat of %s: %v", name, err)
		}
		return refused
	}
	// A claims B's name and a name no node holds yet (C's, before C is
	// enrolled): B's is refused, the other is A's until C exists.
	if refused := beat(nodeA, a, b, c, "10.0.0.1"); len(refused) != 1 || refused[0] != b {
		t.Fatalf("A's heartbeat refused %v, want [%s]", refused, b)
	}
	beat(nodeB, b)
	adminConn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer adminConn.Close(ctx)
	resolve := func(label, service string) string {
		t.Helper()
		alert := fleetAlert(label, service)
		if _, err := admin.IngestAlerts(ctx, []model.Alert{alert}, time.Minute); err != nil {
			t.Fatal(err)
		}
		var node string
		if err := adminConn.QueryRow(ctx, `SELECT node FROM alert_occurrences WHERE fingerprint = $1`, alert.Fingerprint).Scan(&node); err != nil {
			t.Fatal(err)
		}
		return node
	}
	if got := resolve(b, "x"); got != b {
		t.Errorf("an alert for %s went to %s", b, got)
	}
	if got := resolve("10.0.0.1", "x"); got != a {
		t.Errorf("an alert for A's alias went to %s", got)
	}
	if got := resolve(c, "x"); got != a {
		t.Errorf("an alert for A's alias %s (no node of that name yet) went to %s", c, got)
	}
	enrolled(t, admin, dsn, c, false) // C's own name wins from now on
	if got := resolve(c, "y"); got != c {
		t.Errorf("after C's enrolment an alert for %s went to %s", c, got)
	}

	// Written by hand, the database refuses it.
	refusedBy := func(conn *pgx.Conn, sql string, args ...any) {
		t.Helper()
		_, err := conn.Exec(ctx, sql, args...)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || (pgErr.Code != "42501" && pgErr.Code != "23505") {
			t.Errorf("%s: want it refused, got %v", sql, err)
		}
	}
	refusedBy(connA, `UPDATE nodes SET names = names || $1::text WHERE name = $2`, b, a)
	refusedBy(connA, `UPDATE nodes SET last_heartbeat = '2126-01-01' WHERE name = $1`, a)
	refusedBy(connA, `INSERT INTO node_names (name, node) VALUES ('x', $1)`, a)
	refusedBy(connA, `SELECT selfheal_claim_node_names($1, ARRAY[$1])`, b)
	// A heartbeat by the rules is fine.
	beat(nodeA, a, "10.0.0.1")

	// replicas: all readable, only one's own changeable.
	if _, _, err := nodeB.Heartbeat(ctx, model.Replica{ID: "b-replica", Host: "hb", ConfigFingerprint: "f"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := one(t, connA, `SELECT count(*) FROM replicas WHERE id = 'b-replica'`); n != 1 {
		t.Error("A cannot see B's replica")
	}
	for _, q := range []string{`UPDATE replicas SET config_fingerprint = 'faked' WHERE id = 'b-replica'`, `DELETE FROM replicas WHERE id = 'b-replica'`} {
		if tag, err := connA.Exec(ctx, q); err != nil || tag.RowsAffected() != 0 {
			t.Errorf("%s as A: %d rows, %v", q, tag.RowsAffected(), err)
		}
	}
	refusedBy(connA, `INSERT INTO replicas (id, host, config_fingerprint, node) VALUES ('fake', 'h', 'f', $1)`, b)
	if n := one(t, connB, `SELECT count(*) FROM replicas WHERE id = 'b-replica' AND config_fingerprint = 'f'`); n != 1 {
		t.Error("B's replica row was changed")
	}

	// The same target name on two nodes is two targets.
	if _, err := admin.IngestAlerts(ctx, []model.Alert{fleetAlert(a, "llm-service"), fleetAlert(b, "llm-service")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	ca, err := nodeA.ClaimJob(ctx, model.ClaimFilter{Known: []string{"service-down"}, Nodes: []string{a}})
	if err != nil || ca == nil {
		t.Fatal(ca, err)
	}
	defer ca.Release()
	cb, err := nodeB.ClaimJob(ctx, model.ClaimFilter{Known: []string{"service-down"}, Nodes: []string{b}})
	if err != nil || cb == nil {
		t.Fatal(cb, err)
	}
	defer cb.Release()
	for _, cl := range []*store.Claim{ca, cb} {
		if ok, err := cl.LockTarget(ctx, "llm-service"); err != nil || !ok {
			t.Errorf("node %s could not lock its own llm-service: %v, %v", cl.Job().Node, ok, err)
		}
	}
}

// TestOncePerWindowAtOnce: the "at most once" rules hold when asked for at
// the same moment — a reboot guard's window, and the alert selfheal raises
// itself, whose occurrence (and so whose reboot job) is one however many
// replicas raise it.
func TestOncePerWindowAtOnce(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	const n = 6
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := s.StartReboot(ctx, store.Reboot{Reason: fmt.Sprint("test ", i), BootID: "b"}, store.RebootGuard{Window: time.Hour, MaxPerDay: 3})
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	started, guarded := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			started++
		case errors.Is(err, store.ErrRebootGuard):
			guarded++
		default:
			t.Fatal(err)
		}
	}
	if started != 1 || guarded != n-1 {
		t.Fatalf("%d reboots started at once, %d refused by the guard; want 1 and %d", started, guarded, n-1)
	}

	start = make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, err := s.RaiseOwnAlert(ctx, "00000000000000ce", time.Hour, func(since time.Time, firing bool) *model.Alert {
				at := startsAt.Add(time.Duration(i) * time.Millisecond) // each replica's own clock
				if firing {
					at = since
				}
				return &model.Alert{Fingerprint: "00000000000000ce", StartsAt: at, Status: "firing", Alertname: "CriticalEventsThreshold",
					Labels: map[string]string{"alertname": "CriticalEventsThreshold"}, Remediation: "service-down"}
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := one(t, conn, `SELECT count(*) FROM alert_occurrences WHERE fingerprint = '00000000000000ce'`); got != 1 {
		t.Fatalf("%d occurrences of the alert raised at once by %d replicas, want 1", got, n)
	}
	if got := one(t, conn, `SELECT count(*) FROM remediation_jobs`); got != 1 {
		t.Fatalf("%d jobs, want 1", got)
	}
}
