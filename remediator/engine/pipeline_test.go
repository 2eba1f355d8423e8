package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/selfheal/selfheal/remediator/model"
)

// TestPipeline drives the engine's three paths through every stage of the
// pipeline, one case ending at each: a job handled alone, the same job in
// a round, and selfheal plan for its alert. Where a path can meet the
// case, it must reach the same verdict, for the same reason, at the same
// stage; a round settles only what runs nothing and leaves the rest to a
// decision of its own. A stage added to the pipeline without a case here
// fails the test.
func TestPipeline(t *testing.T) {
	transient := transientErr{errors.New("Docker away")}
	foreign := job("service-down", "llm", 1)
	foreign.Labels["node"] = "edge-02"
	unknown := job("gone", "llm", 1)
	empty := job("service-down", "", 1)
	for _, tc := range []struct {
		name    string
		stage   string
		job     model.Job
		state   model.State
		busy    bool
		touch   *model.Touch
		fast    *model.FastOccurrence
		exec    fakeExec
		verdict Verdict
		reason  string // a part of the decision's reason
		// plan: selfheal plan meets the case (it matches the remediation
		// itself and takes no lock); round: a round settles it.
		plan, round bool
	}{
		{name: "a remediation no configuration has", stage: "remediation", job: unknown,
			verdict: Refuse, reason: `no replica's configuration has remediation "gone"`},
		{name: "another node's alert", stage: "node", job: foreign,
			verdict: Skip, reason: "edge-02", plan: true, round: true},
		{name: "a target the template cannot render", stage: "target", job: empty,
			verdict: Refuse, reason: "empty", plan: true, round: true},
		{name: "a target that cannot be resolved now", stage: "target", job: job("service-down", "llm", 1),
			exec: fakeExec{canonErr: transient}, verdict: Defer, reason: reasonUnreachable, plan: true},
		{name: "a target another job holds", stage: "lock", job: job("service-down", "llm", 1), busy: true,
			verdict: Defer, reason: "another action on llm is in progress"},
		{name: "an outage the fast path opened", stage: "fast path", job: job("service-down", "llm", 1),
			fast: &model.FastOccurrence{ID: 41, Firing: true}, verdict: Skip, reason: "the fast path opened this outage", plan: true},
		{name: "selfheal's own action under way on the target", stage: "own outage", job: job("service-down", "llm", 1),
			touch:   &model.Touch{ActionID: 3, Action: "hard_restart", Remediation: "recovery", Running: true},
			verdict: Defer, reason: "selfheal's hard_restart (recovery, action 3) is acting on llm", plan: true},
		// The outage, state and cause stages decide nothing: each case
		// from here on goes through them (the count of outages shows it).
		// A round leaves these: service-down has a fast path, whose alerts
		// a round never decides (TestDecideRound has its decide stage).
		{name: "three failures: the ladder escalates", stage: "decide", job: job("service-down", "llm", 1),
			state: model.State{FailuresInWindow: 2}, verdict: Escalate, reason: "3 failures within 10m", plan: true},
		{name: "the target not opted in", stage: "decide", job: job("service-down", "llm", 1),
			exec: fakeExec{permit: errors.New("llm lacks the opt-in label")}, verdict: Refuse, reason: "lacks the opt-in label", plan: true},
		{name: "paused", stage: "decide", job: job("service-down", "llm", 1),
			state: model.State{Paused: true, PauseReason: "disk swap"}, verdict: Skip, reason: "disk swap", plan: true},
		{name: "a restart", stage: "decide", job: job("service-down", "llm", 1),
			verdict: Run, reason: "running restart (attempt 1", plan: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The pipeline itself, through a claim's view.
			execs := map[string]*fakeExec{"restart": &tc.exec}
			e := newTestEngine(t, execs)
			c := &fakeClaim{job: tc.job, state: tc.state, busy: tc.busy, touch: tc.touch, fast: tc.fast}
			p := &pass{cfg: e.config(), job: tc.job, v: c, log: e.logger}
			if err := e.decideAll(context.Background(), nil, []*pass{p}); err != nil {
				t.Fatal(err)
			}
			if !p.decided || p.stage != tc.stage || p.d.Verdict != tc.verdict || !strings.Contains(p.d.Reason, tc.reason) {
				t.Fatalf("decided at %q: %s %q, want %s at %q (%q)", p.stage, p.d.Verdict, p.d.Reason, tc.verdict, tc.stage, tc.reason)
			}
			if counted := len(c.outages) == 1; counted != (tc.stage == "decide") {
				t.Errorf("outage counted %v at stage %s", counted, tc.stage)
			}

			// handle: the same decision, carried out.
			c = &fakeClaim{job: tc.job, state: tc.state, busy: tc.busy, touch: tc.touch, fast: tc.fast}
			if err := e.handle(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.verdict == Defer:
				if !strings.Contains(c.deferred, tc.reason) || c.outcome != nil {
					t.Errorf("handle: deferred %q, outcome %+v", c.deferred, c.outcome)
				}
			case tc.verdict == Run:
				if c.outcome == nil || c.outcome.Result != model.OutcomeSucceeded || len(tc.exec.ran) != 1 {
					t.Errorf("handle: outcome %+v, %d runs", c.outcome, len(tc.exec.ran))
				}
			default:
				if c.outcome == nil || c.outcome.Result != tc.verdict.Outcome() || !strings.Contains(c.outcome.Reason, tc.reason) {
					t.Errorf("handle: outcome %+v", c.outcome)
				}
			}

			// A round: settled as handle would, or left to it.
			r := &fakeRound{jobs: []model.Job{tc.job}, states: map[string]model.State{"llm": tc.state},
				busy: map[string]bool{"llm": tc.busy}, touched: map[string]bool{"llm": tc.touch != nil}}
			n, left, err := e.decideRound(context.Background(), e.config(), r)
			if err != nil {
				t.Fatal(err)
			}
			if tc.round {
				if n != 1 || len(r.settled) != 1 || r.settled[0].Result != tc.verdict.Outcome() || !strings.Contains(r.settled[0].Reason, tc.reason) {
					t.Errorf("round: settled %+v, left %v", r.settled, left)
				}
			} else if n != 0 || len(left) != 1 {
				t.Errorf("round: settled %+v, want the job left to a decision of its own", r.settled)
			}

			// selfheal plan for the alert, starting now.
			if !tc.plan {
				return
			}
			plan, err := e.Plan(context.Background(), fakeStates{st: tc.state, touch: tc.touch, fast: tc.fast}, tc.job.Labels)
			if err != nil {
				t.Fatal(err)
			}
			if plan.Verdict != tc.verdict || !strings.Contains(plan.Reason, tc.reason) {
				t.Errorf("plan: %s %q, want %s (%q)", plan.Verdict, plan.Reason, tc.verdict, tc.reason)
			}
		})
	}
	// Every stage has a case, or decides nothing by design.
	covered := map[string]bool{"state": true, "cause": true}
	for _, name := range []string{"remediation", "node", "target", "lock", "fast path", "own outage", "decide"} {
		covered[name] = true
	}
	for _, s := range pipeline {
		if !covered[s.name] {
			t.Errorf("stage %q has no case in TestPipeline", s.name)
		}
	}
}
