package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
)

// StateReader reads, changing nothing, what a decision would meet now.
type StateReader interface {
	ReadState(ctx context.Context, q model.StateQuery) (model.State, error)
	ReadLastTouch(ctx context.Context, target string, since time.Time, takingDown []string) (model.Touch, bool, error)
	ReadFastOccurrence(ctx context.Context, remediation, target string, startsAt time.Time, within time.Duration) (model.FastOccurrence, bool, error)
}

// Plan is what the engine would do if an alert with these labels started
// firing now: the same matching and the same pipeline as a job meets
// (pipeline), with nothing written and nothing touched.
type Plan struct {
	Labels      map[string]string `json:"labels"`
	Remediation string            `json:"remediation,omitempty"`
	Category    string            `json:"category,omitempty"`
	Node        string            `json:"node"`
	Target      string            `json:"target,omitempty"`
	// Permit is why the target may not be touched; empty when it may.
	Permit string `json:"permit"`
	// The state the decision meets.
	Failures      int        `json:"failures_in_window"`
	FailureWindow string     `json:"failure_window,omitempty"`
	MaxFailures   int        `json:"max_failures,omitempty"`
	CooldownUntil *time.Time `json:"cooldown_until"`
	EscalatedTo   string     `json:"escalated_to"`
	// HeldBack is why the per-target limits hold the target back (an open
	// escalation, a crash loop already escalated, the cooldown); empty
	// when they do not.
	HeldBack string  `json:"held_back"`
	Paused   bool    `json:"paused,omitempty"`
	Verdict  Verdict `json:"verdict"`
	Reason   string  `json:"reason"`
	Action   string  `json:"action,omitempty"`
	Attempt  int     `json:"attempt,omitempty"`
	// Touches are the containers the action would act on beside the
	// target (its dependents, its compose project), in order.
	Touches []string `json:"touches,omitempty"`
	// IfItFails is what follows a failure of the action.
	IfItFails string `json:"if_it_fails,omitempty"`
	// Evidence is what the action would keep of the target, read now
	// (action.Witness): its state and last log lines.
	Evidence any `json:"evidence,omitempty"`
	// Cause is the remediation's cause the evidence chose, and why; empty
	// when it has none or none applies (the ladder as configured).
	Cause string `json:"cause,omitempty"`
}

// Acts reports whether the plan would run (or, in dry-run, record) an action.
func (p Plan) Acts() bool { return p.Verdict == Run || p.Verdict == DryRun || p.Verdict == Defer }

