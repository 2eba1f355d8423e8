package engine

// One job, claimed: its own interrupted action first, then the pipeline
// (pipeline.go), then what the decision calls for — wait, act (execute.go)
// or record a decision that runs nothing.

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
)

// permitTimeout bounds the read-only target check before a decision.
const permitTimeout = 5 * time.Second

// handle decides the claimed job through the pipeline and carries the
// decision out. An action of the job's own that never recorded its outcome
// comes first: that is the job's past, not a decision on its alert.
func (e *Engine) handle(ctx context.Context, c Claim) error {
	// The job runs under the policy it started with, whatever a reload does.
	cfg := e.config()
	j := c.Job()
	log := e.logger.With("job", j.ID, "remediation", j.Remediation, "alertname", j.Alertname, "step", j.Step)
	if handled, err := e.recoverOrphan(ctx, c, cfg, log); handled || err != nil {
		return err
	}
	p := &pass{cfg: cfg, job: j, v: c, log: log}
	// The decision's checks share one look at the target (the action that
	// follows has a look of its own: run).
	if err := e.decideAll(action.WithLook(ctx), nil, []*pass{p}); err != nil {
		return err
	}
	return e.settle(ctx, c, p)
}

// recoverOrphan deals with an action of the job that has not recorded its
// outcome, and reports whether there was one. While its owner's lease
// holds, the owner is running it (perhaps through a database restart):
// wait, counting nothing. Once the lease has lapsed the owner is gone:
// record that the action was interrupted, with an unknown effect, and
// never run it again. It is a failure of the target, and the remediation
// goes on — the ladder's next step (which first checks whether the target
// came back) or a sequence's — once the interrupted action's own timeout
// has passed, so that a step never runs while the one before it may still
// run.
func (e *Engine) recoverOrphan(ctx context.Context, c Claim, cfg *policy.Config, log *slog.Logger) (bool, error) {
	j := c.Job()
	orphan, orphaned, err := c.OrphanedAction(ctx, actionLease)
	switch {
	case err != nil || !orphaned:
		return false, err
	case orphan.Held:
		e.m.deferred.Inc()
		return true, c.Defer(ctx, max(orphan.HeldFor, 100*time.Millisecond), fmt.Sprintf(
			"%s of %s (action %d) is still running, held by %s", orphan.Action, orphan.Target, orphan.ActionID, orphan.Owner))
	}
	log.Warn("marking an interrupted action", "action_id", orphan.ActionID, "target", orphan.Target, "owner", orphan.Owner)
	e.m.jobs.WithLabelValues(string(model.JobInterrupted)).Inc()
	followUp := &model.FollowUp{}
	if r := cfg.Remediation(j.Remediation); r != nil && r.IsSequence() {
		followUp = nextInSequence(r, j)
	}
	if followUp != nil {
		followUp.After = orphan.RunsFor
	}
	const why = "its worker stopped renewing its lease between intent and outcome (selfheal stopped, or lost the database for longer than the lease)"
	return true, c.Finish(ctx, model.Outcome{
		State: model.JobInterrupted, Reason: "interrupted: " + why, Target: orphan.Target,
		ActionID: orphan.ActionID, ActionStatus: model.ActionInterrupted,
		ActionError: why + "; the effect is unknown",
		Failure:     &model.Failure{Type: orphan.Action, Status: string(model.ActionInterrupted)},
		FollowUp:    followUp,
		Events: []model.Event{{Severity: model.SeverityError, Type: "action_interrupted", Target: orphan.Target,
			Details: map[string]any{"action_id": orphan.ActionID, "owner": orphan.Owner, "next_step_after_seconds": orphan.RunsFor.Seconds()},
			Message: fmt.Sprintf("%s of %s was interrupted (%s); it is not repeated, and the remediation goes on once its timeout has passed (in %s)",
				orphan.Action, orphan.Target, why, orphan.RunsFor.Round(time.Second))}},
	})
}

