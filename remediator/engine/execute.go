package engine

// Running an action: admission with the intent, the lease that keeps the
// action its worker's while it runs, and the outcome, recorded however
// long the database takes to come back.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
)

// actionLease is how long a running action stays its worker's without a
// renewal; the worker renews it every leaseRenewEvery, on any connection,
// so a database restart or a dropped connection shorter than the lease
// costs nothing. Once it lapses another worker takes the action over
// (marks it interrupted), and the next step waits for the action's own
// timeout.
const (
	actionLease     = 15 * time.Second
	leaseRenewEvery = 3 * time.Second
)

// outcomeRetryFor bounds how long a worker keeps trying to record the
// outcome of an action it ran while the database is away; it renews the
// lease meanwhile. Past it the lease lapses and the action is recorded as
// interrupted by whoever takes it over.
const outcomeRetryFor = 10 * time.Minute

// admissionOf is what an intent is admitted under.
func admissionOf(cfg *policy.Config) model.Admission {
	return model.Admission{MaxRunning: cfg.Engine.MaxConcurrentActions, MaxInWindow: cfg.Engine.StormBrake.MaxActions,
		Window: cfg.Engine.StormBrake.Window.D()}
}

// run admits the action with its intent, runs it under its timeout while
// renewing its lease, and records the outcome. When admission refuses it —
// another worker or replica took the last place under a limit since the
// state was read — the decision is made again with the counts found under
// the admission lock. A failure is counted against the target and queues
// the next step of the ladder (or, at the limit, its escalation).
func (e *Engine) run(ctx context.Context, c Claim, p *pass) error {
	r, target, d, log := p.r, p.target, p.d, p.log
	exec := e.executors[d.Action.Type]
	details := map[string]any{"cooldown_seconds": r.Cooldown.D().Seconds()}
	req := stepRequest(r, d.Action, c.Job(), target)
	req.Reason = d.Reason
	if t, ok := exec.(action.Toucher); ok {
		tctx, cancel := context.WithTimeout(ctx, permitTimeout)
		touches, err := t.Touches(tctx, req)
		cancel()
		if err == nil {
			details["touches"] = touches
		}
	}
	// A temporary change is recorded with the intent, before it is made:
	// a crash at any point leaves it to be undone when the alert resolves.
	var revert *model.Revert
	if rv, ok := exec.(action.Reverter); ok {
		pctx, cancel := context.WithTimeout(ctx, permitTimeout)
		data, err := rv.PlanRevert(pctx, req)
		cancel()
		if err != nil {
			return fmt.Errorf("plan how to undo %s of %s: %w", d.Action.Type, target, err)
		}
		if data != nil {
			revert = &model.Revert{Host: e.node(), Data: data}
		}
	}
	// Without a drain, the evidence is read while the intent commits: it is
	// still read before the action changes anything, and the action does
	// not wait for the two one after the other (the durable commit and the
	// Docker calls take a few milliseconds each, on the fast path's heal).
	// With a drain, it is read after the drain, right before the action.
	//
	// The evidence and the action's own check of its target before it
	// changes anything share one look (action.WithLook): one view of the
	// target, read right before acting.
	ctx = action.WithLook(ctx)
	evidence := func(ctx context.Context) any { return e.witness(ctx, exec, req, log) }
	if r.Drain == nil {
		evidence = e.witnessMeanwhile(ctx, exec, req, log)
	}
	cfg := e.config()
	adm, err := c.RecordIntent(ctx, model.Intent{Target: target, Action: d.Action.Type, Category: r.Category,
		Attempt: d.Attempt, Reason: d.Reason, Details: details, Limits: admissionOf(cfg),
		Owner: e.replica, Lease: actionLease, Timeout: r.Timeout.D(), Revert: revert})
	if err != nil {
		return err // nothing ran; the job goes back to the queue
	}
	if adm.ActionID == 0 {
		p.in.State.RunningActions, p.in.State.ActionsInStormWindow = adm.Running, adm.InWindow
		again := Decide(p.in, p.in.State.Now)
		if again.Verdict == Run { // the limits changed under a reload: wait for the next look
			again = Decision{Verdict: Defer, RetryAfter: time.Second, Reason: fmt.Sprintf(
				"not admitted: %d actions running, %d in the storm window", adm.Running, adm.InWindow)}
		}
		log.Debug("not admitted under the limits", "target", target, "running", adm.Running, "in_window", adm.InWindow)
		p.d = again
		return e.settle(ctx, c, p)
	}
	e.m.decisions.WithLabelValues(string(Run)).Inc()
	if revert != nil {
		defer e.revertGen.Add(1)
	}
	actionID := adm.ActionID
	log = log.With("target", target, "action", d.Action.Type, "attempt", d.Attempt, "action_id", actionID)
	log.Info("running action")

	// The action runs to its own timeout even when selfheal is asked to
	// stop, so its outcome is recorded rather than left interrupted; one
	// whose step says so is stopped when its alert resolves.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.Timeout.D())
	actx, stop := context.WithCancelCause(actx)
	defer stop(nil)
	onResolved := func() {}
	if s, ok := d.Action.Params.(action.StopsOnResolve); ok && s.StopOnResolve() {
		onResolved = func() { stop(action.ErrAlertResolved) }
	}

	// The lease is renewed until the outcome is recorded, however long
	// the database takes to take it.
	renewCtx, stopRenewing := context.WithCancel(context.WithoutCancel(ctx))
	var renewing sync.WaitGroup
	renewing.Go(func() { e.renew(renewCtx, c, log, onResolved) })
	defer func() { stopRenewing(); renewing.Wait() }()

	start := time.Now()
	req.ActionID = actionID
	var res action.Result
	drained, err := e.drain(actx, r, target, log)
	if err == nil {
		evidence := evidence(actx)
		res, err = exec.Execute(actx, req)
		if evidence != nil {
			res.Details = withDetail(res.Details, "evidence", evidence)
		}
	}
	if drained != nil {
		res.Details = withDetail(res.Details, "drain", drained)
	}
	elapsed := time.Since(start)
	if err != nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %s: %w", r.Timeout, err)
	}
	cancel()
	e.m.actionDuration.WithLabelValues(d.Action.Type).Observe(elapsed.Seconds())
	return e.recordOutcome(ctx, c, e.outcomeOf(c.Job(), r, target, d, actionID, res, err, elapsed, log), log)
}

