package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
)

// StateReader reads, changing nothing, the state a decision would meet now.
type StateReader interface {
	ReadState(ctx context.Context, q store.StateQuery) (store.State, error)
}

var _ StateReader = (*store.Store)(nil)

// Plan is what the engine would do if an alert with these labels started
// firing now: the same matching, target resolution, checks and Decide as a
// job meets, with nothing written and nothing touched.
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
	cfg := e.config()
	p := Plan{Labels: labels, Node: policy.AlertNode(labels)}
	r := cfg.Match(labels)
	if r == nil {
		p.Verdict, p.Reason = Skip, "no remediation matches the alert"
		return p, nil
	}
	p.Remediation, p.Category = r.Name, r.Category
	if why := cfg.Node.Foreign(labels); why != "" {
		p.Verdict, p.Reason = Skip, why
		return p, nil
	}
	target, err := r.RenderTarget(policy.TemplateData{Status: "firing", Labels: labels, StartsAt: time.Now()})
	if err != nil {
		p.Verdict, p.Reason = Refuse, err.Error()
		return p, nil
	}
	if canonical, err := e.canonical(ctx, r, target); err == nil {
		target = canonical
	}
	p.Target = target
	st, err := states.ReadState(ctx, StateQueryOf(cfg, r, target))
	if err != nil {
		return p, err
	}
	if countsOutage(r, store.Job{AlertStatus: "firing"}) {
		// The alert starting now would be one more outage.
		st.FailuresInWindow++
		st.OutageCounted = true
	}
	r, p.Cause = e.byCause(ctx, r, target, st, e.logger)
	if why := cfg.PausedByEnvironment; why != "" && !st.Paused {
		st.Paused, st.PauseReason = true, "this replica's environment says "+why
	}
	in := Input{Remediation: r, DryRun: cfg.IsDryRun(r), Limits: limitsOf(cfg), State: st, Step: 1}
	d := Decide(in, st.Now)
	step, _ := in.NextAction()
	exec := e.executors[step.Type]
	pctx, cancel := context.WithTimeout(ctx, permitTimeout)
	in.PermitErr = exec.Permit(pctx, action.Request{Target: target, Params: step.Params, Verify: verification(r.Verify), Labels: labels, Remediation: r.Name})
	cancel()
	if in.PermitErr != nil {
		p.Permit = in.PermitErr.Error()
	}
	if d.Verdict.Acts() {
		d = Decide(in, st.Now)
	}
	p.Failures, p.MaxFailures, p.EscalatedTo, p.Paused = st.FailuresInWindow, r.MaxFailures, st.EscalatedTo, st.Paused
	p.FailureWindow = r.FailureWindow.String()
	p.HeldBack, _ = HeldBack(r, st, st.Now)
	if cd := r.Cooldown.D(); cd > 0 && !st.LastActionAt.IsZero() && st.Now.Before(st.LastActionAt.Add(cd)) {
		until := st.LastActionAt.Add(cd).UTC()
		p.CooldownUntil = &until
	}
	if p.Cause != "" {
		d.Reason = p.Cause + ": " + d.Reason
	}
	p.Verdict, p.Reason, p.Action, p.Attempt = d.Verdict, d.Reason, d.Action.Type, d.Attempt
	if d.Verdict == Run || d.Verdict == DryRun {
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
