package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/remediator/model"
	"github.com/selfheal/selfheal/remediator/store"
)

var startsAt = time.Date(2026, 11, 26, 22, 31, 53, 652000000, time.UTC)

func alert(status string) model.Alert {
	return model.Alert{
		Fingerprint: "d03bb581f83ed40e", StartsAt: startsAt, Status: status, Alertname: "ServiceDown",
		Labels: map[string]string{"alertname": "ServiceDown", "service": "llm"}, Remediation: "service-down",
		EndsAt: startsAt.Add(10 * time.Second),
	}
}

func one(t *testing.T, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func TestIngestConcurrentDuplicatesQueueOneJob(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := s.IngestAlerts(context.Background(), []model.Alert{alert("firing")}, time.Minute)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences`); n != 1 {
		t.Errorf("%d occurrences, want 1", n)
	}
	if n := one(t, conn, `SELECT deliveries FROM alert_occurrences`); n != 20 {
		t.Errorf("deliveries = %d, want 20", n)
	}
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs`); n != 1 {
		t.Errorf("%d jobs, want 1", n)
	}
}

// Several deliveries stored in one statement each get what they changed:
// their own jobs queued and cancelled, never another's.
func TestIngestDeliveriesCountsEachApart(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	other := func(fp, status, remediation string) model.Alert {
		a := alert(status)
		a.Fingerprint, a.Remediation = fp, remediation
		a.Labels = map[string]string{"alertname": "ServiceDown", "service": fp}
		return a
	}
	if _, err := s.IngestAlerts(ctx, []model.Alert{other("00000000000000c1", "firing", "service-down")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	res, err := s.IngestDeliveries(ctx, [][]model.Alert{
		{other("00000000000000a1", "firing", "service-down"), other("00000000000000a2", "firing", "service-down")},
		{other("00000000000000b1", "firing", "")},
		{},
		{other("00000000000000c1", "resolved", "service-down")},
	}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := []model.IngestResult{{JobsQueued: 2, Nodes: []string{""}}, {}, {}, {JobsCancelled: 1}}
	if len(res) != len(want) {
		t.Fatalf("%d results for 4 deliveries", len(res))
	}
	for i := range want {
		if res[i].JobsQueued != want[i].JobsQueued || res[i].JobsCancelled != want[i].JobsCancelled ||
			len(res[i].Nodes) != len(want[i].Nodes) || res[i].Waiting != 0 {
			t.Errorf("delivery %d: %+v, want %+v", i, res[i], want[i])
		}
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences`); n != 4 {
		t.Errorf("%d occurrences, want 4", n)
	}
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued'`); n != 2 {
		t.Errorf("%d queued jobs, want 2", n)
	}
}

func TestIngestUnmatchedAlertQueuesNothing(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	a := alert("firing")
	a.Remediation = ""
	res, err := s.IngestAlerts(context.Background(), []model.Alert{a}, time.Minute)
	if err != nil || res.JobsQueued != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences WHERE remediation IS NULL`); n != 1 {
		t.Errorf("unmatched alert not persisted")
	}
}

func TestResolvedCancelsQueuedStepsAndStaysResolved(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	res, err := s.IngestAlerts(ctx, []model.Alert{alert("resolved")}, time.Minute)
	if err != nil || res.JobsCancelled != 1 {
		t.Fatalf("resolve: %+v %v", res, err)
	}
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'cancelled'`); n != 1 {
		t.Error("queued step not cancelled")
	}
	if n := one(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'alert_resolved' AND message = 'ServiceDown resolved after 00:00:10'`); n != 1 {
		t.Error("no recovery-time event")
	}
	// A late firing delivery (retries can reorder) neither reopens the
	// occurrence nor queues a job.
	res, err = s.IngestAlerts(ctx, []model.Alert{alert("firing")}, 0)
	if err != nil || res.JobsQueued != 0 {
		t.Fatalf("late firing: %+v %v", res, err)
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences WHERE status = 'resolved' AND ends_at IS NOT NULL`); n != 1 {
		t.Error("occurrence did not stay resolved")
	}
	// A second resolved delivery records nothing new.
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("resolved")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := one(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'alert_resolved'`); n != 1 {
		t.Errorf("%d resolved events, want 1", n)
	}
}

func TestReopenAfterFinishedJob(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	// While the job is queued, redeliveries add nothing, reopen or not.
	if res, _ := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, 0); res.JobsQueued != 0 {
		t.Fatal("queued a second job while the first is queued")
	}
	if _, err := conn.Exec(ctx, `UPDATE remediation_jobs SET state = 'done', outcome = 'succeeded', finished_at = now() - interval '10 minutes'`); err != nil {
		t.Fatal(err)
	}
	if res, _ := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Hour); res.JobsQueued != 0 {
		t.Fatal("reopened before reopen_after passed")
	}
	if res, _ := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, 5*time.Minute); res.JobsQueued != 1 {
		t.Fatal("still firing 10 minutes after the job finished: want step 2")
	}
	if n := one(t, conn, `SELECT max(step) FROM remediation_jobs`); n != 2 {
		t.Errorf("newest step %d, want 2", n)
	}
}

func TestResolveClearsEscalation(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE remediation_jobs SET state = 'done', outcome = 'escalated', target = 'llm', finished_at = now();
		INSERT INTO escalations (service_name, remediation, reason) VALUES ('llm', 'service-down', 'test'), ('other', 'service-down', 'test')`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("resolved")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := one(t, conn, `SELECT count(*) FROM escalations WHERE cleared_at IS NOT NULL AND service_name = 'llm'`); n != 1 {
		t.Error("escalation of the resolved target not cleared")
	}
	if n := one(t, conn, `SELECT count(*) FROM escalations WHERE cleared_at IS NULL AND service_name = 'other'`); n != 1 {
		t.Error("another target's escalation was cleared")
	}
}

func TestGroupOfThreeInOneTransaction(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	var alerts []model.Alert
	for _, fp := range []string{"a", "b", "c"} {
		a := alert("firing")
		a.Fingerprint = fp
		alerts = append(alerts, a)
	}
	alerts[2].Status = "bogus" // violates the CHECK: the whole delivery must fail
	if _, err := s.IngestAlerts(context.Background(), alerts, time.Minute); err == nil {
		t.Fatal("want an error")
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences`); n != 0 {
		t.Fatalf("%d occurrences persisted from a failed delivery: want all or nothing", n)
	}
	alerts[2].Status = "firing"
	res, err := s.IngestAlerts(context.Background(), alerts, time.Minute)
	if err != nil || res.JobsQueued != 3 {
		t.Fatalf("%+v %v", res, err)
	}
}

// TestDeliveryRepeatingAnAlert: an alert twice in one delivery (firing,
// then resolved) is one occurrence, resolved, and queues nothing; the
// delivery's other alerts are stored as usual.
func TestDeliveryRepeatingAnAlert(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	other := alert("firing")
	other.Fingerprint = "0000000000000001"
	res, err := s.IngestAlerts(context.Background(), []model.Alert{alert("firing"), other, alert("resolved")}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if res.JobsQueued != 1 {
		t.Fatalf("%d jobs queued, want 1 (the other alert's)", res.JobsQueued)
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences WHERE fingerprint = $1 AND status = 'resolved' AND deliveries = 1`,
		alert("firing").Fingerprint); n != 1 {
		t.Fatal("the repeated alert is not one resolved occurrence")
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences`); n != 2 {
		t.Fatalf("%d occurrences, want 2", n)
	}
}

// TestCriticalAlertIsOneCriticalEvent: a critical alert (a database lost)
// is one CRITICAL event when it first fires, however often it is delivered,
// and counts toward get_critical_events_count.
func TestCriticalAlertIsOneCriticalEvent(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	a := alert("firing")
	a.Alertname, a.Remediation, a.Critical = "DatabaseDown", "critical-recovery", true
	for range 3 {
		if _, err := s.IngestAlerts(context.Background(), []model.Alert{a}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if n := one(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'critical_alert' AND severity = 'CRITICAL'`); n != 1 {
		t.Fatalf("%d critical_alert events, want 1", n)
	}
	if n := one(t, conn, `SELECT get_critical_events_count(30)`); n != 1 {
		t.Fatalf("get_critical_events_count(30) = %d, want 1", n)
	}
	plain := alert("firing")
	plain.Fingerprint = "0000000000000001"
	if _, err := s.IngestAlerts(context.Background(), []model.Alert{plain}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := one(t, conn, `SELECT get_critical_events_count(30)`); n != 1 {
		t.Fatalf("a non-critical alert counted: %d", n)
	}
}

// TestOutageCountsOnce: the same occurrence looked at again (a deferred job,
// another replica) is still one failure of its service.
func TestOutageCountsOnce(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	if _, err := s.IngestAlerts(context.Background(), []model.Alert{alert("firing")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		c, err := s.ClaimJob(context.Background(), model.ClaimFilter{})
		if err != nil || c == nil {
			t.Fatalf("claim: %v %v", c, err)
		}
		st, err := c.LoadState(context.Background(), model.StateQuery{Target: "llm", Remediation: "service-down",
			FailureWindow: 10 * time.Minute, StormWindow: time.Minute, CountOutage: true})
		if err != nil {
			t.Fatal(err)
		}
		if st.FailuresInWindow != 1 || !st.OutageCounted {
			t.Fatalf("state %+v: want one failure, the outage counted", st)
		}
		if err := c.Defer(context.Background(), 0, "again"); err != nil {
			t.Fatal(err)
		}
	}
	if n := one(t, conn, `SELECT get_service_failure_count('llm', 10)`); n != 1 {
		t.Fatalf("get_service_failure_count = %d, want 1", n)
	}
}

// TestLastTouch finds another occurrence's action on a target, as its
// target or among the containers it touches, and never the job's own
// occurrence's.
func TestLastTouch(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	other := alert("firing")
	other.Fingerprint, other.Alertname, other.Remediation = "00000000000000aa", "DatabaseDown", "critical-recovery"
	if _, err := s.IngestAlerts(ctx, []model.Alert{other}, time.Hour); err != nil {
		t.Fatal(err)
	}
	c, err := s.ClaimJob(ctx, model.ClaimFilter{})
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	if _, err := c.RecordIntent(ctx, model.Intent{Target: "application", Action: "hard_restart", Category: "C", Attempt: 1, Owner: "test", Lease: time.Minute,
		Details: map[string]any{"touches": []string{"db", "llm"}}}); err != nil {
		t.Fatal(err)
	}
	defer c.Release() // the hard restart runs on
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	c, err = s.ClaimJob(ctx, model.ClaimFilter{})
	if err != nil || c == nil || c.Job().Remediation != "service-down" {
		t.Fatal("no service-down job", err)
	}
	defer c.Release()
	touch, found, err := c.LastTouch(ctx, "llm", startsAt.Add(-10*time.Minute), takingDown)
	if err != nil || !found || !touch.Running || touch.Action != "hard_restart" {
		t.Fatalf("LastTouch(llm) = %+v, %v, %v", touch, found, err)
	}
	if _, found, _ := c.LastTouch(ctx, "other", startsAt.Add(-10*time.Minute), takingDown); found {
		t.Fatal("found a touch of a container no action touched")
	}
	if n := one(t, conn, `SELECT count(*) FROM recovery_actions WHERE details->'touches' ? 'llm'`); n != 1 {
		t.Fatalf("%d actions record that they touch llm", n)
	}

	// In the lock's round trip, the same look; a lock refused is refused.
	locked, both, found, err := c.LockTargetAndLastTouch(ctx, "llm", startsAt.Add(-10*time.Minute), takingDown)
	if err != nil || !locked || !found || both != touch {
		t.Fatalf("LockTargetAndLastTouch(llm) = %v, %+v, %v, %v; want locked and %+v", locked, both, found, err, touch)
	}
	if locked, _, found, err := c.LockTargetAndLastTouch(ctx, "other", startsAt.Add(-10*time.Minute), takingDown); err != nil || !locked || found {
		t.Fatalf("LockTargetAndLastTouch(other) = %v, %v, %v; want locked, no touch", locked, found, err)
	}
	if locked, _, _, err := c.LockTargetAndLastTouch(ctx, "application", startsAt.Add(-10*time.Minute), takingDown); err != nil || locked {
		t.Fatalf("LockTargetAndLastTouch(application) = %v, %v; want refused: the hard restart runs on it", locked, err)
	}
}

// TestClaimLeavesUnknownRemediationsToOthers: a replica whose configuration
// lacks a job's remediation does not take the job — a replica that has it
// does — until it has waited UnknownAfter, and takes nothing it was told to
// skip.
func TestClaimLeavesUnknownRemediationsToOthers(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]model.ClaimFilter{
		"unknown here":    {Known: []string{"other"}, UnknownAfter: time.Hour},
		"told to skip it": {Known: []string{"service-down"}, Skip: []string{"service-down"}, UnknownAfter: time.Hour},
	} {
		if c, err := s.ClaimJob(ctx, f); err != nil || c != nil {
			t.Fatalf("%s: claimed %v, %v", name, c, err)
		}
	}
	c, err := s.ClaimJob(ctx, model.ClaimFilter{Known: []string{"service-down"}, UnknownAfter: time.Hour})
	if err != nil || c == nil {
		t.Fatalf("a replica that knows it: %v, %v", c, err)
	}
	c.Release()
	if _, err := conn.Exec(ctx, `UPDATE remediation_jobs SET created_at = now() - interval '2 hours'`); err != nil {
		t.Fatal(err)
	}
	c, err = s.ClaimJob(ctx, model.ClaimFilter{Known: []string{"other"}, UnknownAfter: time.Hour})
	if err != nil || c == nil {
		t.Fatalf("no replica knew it for an hour: %v, %v", c, err)
	}
	c.Release()
}

// TestHeartbeatCountsReplicasByConfiguration: replicas alive on one
// database are counted by whether they run the same configuration.
func TestHeartbeatCountsReplicasByConfiguration(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	for _, r := range []model.Replica{{ID: "a", ConfigFingerprint: "f1"}, {ID: "b", ConfigFingerprint: "f1"}, {ID: "c", ConfigFingerprint: "f2"}} {
		if _, _, err := s.Heartbeat(ctx, r, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	same, other, err := s.Heartbeat(ctx, model.Replica{ID: "a", ConfigFingerprint: "f1"}, time.Minute)
	if err != nil || same != 2 || other != 1 {
		t.Fatalf("same %d, other %d, %v; want 2, 1", same, other, err)
	}
}

// TestSequencePosition: a sequence's later steps carry their position; a
// job the alert queues again after reopen_after starts the sequence anew.
func TestSequencePosition(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := context.Background()
	ingest := func() {
		t.Helper()
		if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, 0); err != nil {
			t.Fatal(err)
		}
	}
	claim := func() *store.Claim {
		t.Helper()
		c, err := s.ClaimJob(ctx, model.ClaimFilter{Known: []string{"service-down"}})
		if err != nil || c == nil {
			t.Fatalf("claim: %v %v", c, err)
		}
		return c
	}
	ingest()
	c := claim()
	if c.Job().Step != 1 || c.Job().Position != 1 {
		t.Fatalf("first job: step %d position %d", c.Job().Step, c.Job().Position)
	}
	if err := c.Finish(ctx, model.Outcome{State: "done", Result: "succeeded", FollowUp: &model.FollowUp{Sequence: true, Position: 2}}); err != nil {
		t.Fatal(err)
	}
	c = claim()
	if c.Job().Step != 2 || c.Job().Position != 2 {
		t.Fatalf("the sequence's next job: step %d position %d", c.Job().Step, c.Job().Position)
	}
	if err := c.Finish(ctx, model.Outcome{State: "done", Result: "succeeded"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	ingest() // still firing, reopen_after passed
	c = claim()
	defer c.Release()
	if c.Job().Step != 3 || c.Job().Position != 1 {
		t.Fatalf("a reopening: step %d position %d, want 3 and 1", c.Job().Step, c.Job().Position)
	}
}

// TestTouchedContainers: each container an action touched beside its
// target is its own row under the same job, pointing at the job's action;
// the job still has exactly one action of its own.
func TestTouchedContainers(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	c, err := s.ClaimJob(ctx, model.ClaimFilter{})
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	adm, err := c.RecordIntent(ctx, model.Intent{Target: "gateway", Action: "restart", Category: "A", Attempt: 1})
	if err != nil {
		t.Fatal(err)
	}
	id := adm.ActionID
	began := time.Now()
	if err := c.Finish(ctx, model.Outcome{State: model.JobDone, Result: model.OutcomeFailed, Target: "gateway",
		ActionID: id, ActionStatus: model.ActionFailed, ActionError: "a dependent failed",
		Touched: []model.TouchedAction{
			{Target: "proxy", Action: "restart", Status: model.ActionSucceeded, Started: began, Ended: began.Add(time.Second)},
			{Target: "sidecar", Action: "restart", Status: model.ActionFailed, Error: "exited", Started: began, Ended: began.Add(2 * time.Second)},
		}}); err != nil {
		t.Fatal(err)
	}
	if n := one(t, conn, `SELECT count(*) FROM recovery_actions WHERE parent_action_id = $1
		AND job_id = (SELECT job_id FROM recovery_actions WHERE id = $1) AND remediation = 'service-down' AND category = 'A'`, id); n != 2 {
		t.Fatalf("%d rows under the action, want 2", n)
	}
	if n := one(t, conn, `SELECT count(*) FROM recovery_actions WHERE service_name = 'sidecar' AND status = 'failed'
		AND error_message = 'exited' AND completed_at - started_at = interval '2 seconds'`); n != 1 {
		t.Fatal("the failed dependent's row is not as recorded")
	}
	// The database still refuses a second action of the job's own.
	if _, err := conn.Exec(ctx, `INSERT INTO recovery_actions (service_name, action_type, status, job_id)
		SELECT 'gateway', 'restart', 'succeeded', job_id FROM recovery_actions WHERE id = $1`, id); err == nil {
		t.Fatal("a second action for the job was accepted")
	}
}

// TestCooldownUntil: an action with a cooldown records when it ends, for
// the dashboard's index-backed "Active cooldowns"; one without records none.
func TestCooldownUntil(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Hour); err != nil {
		t.Fatal(err)
	}
	c, err := s.ClaimJob(ctx, model.ClaimFilter{})
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	defer c.Release()
	adm, err := c.RecordIntent(ctx, model.Intent{Target: "llm", Action: "http", Category: "B", Attempt: 1,
		Details: map[string]any{"cooldown_seconds": 300.0}})
	if err != nil {
		t.Fatal(err)
	}
	id := adm.ActionID
	if n := one(t, conn, `SELECT count(*) FROM recovery_actions WHERE id = $1
		AND cooldown_until BETWEEN started_at + interval '299 seconds' AND started_at + interval '301 seconds'`, id); n != 1 {
		t.Fatal("cooldown_until not recorded")
	}
	if n := one(t, conn, `SELECT count(*) FROM recovery_actions WHERE cooldown_until IS NOT NULL`); n != 1 {
		t.Fatal("an action without a cooldown records one")
	}
}

// TestFastOccurrence: Alertmanager's alert belongs to the fast path's
// occurrence of the same remediation and target when it started after the
// fast path's event and no later than the join window after it healed;
// resolving the alert that joined resolves the fast path's occurrence.
func TestFastOccurrence(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	fast := alert("firing")
	fast.Fingerprint = "00000000000000f1"
	fast.Labels = map[string]string{"alertname": "ServiceDown", "service": "llm", "selfheal_path": "fast", "selfheal_target": "llm"}
	slow := alert("firing")
	slow.StartsAt = startsAt.Add(3 * time.Second)
	if _, err := s.IngestAlerts(ctx, []model.Alert{fast, slow}, time.Hour); err != nil {
		t.Fatal(err)
	}
	// The fast path healed it a second after the event.
	if _, err := conn.Exec(ctx, `UPDATE alert_occurrences SET status = 'resolved', resolved_at = starts_at + interval '1 second'
		WHERE fingerprint = '00000000000000f1'`); err != nil {
		t.Fatal(err)
	}
	c, err := s.ClaimJob(ctx, model.ClaimFilter{})
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	defer c.Release()
	for _, tc := range []struct {
		remediation, target string
		startsAt            time.Time
		want                bool
	}{
		{"service-down", "llm", startsAt.Add(3 * time.Second), true},
		{"service-down", "llm", startsAt.Add(-10 * time.Second), false}, // began before the event
		{"service-down", "llm", startsAt.Add(5 * time.Minute), false},   // long after it healed
		{"service-down", "n8n", startsAt.Add(3 * time.Second), false},
		{"other", "llm", startsAt.Add(3 * time.Second), false},
	} {
		_, found, err := c.FastOccurrence(ctx, tc.remediation, tc.target, tc.startsAt, time.Minute)
		if err != nil || found != tc.want {
			t.Errorf("FastOccurrence(%s, %s, %s) = %v, %v", tc.remediation, tc.target, tc.startsAt.Sub(startsAt), found, err)
		}
	}
	// Still firing (the fast path's restart failed): any later alert joins.
	if _, err := conn.Exec(ctx, `UPDATE alert_occurrences SET status = 'firing', resolved_at = NULL WHERE fingerprint = '00000000000000f1'`); err != nil {
		t.Fatal(err)
	}
	occ, found, err := c.FastOccurrence(ctx, "service-down", "llm", startsAt.Add(5*time.Minute), time.Minute)
	id := occ.ID
	if err != nil || !found || !occ.Firing || !occ.StartsAt.Equal(startsAt) {
		t.Fatalf("a firing fast occurrence was not joined: %v", err)
	}
	if _, err := conn.Exec(ctx, `UPDATE alert_occurrences SET joined_occurrence_id = $1 WHERE fingerprint = $2`, id, slow.Fingerprint); err != nil {
		t.Fatal(err)
	}
	resolved := slow
	resolved.Status = "resolved"
	if _, err := s.IngestAlerts(ctx, []model.Alert{resolved}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences WHERE id = $1 AND status = 'resolved'`, id); n != 1 {
		t.Fatal("resolving the joined alert left the fast path's occurrence firing")
	}
}

// TestIngestAndClaim: the alert and its job are stored and claimed in one
// transaction that the decision commits; until then no one else sees
// them. A decision that records nothing (Release), or a failed attempt
// (Retry, after a statement the database refused), still keeps the alert,
// its job back in the queue. With no job to claim the alert is committed
// at once.
func TestIngestAndClaim(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	known := model.ClaimFilter{Known: []string{"service-down"}}
	c, res, err := s.IngestAndClaim(ctx, []model.Alert{alert("firing")}, time.Hour, known, nil)
	if err != nil || c == nil || res.JobsQueued != 1 {
		t.Fatalf("IngestAndClaim = %v, %+v, %v", c, res, err)
	}
	if j := c.Job(); j.Remediation != "service-down" || j.Fingerprint != "d03bb581f83ed40e" || j.Step != 1 {
		t.Fatalf("claimed %+v, want the job the alert queued", j)
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences`); n != 0 {
		t.Fatalf("%d occurrences seen before the decision committed", n)
	}
	if other, err := s.ClaimJob(ctx, known); err != nil || other != nil {
		t.Fatalf("another claim took %v (%v)", other, err)
	}
	c.Release()
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs j JOIN alert_occurrences o ON o.id = j.occurrence_id WHERE j.state = 'queued'`); n != 1 {
		t.Fatalf("after Release: %d queued jobs with their occurrence, want 1", n)
	}

	c, err = s.ClaimJob(ctx, known)
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	if err := c.Finish(ctx, model.Outcome{State: model.JobDone, Result: model.OutcomeSkipped, Reason: "test"}); err != nil {
		t.Fatal(err)
	}

	second := alert("firing")
	second.Fingerprint, second.StartsAt = "00000000000000bb", startsAt.Add(time.Minute)
	c, _, err = s.IngestAndClaim(ctx, []model.Alert{second}, time.Hour, known, nil)
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	if _, err := c.LockTarget(ctx, "llm\x00"); err == nil { // aborts the transaction
		t.Fatal("PostgreSQL took a NUL byte in a text value")
	}
	if _, err := c.Retry(ctx, errors.New("test failure"), 5); err != nil {
		t.Fatal(err)
	}
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs j JOIN alert_occurrences o ON o.id = j.occurrence_id
		WHERE o.fingerprint = '00000000000000bb' AND j.state = 'queued' AND j.attempts = 1`); n != 1 {
		t.Fatalf("after a failed attempt: %d queued jobs of the alert with one attempt counted, want 1", n)
	}

	resolved := second
	resolved.Status = "resolved"
	c, res, err = s.IngestAndClaim(ctx, []model.Alert{resolved}, time.Hour, model.ClaimFilter{Skip: []string{"service-down"}}, nil)
	if err != nil || c != nil || res.JobsCancelled != 1 {
		t.Fatalf("IngestAndClaim with no job to claim = %v, %+v, %v", c, res, err)
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences WHERE status = 'resolved'`); n != 1 {
		t.Fatalf("%d resolved occurrences, want the one just stored", n)
	}

	// The gate refuses (a silence applies): nothing is stored.
	third := alert("firing")
	third.Fingerprint, third.StartsAt = "00000000000000cc", startsAt.Add(2*time.Minute)
	silenced := errors.New("silenced")
	jobs := one(t, conn, `SELECT count(*) FROM remediation_jobs`)
	c, _, err = s.IngestAndClaim(ctx, []model.Alert{third}, time.Hour, known, func() error { return silenced })
	if err != silenced || c != nil {
		t.Fatalf("IngestAndClaim through a gate that refuses = %v, %v", c, err)
	}
	if n := one(t, conn, `SELECT count(*) FROM alert_occurrences WHERE fingerprint = '00000000000000cc'`); n != 0 {
		t.Fatalf("%d occurrences stored through a gate that refused", n)
	}
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs`); n != jobs {
		t.Fatalf("%d jobs after a gate refused, %d before", n, jobs)
	}
}

// TestIngestAndClaimAtOnce: the fast path opening many outages at once,
// each in a transaction of its own, as OpenFast does: a claim that found
// another job than its alert's gives it back. No job is held by two claims
// at once, and every alert and its job are there once the claims end,
// whether the decision recorded something (Finish) or nothing (Release).
func TestIngestAndClaimAtOnce(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	const n = 12
	known := model.ClaimFilter{Known: []string{"service-down"}}
	var mu sync.Mutex
	held := map[int64]bool{}
	finished := 0
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			a := alert("firing")
			a.Fingerprint = fmt.Sprintf("%016x", i)
			c, _, err := s.IngestAndClaim(ctx, []model.Alert{a}, time.Hour, known, nil)
			if err != nil || c == nil {
				errs <- fmt.Errorf("alert %d: claim %v, %v", i, c, err)
				return
			}
			id := c.Job().ID
			mu.Lock()
			if held[id] {
				errs <- fmt.Errorf("job %d held by two claims at once", id)
			}
			held[id] = true
			mu.Unlock()
			let := func() { mu.Lock(); delete(held, id); mu.Unlock() } // before the commit that lets another take it
			if c.Job().Fingerprint != a.Fingerprint || i%2 == 0 {
				let()
				c.Release()
				return
			}
			let()
			if err := c.Finish(ctx, model.Outcome{State: model.JobDone, Result: model.OutcomeSkipped, Reason: "test"}); err != nil {
				errs <- err
				return
			}
			mu.Lock()
			finished++
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := one(t, conn, `SELECT count(*) FROM alert_occurrences`); got != n {
		t.Errorf("%d occurrences, want %d", got, n)
	}
	if got := one(t, conn, `SELECT count(*) FROM remediation_jobs`); got != n {
		t.Errorf("%d jobs, want %d", got, n)
	}
	if got := one(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued'`); got != n-finished {
		t.Errorf("%d jobs in the queue, want %d (all but the %d finished)", got, n-finished, finished)
	}
}