// byCause returns r as the cause its target's evidence shows makes it
// (policy.Remediation.ForCause), and which cause; r and "" when no cause
// could matter in state st, none applies or the evidence cannot be read
// (then the ladder runs as configured). The state a decision reads is the
// same under every cause: the remediation's name and window.
func (e *Engine) byCause(ctx context.Context, r *policy.Remediation, target string, st model.State, log *slog.Logger) (*policy.Remediation, string) {
	if !r.CauseMatters(st.FailuresInWindow) || len(r.Steps) == 0 {
		return r, ""
	}
	w, ok := e.executors[r.Steps[0].Type].(action.Witness)
	if !ok {
		return r, ""
	}
	wctx, cancel := context.WithTimeout(ctx, evidenceTimeout)
	defer cancel()
	ev, err := w.Evidence(wctx, action.Request{Target: target, Params: r.Steps[0].Params, Remediation: r.Name})
	if err != nil {
		log.Warn("cannot read the evidence the remediation's causes choose on; the ladder applies", "target", target, "err", err)
		return r, ""
	}
	return r.ForCause(ev.Facts)
}

// settle carries out the decision p reached: defer the job, run the
// action, or record a decision that runs nothing.
func (e *Engine) settle(ctx context.Context, c Claim, p *pass) error {
	d := p.d
	p.log.Debug("decided", "stage", p.stage, "target", p.target, "verdict", d.Verdict, "reason", d.Reason)
	if p.stateLoaded {
		if why := stormOf(p.in, d); why != "" && !e.storming.Swap(true) {
			p.log.Info(why+": deciding the queue in rounds", "round_size", roundSize)
		}
	}
	switch d.Verdict {
	case Defer:
		e.m.deferred.Inc()
		var events []model.Event
		if p.unreachable {
			events = e.unreachableEvent(c.Job(), p.target, d)
		}
		return c.Defer(ctx, d.RetryAfter, d.Reason, events...)
	case Run:
		return e.run(ctx, c, p)
	default:
		return e.finish(ctx, c, p.target, d, p.r)
	}
}

// unreachableEvent is the event a job deferred for an unreachable target
// records: once per job, not at every retry.
func (e *Engine) unreachableEvent(j model.Job, target string, d Decision) []model.Event {
	if strings.HasPrefix(j.Reason, reasonUnreachable) {
		return nil
	}
	return []model.Event{{Severity: model.SeverityWarning, Type: "target_unreachable", Target: target, Message: d.Reason}}
}

// countsOutage reports whether the job's alert occurrence is itself a
// failure of its target: a category A alert (a service down or unhealthy)
// that started firing, matched by this remediation rather than handed to it
// by an escalation. A crash loop whose every restart "succeeds" is still
// three failures in ten minutes.
func countsOutage(r *policy.Remediation, j model.Job) bool {
	return r.Category == policy.CategoryA && !j.Escalated && j.AlertStatus == "firing"
}

// ownOutageSlack is how long before an alert began an action of selfheal's
// may have taken its target down: Prometheus sees a stop a scrape and an
// evaluation late.
const ownOutageSlack = 10 * time.Minute

// lookedTouch is what a look at selfheal's own actions on a target found
// (model.Touch, found).
type lookedTouch struct {
	touch model.Touch
	found bool
}

// ownOutageSince is from when selfheal's actions may explain job j's
// outage.
func ownOutageSince(j model.Job) time.Time { return j.StartsAt.Add(-ownOutageSlack) }