// Plan says what the engine would do with an alert with labels that started
// firing now.
func (e *Engine) Plan(ctx context.Context, states StateReader, labels map[string]string) (Plan, error) {
	ctx = action.WithLook(ctx) // the target as one decision would see it
	cfg := e.config()
	p := Plan{Labels: labels, Node: policy.AlertNode(labels)}
	r := cfg.Match(labels)
	if r == nil {
		p.Verdict, p.Reason = Skip, "no remediation matches the alert"
		return p, nil
	}
	p.Remediation, p.Category = r.Name, r.Category
	now := time.Now()
	v := &planView{states: states}
	ps := &pass{cfg: cfg, v: v, log: e.logger, job: model.Job{Remediation: r.Name, Alertname: labels["alertname"],
		AlertStatus: "firing", Labels: labels, StartsAt: now, CreatedAt: now, Step: 1, Position: 1}}
	if err := e.decideAll(ctx, nil, []*pass{ps}); err != nil {
		return p, err
	}
	d := ps.d
	p.Target, p.Cause = ps.target, ps.cause
	p.Verdict, p.Reason, p.Action, p.Attempt = d.Verdict, d.Reason, d.Action.Type, d.Attempt
	if ps.target == "" || ps.r == nil {
		return p, nil
	}
	r = ps.r
	// What the decision met, shown even where a stage ended the way before
	// the state or the target check: the state as the alert would find it,
	// and whether the target may be touched.
	if !ps.stateLoaded {
		q := StateQueryOf(cfg, r, ps.target)
		q.CountOutage = countsOutage(r, ps.job)
		st, err := v.LoadState(ctx, q)
		if err != nil {
			return p, err
		}
		ps.st = st
	}
	in := inputFor(cfg, r, ps.job, ps.st)
	if ps.permitChecked {
		in.PermitErr = ps.in.PermitErr
	} else {
		step, _ := in.NextAction()
		pctx, cancel := context.WithTimeout(ctx, permitTimeout)
		in.PermitErr = e.executors[step.Type].Permit(pctx, stepRequest(r, step, ps.job, ps.target))
		cancel()
	}
	if in.PermitErr != nil {
		p.Permit = in.PermitErr.Error()
	}
	st := in.State
	p.Failures, p.MaxFailures, p.EscalatedTo, p.Paused = st.FailuresInWindow, r.MaxFailures, st.EscalatedTo, st.Paused
	p.FailureWindow = r.FailureWindow.String()
	p.HeldBack, _ = HeldBack(r, st, st.Now)
	if cd := r.Cooldown.D(); cd > 0 && !st.LastActionAt.IsZero() && st.Now.Before(st.LastActionAt.Add(cd)) {
		until := st.LastActionAt.Add(cd).UTC()
		p.CooldownUntil = &until
	}
	if d.Verdict == Run || d.Verdict == DryRun {
		target := ps.target
		p.IfItFails = ifItFails(r, in)
		if t, ok := e.executors[d.Action.Type].(action.Toucher); ok {
			tctx, cancel := context.WithTimeout(ctx, permitTimeout)
			touches, err := t.Touches(tctx, action.Request{Target: target, Params: d.Action.Params, Labels: labels, Remediation: r.Name})
			cancel()
			if err == nil {
				p.Touches = slices.DeleteFunc(touches, func(s string) bool { return s == target })
			}
		}
		if w, ok := e.executors[d.Action.Type].(action.Witness); ok {
			wctx, cancel := context.WithTimeout(ctx, evidenceTimeout)
			if ev, err := w.Evidence(wctx, action.Request{Target: target, Params: d.Action.Params, Labels: labels, Remediation: r.Name}); err == nil {
				p.Evidence = ev.Record
			}
			cancel()
		}
	}
	return p, nil
}

// planView is plan's view of the database: it reads what a job would, and
// writes nothing. The outage the alert would count is added to the state
// it reads.
type planView struct {
	states StateReader
}

func (*planView) LockTarget(context.Context, string) (bool, error) { return true, nil }

func (v *planView) FastOccurrence(ctx context.Context, remediation, target string, startsAt time.Time, within time.Duration) (model.FastOccurrence, bool, error) {
	return v.states.ReadFastOccurrence(ctx, remediation, target, startsAt, within)
}

func (v *planView) LastTouch(ctx context.Context, target string, since time.Time, takingDown []string) (model.Touch, bool, error) {
	return v.states.ReadLastTouch(ctx, target, since, takingDown)
}

func (v *planView) LoadState(ctx context.Context, q model.StateQuery) (model.State, error) {
	st, err := v.states.ReadState(ctx, q)
	if err == nil && q.CountOutage {
		// The alert starting now would be one more outage.
		st.FailuresInWindow++
		st.OutageCounted = true
	}
	return st, err
}

// ifItFails says what follows a failure of the planned action.
func ifItFails(r *policy.Remediation, in Input) string {
	if r.IsSequence() {
		var rest []string
		for _, s := range r.Steps[1:] {
			rest = append(rest, s.Type)
		}
		if len(rest) == 0 {
			return "the failure is counted; the sequence ends"
		}
		return "the failure is counted; the sequence goes on: " + strings.Join(rest, ", ")
	}
	failures := in.State.FailuresInWindow + 1
	if r.MaxFailures > 0 && failures >= r.MaxFailures {
		to := r.EscalateTo
		if to == "" {
			to = "nobody (no escalate_to)"
		}
		return fmt.Sprintf("%d failures within %s: escalate to %s", failures, r.FailureWindow, to)
	}
	next := in
	next.State.FailuresInWindow = failures
	action, attempt := next.NextAction()
	return fmt.Sprintf("%d failures within %s: %s (attempt %d)", failures, r.FailureWindow, action.Type, attempt)
}
