package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/model"
	"github.com/selfheal/selfheal/remediator/store"
)

// TestChronicTarget: a target with backdated remediations past the
// threshold is one chronic problem, with its history; the decision state
// counts them (across remediations, not dry runs or touched dependents);
// a selfheal clear ends it.
func TestChronicTarget(t *testing.T) {
	t.Parallel()
	s, conn := open(t)
	ctx := t.Context()
	if _, err := conn.Exec(ctx, `
		INSERT INTO recovery_actions (service_name, action_type, status, remediation, started_at)
		SELECT 'llm', CASE WHEN d % 2 = 0 THEN 'restart' ELSE 'stop_start' END, 'succeeded', 'service-down', now() - d * interval '1 day'
		FROM generate_series(1, 5) d;
		INSERT INTO recovery_actions (service_name, action_type, status, remediation, started_at)
		VALUES ('llm', 'restart', 'dry_run', 'service-down', now() - interval '1 hour'),
		       ('llm', 'restart', 'succeeded', 'memory-high', now() - interval '8 days'),
		       ('api', 'restart', 'succeeded', 'service-down', now() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	q := store.ProblemQuery{Lookback: time.Hour, PausedFor: time.Hour, ChronicMax: 5, ChronicWindow: 7 * 24 * time.Hour}
	chronic := func() []store.Problem {
		t.Helper()
		probs, err := s.OpenProblems(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var out []store.Problem
		for _, p := range probs {
			if p.Kind == "chronic" {
				out = append(out, p)
			}
		}
		return out
	}
	ps := chronic()
	if len(ps) != 1 || ps[0].Target != "llm" ||
		!strings.HasPrefix(ps[0].Reason, "5 remediations within 1w (limit 5): stop_start ×3, restart ×2; first ") {
		t.Fatalf("chronic problems %+v", ps)
	}
	sq := model.StateQuery{Target: "llm", Remediation: "other", FailureWindow: time.Minute,
		StormWindow: time.Minute, ChronicWindow: 7 * 24 * time.Hour, ChronicMax: 10}
	st, err := s.ReadState(ctx, sq)
	if err != nil || st.ChronicActions != 5 {
		t.Fatalf("state counts %d chronic actions (%v), want 5", st.ChronicActions, err)
	}
	// The count stops at the limit: a decision reads no more of a hot
	// target's history than the limit needs.
	sq.ChronicMax = 3
	if st, err := s.ReadState(ctx, sq); err != nil || st.ChronicActions != 3 {
		t.Fatalf("state counts %d chronic actions (%v) with a limit of 3, want 3", st.ChronicActions, err)
	}
	if q.ChronicMax = 6; len(chronic()) != 0 {
		t.Error("chronic below the threshold")
	}
	q.ChronicMax = 5
	if _, err := s.ClearTarget(ctx, store.Clear{Target: "llm", Remediation: "service-down", By: "alice"}); err != nil {
		t.Fatal(err)
	}
	if ps := chronic(); len(ps) != 0 {
		t.Errorf("chronic after a clear: %+v", ps)
	}
	if st, _ := s.ReadState(ctx, model.StateQuery{Target: "llm", Remediation: "other", ChronicWindow: 7 * 24 * time.Hour, ChronicMax: 10}); st.ChronicActions != 0 {
		t.Errorf("state counts %d chronic actions after a clear", st.ChronicActions)
	}
}