// ownOutage reports whether the alert is selfheal's own doing: another
// job's action touched the target (a hard restart of every service, or a
// restart by another remediation; looked, the last such action since
// ownOutageSince), and the target runs now in a run that action started.
// Such an alert is no failure of the service: it is skipped, uncounted.
// While the action still runs, the job waits for it.
func (e *Engine) ownOutage(ctx context.Context, r *policy.Remediation, target string, looked lookedTouch) (Decision, bool, error) {
	if !looked.found {
		return Decision{}, false, nil
	}
	touch := looked.touch
	if touch.Running {
		return Decision{Verdict: Defer, RetryAfter: time.Second, Reason: fmt.Sprintf(
			"selfheal's %s (%s, action %d) is acting on %s: waiting for it to finish", touch.Action, touch.Remediation, touch.ActionID, target)}, true, nil
	}
	step, _ := LadderStep(r, 0)
	rc, ok := e.executors[step.Type].(action.RecoveryChecker)
	if !ok {
		return Decision{}, false, nil
	}
	cctx, cancel := context.WithTimeout(ctx, permitTimeout)
	defer cancel()
	rec, err := rc.Recovered(cctx, target, touch.Started.Add(-time.Second), 0)
	if err != nil || !rec.Recovered || rec.Since.After(touch.Completed.Add(2*time.Second)) {
		return Decision{}, false, err
	}
	return Decision{Verdict: Skip, Reason: fmt.Sprintf(
		"%s went down under selfheal's own %s (%s, action %d) and runs since %s in the run it started: not an outage",
		target, touch.Action, touch.Remediation, touch.ActionID, rec.Since.UTC().Format(time.RFC3339))}, true, nil
}

// nextInSequence queues the next action of a sequence once a step ended,
// whatever its outcome; nil when the job is not part of one or was the last.
func nextInSequence(r *policy.Remediation, j model.Job) *model.FollowUp {
	if r == nil || !r.IsSequence() || j.Position >= len(r.Steps) {
		return nil
	}
	return &model.FollowUp{Sequence: true, Position: j.Position + 1}
}

// renderTarget is the target r names for job j's alert.
func renderTarget(r *policy.Remediation, j model.Job) (string, error) {
	return r.RenderTarget(policy.TemplateData{Status: j.AlertStatus, Labels: j.Labels,
		Annotations: j.Annotations, StartsAt: j.StartsAt, Fingerprint: j.Fingerprint})
}

// canonical is the target's own name (action.Canonicalizer) as the
// executor of r's first step knows it; the target as given when that
// executor's targets have one name only.
func (e *Engine) canonical(ctx context.Context, r *policy.Remediation, target string) (string, error) {
	cz, ok := e.executors[r.Steps[0].Type].(action.Canonicalizer)
	if !ok {
		return target, nil
	}
	cctx, cancel := context.WithTimeout(ctx, permitTimeout)
	defer cancel()
	return cz.Canonical(cctx, target)
}

// stepRequest is the request for step of r on target, for job j.
func stepRequest(r *policy.Remediation, step policy.Action, j model.Job, target string) action.Request {
	return action.Request{Target: target, Params: step.Params, Verify: verification(r.Verify), Labels: j.Labels, Remediation: r.Name}
}

// inputFor is the input of a decision on job j under r, in state st.
func inputFor(cfg *policy.Config, r *policy.Remediation, j model.Job, st model.State) Input {
	if why := cfg.PausedByEnvironment; why != "" && !st.Paused {
		st.Paused, st.PauseReason = true, "this replica's environment says "+why
	}
	return Input{
		Remediation: r,
		Waited:      st.Now.Sub(j.CreatedAt),
		DryRun:      cfg.IsDryRun(r),
		Limits:      limitsOf(cfg),
		State:       st,
		// An escalation runs whether or not the alert has resolved since.
		AlertResolved: j.AlertStatus == "resolved" && !j.Escalated,
		Step:          j.Position,
	}
}

func limitsOf(cfg *policy.Config) Limits {
	return Limits{
		UnreachableFor:       cfg.Engine.UnreachableFor.D(),
		MaxConcurrentActions: cfg.Engine.MaxConcurrentActions,
		StormMaxActions:      cfg.Engine.StormBrake.MaxActions,
		StormWindow:          cfg.Engine.StormBrake.Window.D(),
		Chronic:              cfg.Engine.Chronic,
	}
}

