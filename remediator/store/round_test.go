package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/model"
)

// stormAlerts are n firing ServiceDown alerts, the i-th for service
// fmt.Sprintf("svc-%d", i%services).
func stormAlerts(n, services int) []model.Alert {
	var out []model.Alert
	for i := range n {
		svc := fmt.Sprintf("svc-%d", i%services)
		out = append(out, model.Alert{Fingerprint: fmt.Sprintf("%016x", i), StartsAt: startsAt, Status: "firing",
			Alertname: "ServiceDown", Labels: map[string]string{"alertname": "ServiceDown", "service": svc, "i": fmt.Sprint(i)},
			Remediation: "service-down"})
	}
	return out
}

// TestRound: a round takes the due jobs of the remediations named — not a
// sequence's later step, not one whose action started — locks the targets
// no one else holds, counts each target's outage once, reads each job's
// state as LoadState would, and records the jobs it settles with their
// events, leaving the rest queued.
func TestRound(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := context.Background()
	if _, err := s.IngestAlerts(ctx, stormAlerts(6, 3), time.Hour); err != nil {
		t.Fatal(err)
	}
	// A job whose action started (its worker died) and a sequence's second
	// step: not a round's.
	if _, err := conn.Exec(ctx, `INSERT INTO recovery_actions (service_name, action_type, status, job_id, remediation)
		SELECT 'svc-0', 'restart', 'running', min(id), 'service-down' FROM remediation_jobs`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `UPDATE remediation_jobs SET position = 2 WHERE id = (SELECT max(id) FROM remediation_jobs)`); err != nil {
		t.Fatal(err)
	}
	if r, err := s.ClaimRound(ctx, model.ClaimFilter{Known: []string{"service-down"}}, []string{"other"}, 10); err != nil || r != nil {
		t.Fatalf("a round of another remediation: %v, %v; want none", r, err)
	}
	// Another worker holds svc-2.
	held, err := s.ClaimJob(ctx, model.ClaimFilter{Known: []string{"service-down"}, ID: int64(one(t, conn,
		`SELECT min(j.id) FROM remediation_jobs j JOIN alert_occurrences o ON o.id = j.occurrence_id WHERE o.labels->>'service' = 'svc-2'`))})
	if err != nil || held == nil {
		t.Fatalf("claim by id: %v, %v", held, err)
	}
	if ok, err := held.LockTarget(ctx, "svc-2"); err != nil || !ok {
		t.Fatalf("lock svc-2: %v, %v", ok, err)
	}
	defer held.Release()

	r, err := s.ClaimRound(ctx, model.ClaimFilter{Known: []string{"service-down"}}, []string{"service-down"}, 10)
	if err != nil || r == nil {
		t.Fatalf("claim a round: %v, %v", r, err)
	}
	defer r.Release()
	jobs := r.Jobs()
	// 6 jobs: one with an action, one at position 2, one held: 3 left.
	if len(jobs) != 3 {
		t.Fatalf("round took %d jobs, want 3: %+v", len(jobs), jobs)
	}
	locked, err := r.LockTargets(ctx, []string{"svc-0", "svc-1", "svc-2"})
	if err != nil {
		t.Fatal(err)
	}
	if locked["svc-0"] || !locked["svc-1"] || locked["svc-2"] {
		t.Fatalf("locked %v: want svc-1 only, not svc-0 (an action runs on it) nor svc-2 (held by another claim)", locked)
	}
	touched, err := r.TouchedTargets(ctx, []string{"svc-0", "svc-1"}, startsAt.Add(-time.Minute), takingDown)
	if err != nil || !touched["svc-0"] || touched["svc-1"] {
		t.Fatalf("touched %v, %v: want svc-0 only (its restart runs)", touched, err)
	}
	var queries []model.RoundQuery
	for _, j := range jobs {
		queries = append(queries, model.RoundQuery{Job: j, StateQuery: model.StateQuery{Target: j.Labels["service"], Remediation: j.Remediation,
			FailureWindow: time.Hour, StormWindow: time.Hour, CountOutage: true}})
	}
	var states []model.State
	for range 2 { // counting again changes nothing
		if states, err = r.LoadStates(ctx, queries); err != nil {
			t.Fatal(err)
		}
	}
	for i, st := range states {
		if st.FailuresInWindow != 1 || !st.OutageCounted || st.ActionsInStormWindow != 1 || st.RunningActions != 1 {
			t.Errorf("job %d (%s): state %+v; want one failure, its outage counted, one action running", jobs[i].ID, queries[i].Target, st)
		}
	}
	if err := r.Finish(ctx, []model.Settled{{Job: jobs[0], Result: model.OutcomeSkipped, Target: "svc-x", Reason: "storm brake: test",
		Event: model.Event{Severity: model.SeverityWarning, Type: "decision", Message: "storm brake: test", Details: map[string]any{"verdict": "skipped"}}}}); err != nil {
		t.Fatal(err)
	}
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs WHERE id = $1 AND state = 'done' AND outcome = 'skipped'
		AND target = 'svc-x' AND reason = 'storm brake: test' AND finished_at IS NOT NULL`, jobs[0].ID); n != 1 {
		t.Fatal("the settled job is not recorded done")
	}
	if n := one(t, conn, `SELECT count(*) FROM self_healing_events WHERE job_id = $1 AND occurrence_id = $2 AND event_type = 'decision'
		AND severity = 'WARNING' AND service_name = 'svc-x' AND details->>'verdict' = 'skipped'`, jobs[0].ID, jobs[0].OccurrenceID); n != 1 {
		t.Fatal("the settled job's decision event is missing")
	}
	if n := one(t, conn, `SELECT count(*) FROM remediation_jobs WHERE id = ANY($1) AND state = 'queued'`,
		[]int64{jobs[1].ID, jobs[2].ID}); n != 2 {
		t.Fatalf("%d of the round's other jobs still queued, want 2", n)
	}
	// One outage per target (svc-1 twice in the round, svc-0 once), none
	// for svc-2, whose jobs the round did not take.
	if n := one(t, conn, `SELECT count(*) FROM service_failures WHERE failure_type = 'outage'`); n != 2 {
		t.Fatalf("%d outages recorded, want 2", n)
	}
}
