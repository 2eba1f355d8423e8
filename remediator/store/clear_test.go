package store_test

import (
	"slices"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/model"
	"github.com/selfheal/selfheal/remediator/store"
)

// TestClearTarget: after a clear the target's decision state counts
// nothing from before it — failures, escalations, the cooldown's last
// action — and its open escalation is closed by who cleared; a clear of one
// remediation leaves another's state alone; another target is untouched.
func TestClearTarget(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := t.Context()
	if _, err := conn.Exec(ctx, `
		INSERT INTO service_failures (service_name, failure_type, status, remediation)
		SELECT t, 'outage', 'detected', r FROM unnest(ARRAY['llm', 'llm', 'llm', 'api']) t, unnest(ARRAY['service-down', 'memory-high']) r;
		INSERT INTO escalations (service_name, remediation, escalate_to, reason)
		VALUES ('llm', 'service-down', 'critical-recovery', 'test'), ('api', 'service-down', 'critical-recovery', 'test');
		INSERT INTO recovery_actions (service_name, action_type, status, remediation)
		VALUES ('llm', 'restart', 'succeeded', 'service-down'), ('llm', 'restart', 'succeeded', 'memory-high')`); err != nil {
		t.Fatal(err)
	}
	state := func(target, remediation string) model.State {
		t.Helper()
		st, err := s.ReadState(ctx, model.StateQuery{Target: target, Remediation: remediation, FailureWindow: 10 * time.Minute, StormWindow: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := state("llm", "service-down"); st.FailuresInWindow != 3 || st.EscalatedAt.IsZero() || st.LastEscalationAt.IsZero() || st.LastActionAt.IsZero() {
		t.Fatalf("before the clear: %+v", st)
	}

	c, err := s.ClearTarget(ctx, store.Clear{Target: "llm", Remediation: "service-down", By: "alice", Reason: "fixed"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Escalations, []string{"service-down"}) || c.Failures != 3 || !slices.Equal(c.Cooldowns, []string{"service-down"}) {
		t.Errorf("cleared %+v", c)
	}
	if st := state("llm", "service-down"); st.FailuresInWindow != 0 || !st.EscalatedAt.IsZero() || !st.LastEscalationAt.IsZero() || !st.LastActionAt.IsZero() {
		t.Errorf("after the clear: %+v", st)
	}
	if st := state("llm", "memory-high"); st.FailuresInWindow != 3 || st.LastActionAt.IsZero() {
		t.Errorf("another remediation of the target, not cleared: %+v", st)
	}
	if st := state("api", "service-down"); st.FailuresInWindow != 1 || st.EscalatedAt.IsZero() {
		t.Errorf("another target: %+v", st)
	}
	var by string
	if err := conn.QueryRow(ctx, `SELECT cleared_by FROM escalations WHERE service_name = 'llm'`).Scan(&by); err != nil || by != "alice" {
		t.Errorf("escalation cleared by %q (%v)", by, err)
	}

	// A failure after the clear counts again; a clear of every
	// remediation reaches memory-high too.
	if _, err := conn.Exec(ctx, `INSERT INTO service_failures (service_name, failure_type, status, remediation, failure_time)
		VALUES ('llm', 'outage', 'detected', 'service-down', now() + interval '1 second')`); err != nil {
		t.Fatal(err)
	}
	if st := state("llm", "service-down"); st.FailuresInWindow != 1 {
		t.Errorf("a failure after the clear: %d counted", st.FailuresInWindow)
	}
	if _, err := s.ClearTarget(ctx, store.Clear{Target: "llm", By: "bob"}); err != nil {
		t.Fatal(err)
	}
	if st := state("llm", "memory-high"); st.FailuresInWindow != 0 || !st.LastActionAt.IsZero() {
		t.Errorf("after clearing every remediation: %+v", st)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM self_healing_events WHERE event_type = 'clear' AND service_name = 'llm'`).Scan(&n); err != nil || n != 2 {
		t.Errorf("%d clear events, want 2 (%v)", n, err)
	}
}

// TestClearWaitsForADecisionUnderWay: a clear while another worker (or
// replica) is deciding on the target comes wholly after that decision —
// the escalation it records is closed by the clear and its failure no
// longer counts — never between its read and its commit, which would
// leave the target escalated just after a person cleared it.
func TestClearWaitsForADecisionUnderWay(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	ctx := t.Context()
	if _, err := s.IngestAlerts(ctx, []model.Alert{alert("firing")}, time.Minute); err != nil {
		t.Fatal(err)
	}
	c, err := s.ClaimJob(ctx, model.ClaimFilter{Known: []string{"service-down"}})
	if err != nil || c == nil {
		t.Fatal(c, err)
	}
	defer c.Release()
	if ok, err := c.LockTarget(ctx, "llm"); err != nil || !ok {
		t.Fatal(ok, err)
	}

	cleared := make(chan error, 1)
	go func() {
		_, err := s.ClearTarget(ctx, store.Clear{Target: "llm", By: "alice"})
		cleared <- err
	}()
	select {
	case err := <-cleared:
		t.Fatalf("the clear finished while a decision on the target was under way (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	// The decision escalates and commits; only then does the clear go on.
	if err := c.Finish(ctx, model.Outcome{State: model.JobDone, Result: model.OutcomeEscalated, Target: "llm",
		Reason: "3 failures", Failure: &model.Failure{Type: "outage", Status: "detected"},
		Escalation: &model.Escalation{To: "critical-recovery", Reason: "3 failures"}}); err != nil {
		t.Fatal(err)
	}
	if err := <-cleared; err != nil {
		t.Fatal(err)
	}
	st, err := s.ReadState(ctx, model.StateQuery{Target: "llm", Remediation: "service-down", FailureWindow: 10 * time.Minute, StormWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if st.FailuresInWindow != 0 || !st.EscalatedAt.IsZero() || !st.LastEscalationAt.IsZero() {
		t.Errorf("after the clear: %+v, want nothing from the decision before it to count", st)
	}
}
