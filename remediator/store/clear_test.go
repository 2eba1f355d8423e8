package store_test

import (
	"slices"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/store"
)

// TestClearTarget: after a clear the target's decision state counts
// nothing from before it — failures, escalations, the cooldown's last
// action — and its open escalation is closed by who cleared; a clear of one
// remediation leaves another's state alone; another target is untouched.
func TestClearTarget(t *testing.T) {
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
	state := func(target, remediation string) store.State {
		t.Helper()
		st, err := s.ReadState(ctx, store.StateQuery{Target: target, Remediation: remediation, FailureWindow: 10 * time.Minute, StormWindow: time.Minute})
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