// withDetail sets details[key], making details when there are none.
func withDetail(details map[string]any, key string, v any) map[string]any {
	if details == nil {
		details = map[string]any{}
	}
	details[key] = v
	return details
}

// evidenceTimeout bounds the look at the target before an action changes
// it; past it the action runs without.
const evidenceTimeout = 3 * time.Second

// witness reads what exec's target shows before it is changed, when exec
// keeps evidence: nil when it keeps none; what went wrong when it could not.
func (e *Engine) witness(ctx context.Context, exec action.Executor, req action.Request, log *slog.Logger) any {
	w, ok := exec.(action.Witness)
	if !ok {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, evidenceTimeout)
	defer cancel()
	ev, err := w.Evidence(wctx, req)
	if err != nil {
		log.Warn("cannot keep the evidence before acting; acting all the same", "target", req.Target, "err", err)
		return map[string]any{"not_kept": err.Error()}
	}
	return ev.Record
}

// witnessMeanwhile starts reading the evidence (witness) in the background
// and returns the function that waits for it. The read is bounded by
// evidenceTimeout, like the action it goes with not cut short when
// selfheal is asked to stop; when nobody asks for it (the intent was not
// admitted), what it read is dropped.
func (e *Engine) witnessMeanwhile(ctx context.Context, exec action.Executor, req action.Request, log *slog.Logger) func(context.Context) any {
	read := make(chan any, 1)
	go func() { read <- e.witness(context.WithoutCancel(ctx), exec, req, log) }()
	return func(ctx context.Context) any {
		select {
		case ev := <-read:
			return ev
		case <-ctx.Done():
			return map[string]any{"not_kept": ctx.Err().Error()}
		}
	}
}

// outcomeOf is what the action's end records.
func (e *Engine) outcomeOf(j model.Job, r *policy.Remediation, target string, d Decision, actionID int64, res action.Result, err error, elapsed time.Duration, log *slog.Logger) model.Outcome {
	others, otherEvents := touched(res.Touched)
	if err == nil {
		log.Info("action succeeded", "duration", elapsed)
		e.m.actions.WithLabelValues(d.Action.Type, string(model.ActionSucceeded)).Inc()
		e.m.jobs.WithLabelValues(string(model.OutcomeSucceeded)).Inc()
		return model.Outcome{State: model.JobDone, Result: model.OutcomeSucceeded, Target: target, Reason: d.Reason,
			ResolveOccurrence: fastHealed(j, model.OutcomeSucceeded),
			ActionID:          actionID, ActionStatus: model.ActionSucceeded, ActionDetail: res.Details,
			FollowUp: nextInSequence(r, j), Touched: others,
			Events: append(otherEvents, model.Event{Severity: model.SeverityInfo, Type: "action_succeeded", Target: target,
				Message: fmt.Sprintf("%s of %s succeeded in %s", d.Action.Type, target, elapsed.Round(time.Millisecond)),
				Details: map[string]any{"action": d.Action.Type, "attempt": d.Attempt, "seconds": elapsed.Seconds()}}),
		}
	}
	log.Warn("action failed", "duration", elapsed, "err", err)
	e.m.actions.WithLabelValues(d.Action.Type, string(model.ActionFailed)).Inc()
	e.m.jobs.WithLabelValues(string(model.OutcomeFailed)).Inc()
	followUp := &model.FollowUp{} // the ladder's next step
	if r.IsSequence() {
		followUp = nextInSequence(r, j)
	}
	msg := model.Truncate(err.Error(), 4096)
	return model.Outcome{State: model.JobDone, Result: model.OutcomeFailed, Target: target, Reason: d.Reason,
		ActionID: actionID, ActionStatus: model.ActionFailed, ActionError: msg, ActionDetail: res.Details,
		Failure:  &model.Failure{Type: d.Action.Type, Status: string(model.ActionFailed)},
		FollowUp: followUp, Touched: others,
		Events: append(otherEvents, model.Event{Severity: model.SeverityError, Type: "action_failed", Target: target,
			Message: fmt.Sprintf("%s of %s failed (attempt %d): %s", d.Action.Type, target, d.Attempt, msg),
			Details: map[string]any{"action": d.Action.Type, "attempt": d.Attempt, "seconds": elapsed.Seconds()}}),
	}
}