// StateQueryOf is the state a decision of r on target reads under cfg.
func StateQueryOf(cfg *policy.Config, r *policy.Remediation, target string) model.StateQuery {
	q := model.StateQuery{Target: target, Remediation: r.Name, FailureWindow: r.FailureWindow.D(),
		StormWindow: cfg.Engine.StormBrake.Window.D()}
	if cfg.Engine.Chronic.MaxRemediations > 0 {
		q.ChronicWindow, q.ChronicMax = cfg.Engine.Chronic.Window.D(), cfg.Engine.Chronic.MaxRemediations
	}
	return q
}

// finish records a decision that runs nothing.
func (e *Engine) finish(ctx context.Context, c Claim, target string, d Decision, r *policy.Remediation) error {
	e.m.decisions.WithLabelValues(string(d.Verdict)).Inc()
	e.m.jobs.WithLabelValues(string(d.Verdict.Outcome())).Inc()
	o := model.Outcome{State: model.JobDone, Result: d.Verdict.Outcome(), Target: target, Reason: d.Reason,
		JoinedTo: d.JoinedTo, ResolveOccurrence: fastHealed(c.Job(), d.Verdict.Outcome())}
	ev := decisionEvent(c.Job(), target, d)
	switch d.Verdict {
	case DryRun:
		ev.Severity = model.SeverityInfo
		ev.Details["action"], ev.Details["attempt"] = d.Action.Type, d.Attempt
		o.DryRun = &model.Intent{Target: target, Action: d.Action.Type, Category: r.Category, Attempt: d.Attempt}
	case Escalate:
		ev.Severity, ev.Type = model.SeverityCritical, "escalation"
		ev.Details["escalate_to"] = r.EscalateTo
		o.Escalation = &model.Escalation{To: r.EscalateTo, Reason: d.Reason}
	case Refuse:
		o.FollowUp = nextInSequence(r, c.Job())
	}
	o.Events = []model.Event{ev}
	return c.Finish(ctx, o)
}

// decisionEvent is the audit trail's record of a decision that runs
// nothing: a warning, or the decision's own severity; a skip for an alert
// that resolved is news, not a warning.
func decisionEvent(j model.Job, target string, d Decision) model.Event {
	ev := model.Event{Severity: model.SeverityWarning, Type: "decision", Target: target, Message: d.Reason,
		Details: map[string]any{"verdict": string(d.Verdict)}}
	if d.Severity != "" {
		ev.Severity = d.Severity
	}
	if d.Verdict == Skip && j.AlertStatus == "resolved" {
		ev.Severity = model.SeverityInfo
	}
	return ev
}

// joinsFastPath finds the fast path's occurrence an Alertmanager alert is
// the same outage as: one still under way, or one healed shortly before
// the alert began while the target still runs in the run that healing (or
// a later one) started. A target down now after the fast path had healed
// it is a new outage the fast path missed: the alert acts.
func (e *Engine) joinsFastPath(ctx context.Context, v view, r *policy.Remediation, j model.Job, target string) (model.FastOccurrence, bool, error) {
	fast, found, err := v.FastOccurrence(ctx, r.Name, target, j.StartsAt, r.FastPath.JoinWithin.D())
	if err != nil || !found || fast.Firing {
		return fast, found, err
	}
	rc, ok := e.executors[r.Steps[0].Type].(action.RecoveryChecker)
	if !ok {
		return fast, true, nil
	}
	pctx, cancel := context.WithTimeout(ctx, permitTimeout)
	defer cancel()
	rec, err := rc.Recovered(pctx, target, fast.StartsAt, 0)
	if err != nil {
		return fast, false, nil // cannot tell: the alert is decided as any other
	}
	return fast, rec.Recovered, nil
}

// fastHealed reports whether a job's end ends its occurrence: the fast
// path's occurrences have no Alertmanager resolution, so one ends when a
// job on it ends other than failed or escalated (the ladder goes on then).
func fastHealed(j model.Job, outcome model.JobOutcome) bool {
	return policy.IsFastAlert(j.Labels) && outcome != model.OutcomeFailed && outcome != model.OutcomeEscalated
}

// verification is what an action needs of a remediation's verify block.
func verification(v policy.Verify) action.Verify {
	return action.Verify{Timeout: v.Timeout.D(), StableFor: v.StableFor.D()}
}