// renew keeps the claim's action leased until ctx ends: every
// leaseRenewEvery, and sooner again after a failure (the database
// restarting), so the lease outlives any outage shorter than itself. It
// calls resolved once it finds the action's alert resolved.
func (e *Engine) renew(ctx context.Context, c Claim, log *slog.Logger, resolved func()) {
	var quiet errorLog
	wait := leaseRenewEvery
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if e.abandoned.Load() {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		gone, err := c.Renew(rctx, actionLease)
		cancel()
		switch {
		case err == nil:
			wait = leaseRenewEvery
			if gone {
				resolved()
			}
		case errors.Is(err, model.ErrTakenOver):
			log.Warn("the action's lease was taken over by another worker; it runs on, but its outcome will not count")
			return
		case ctx.Err() != nil:
			return
		default:
			if quiet.due(err, time.Now()) {
				log.Warn("cannot renew the action's lease; trying again", "err", err)
			}
			wait = 500 * time.Millisecond
		}
	}
}

// recordOutcome records o, trying again while the database is away (the
// lease is renewed meanwhile), for up to outcomeRetryFor.
func (e *Engine) recordOutcome(ctx context.Context, c Claim, o model.Outcome, log *slog.Logger) error {
	giveUp := time.Now().Add(outcomeRetryFor)
	var quiet errorLog
	wait := 250 * time.Millisecond
	for {
		if ctx.Err() != nil { // stopping: a little longer, not ten minutes
			if soon := time.Now().Add(30 * time.Second); soon.Before(giveUp) {
				giveUp = soon
			}
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := c.Finish(fctx, o)
		cancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, model.ErrTakenOver):
			log.Warn("the action ended after another worker took it over; its outcome is recorded as an event only", "status", o.ActionStatus)
			return nil
		case !time.Now().Before(giveUp):
			return fmt.Errorf("could not record the outcome for %s; the action will be recorded as interrupted: %w", outcomeRetryFor, err)
		}
		if quiet.due(err, time.Now()) {
			log.Warn("cannot record the action's outcome; trying again", "err", err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 5*time.Second)
	}
}

// touched turns what an action did beside its target into a row for each
// container it acted on and an event for each, acted on or left alone.
func touched(list []action.Touched) ([]model.TouchedAction, []model.Event) {
	var rows []model.TouchedAction
	var events []model.Event
	for _, t := range list {
		details := map[string]any{"role": t.Role, "action": t.Action}
		if t.Skipped != "" {
			details["skipped"] = t.Skipped
			events = append(events, model.Event{Severity: model.SeverityWarning, Type: "left_alone", Target: t.Target,
				Message: fmt.Sprintf("%s (%s) left alone: %s", t.Target, t.Role, t.Skipped), Details: details})
			continue
		}
		row := model.TouchedAction{Target: t.Target, Action: t.Action, Status: model.ActionSucceeded,
			Started: t.Started, Ended: t.Ended, Details: details}
		took := t.Ended.Sub(t.Started).Round(time.Millisecond)
		details["seconds"] = t.Ended.Sub(t.Started).Seconds()
		ev := model.Event{Severity: model.SeverityInfo, Type: "touched", Target: t.Target, Details: details,
			Message: fmt.Sprintf("%s of %s (%s) succeeded in %s", t.Action, t.Target, t.Role, took)}
		if t.Err != nil {
			row.Status, row.Error = model.ActionFailed, t.Err.Error()
			ev.Severity = model.SeverityError
			ev.Message = fmt.Sprintf("%s of %s (%s) failed after %s: %v", t.Action, t.Target, t.Role, took, t.Err)
		}
		rows = append(rows, row)
		events = append(events, ev)
	}
	return rows, events
}
