package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
)

// Verdict is what the engine decided to do with one job.
type Verdict string

// Verdicts. Every one but Defer ends the job and is recorded.
const (
	Run      Verdict = "run"
	DryRun   Verdict = "dry_run"
	Skip     Verdict = "skipped"
	Refuse   Verdict = "refused"
	Escalate Verdict = "escalated"
	Defer    Verdict = "defer"
)

// reasonUnreachable starts the reason of a job deferred because its target
// cannot be reached now.
const reasonUnreachable = "cannot reach the target now"

// Limits are the global brakes.
type Limits struct {
	// UnreachableFor bounds how long a job waits for a target it cannot
	// reach (the Docker Engine down) before it is refused as unreachable.
	UnreachableFor       time.Duration
	MaxConcurrentActions int
	StormMaxActions      int
	StormWindow          time.Duration
	// Chronic holds a target repaired too often, when Chronic.Hold.
	Chronic policy.Chronic
}

// chronic is the refusal of a target the chronic limit holds back, if
// it does.
func (l Limits) chronic(st model.State) (Decision, bool) {
	c := l.Chronic
	if !c.Hold || c.MaxRemediations <= 0 || st.ChronicActions < c.MaxRemediations {
		return Decision{}, false
	}
	return Decision{Verdict: Refuse, Severity: model.SeverityWarning, Reason: fmt.Sprintf(
		"chronic: at least %d remediations of the target within %s (the limit): held for a person, who fixes the cause and runs selfheal clear",
		c.MaxRemediations, c.Window)}, true
}

// brake is the decision the storm brake makes: a skip, saying until when
// at the earliest it holds — when the oldest action in its window leaves
// it. The skip is handed off to people (store.OpenProblems) while the
// alert fires.
func (l Limits) brake(st model.State) Decision {
	reason := fmt.Sprintf("%s: %d actions in the last %s (limit %d)", model.StormBrakeReason,
		st.ActionsInStormWindow, policy.Duration(l.StormWindow), l.StormMaxActions)
	if !st.StormWindowOldest.IsZero() {
		reason += fmt.Sprintf("; it holds until %s at the earliest, when the oldest of them leaves the window; "+
			"this outage is not acted on, the alert's next occurrence is",
			st.StormWindowOldest.Add(l.StormWindow).UTC().Format(time.RFC3339))
	}
	return Decision{Verdict: Skip, Reason: reason}
}

// braked reports whether the storm brake holds in st: the actions in its
// window reached its limit.
func (l Limits) braked(st model.State) bool {
	return l.StormMaxActions > 0 && st.ActionsInStormWindow >= l.StormMaxActions
}

// unreachable is the decision on a job whose target cannot be reached now
// (err says why) after it waited so long: wait, with a backoff that grows
// with the wait (1 s to 30 s), and refuse, CRITICAL, once it waited
// UnreachableFor.
func (l Limits) unreachable(waited time.Duration, err error) Decision {
	if bound := l.UnreachableFor; bound > 0 && waited >= bound {
		return Decision{Verdict: Refuse, Severity: model.SeverityCritical, Reason: fmt.Sprintf(
			"the target stayed unreachable for %s (limit %s): %v", waited.Round(time.Second), policy.Duration(bound), err)}
	}
	retry := min(max(waited/2, time.Second), 30*time.Second)
	return Decision{Verdict: Defer, RetryAfter: retry, Reason: fmt.Sprintf(
		"%s, trying again in %s: %v", reasonUnreachable, retry.Round(time.Millisecond), err)}
}

// Input is everything a decision depends on.
type Input struct {
	Remediation *policy.Remediation
	// DryRun is the effective dry-run setting (global or per remediation).
	DryRun bool
	Limits Limits
	State  model.State
	// AlertResolved is true when the alert resolved before the job started.
	AlertResolved bool
	// PermitErr is why the target may not be touched; nil when it may (or
	// has not been checked yet).
	PermitErr error
	// Recovery is the target's own state, for category A: it may have come
	// back by itself since the alert began.
	Recovery action.Recovery
	// Step is, for a sequence, which of its actions is due: 1 for a job
	// the alert itself queued (its first, or a reopening), more for the
	// sequence's later steps.
	Step int
	// Waited is how long ago the job was queued.
	Waited time.Duration
}

// continuesSequence reports whether the job is a later step of a sequence
// already under way: it runs whatever the cooldown, failure count or alert
// says, since its first step was decided with them.
func (in Input) continuesSequence() bool { return in.Remediation.IsSequence() && in.Step > 1 }

// NextAction returns the action the job would run and its attempt number.
// A sequence runs its actions in order, one per step. A ladder runs step n
// for the target's n-th consecutive attempt, counted from its failures in
// the window; the occurrence's own outage, when counted among them, is the
// reason for the attempt rather than a failed attempt. Once the ladder is
// exhausted its last step repeats.
func (in Input) NextAction() (policy.Action, int) {
	r := in.Remediation
	if r.IsSequence() {
		i := min(max(in.Step, 1), len(r.Steps)) - 1
		return r.Steps[i], i + 1
	}
	prior := in.State.FailuresInWindow
	if in.State.OutageCounted {
		prior--
	}
	return LadderStep(r, max(prior, 0))
}

// Decision is the outcome of Decide.
type Decision struct {
	Verdict Verdict
	// JoinedTo, for a Skip, is the fast path's occurrence the alert joins.
	JoinedTo int64
	// Action and Attempt are set for Run and DryRun.
	Action  policy.Action
	Attempt int
	Reason  string
	// RetryAfter is set for Defer.
	RetryAfter time.Duration
	// Severity overrides the event's usual severity (a refusal that is an
	// emergency, say).
	Severity model.Severity
}

// LadderStep returns the step for the next attempt: attempt n runs step n,
// and the last step repeats once the ladder is exhausted.
func LadderStep(r *policy.Remediation, failures int) (policy.Action, int) {
	i := min(failures, len(r.Steps)-1)
	return r.Steps[i], failures + 1
}

// Decide is the engine's whole policy, with no I/O: the same input gives the
// same decision, so a table test can walk a full escalation ladder.
//
// The target check comes last of the reasons not to act, so the engine
// asks Docker only about a target it would otherwise act on: it decides
// once without PermitErr and, if the verdict acts, checks the target and
// decides again.
func Decide(in Input, now time.Time) Decision {
	r, st := in.Remediation, in.State
	underway := in.continuesSequence()
	switch {
	case in.AlertResolved && !underway:
		return Decision{Verdict: Skip, Reason: "the alert resolved before this step started"}
	case st.Paused:
		return Decision{Verdict: Skip, Reason: fmt.Sprintf("remediation is paused (%s)", orNone(st.PauseReason))}
	case !st.RebootPendingSince.IsZero() && r.Category != policy.CategoryD:
		return Decision{Verdict: Skip, Reason: fmt.Sprintf(
			"a guarded reboot is under way (requested %s): smaller remediations wait for it",
			st.RebootPendingSince.UTC().Format(time.RFC3339))}
	}
	if !underway {
		if d, ok := in.Limits.chronic(st); ok {
			return d
		}
		if d, ok := decideLimits(r, st, now); ok {
			return d
		}
	}
	if in.Limits.braked(st) {
		return in.Limits.brake(st)
	}
	if in.PermitErr != nil && action.IsTransient(in.PermitErr) {
		return in.Limits.unreachable(in.Waited, in.PermitErr)
	}
	if in.PermitErr != nil {
		d := Decision{Verdict: Refuse, Reason: in.PermitErr.Error()}
		var r *action.Refusal
		if errors.As(in.PermitErr, &r) {
			d.Severity = model.Severity(r.Severity)
		}
		return d
	}
	switch rec := in.Recovery; {
	case rec.Recovered:
		return Decision{Verdict: Skip, Reason: rec.Reason}
	case rec.Settling > 0:
		return Decision{Verdict: Defer, RetryAfter: rec.Settling, Reason: rec.Reason}
	}
	action, attempt := in.NextAction()
	if in.DryRun {
		return Decision{Verdict: DryRun, Action: action, Attempt: attempt,
			Reason: fmt.Sprintf("dry-run: would run %s (attempt %d)", action.Type, attempt)}
	}
	if in.Limits.MaxConcurrentActions > 0 && st.RunningActions >= in.Limits.MaxConcurrentActions {
		return Decision{Verdict: Defer, RetryAfter: time.Second, Reason: fmt.Sprintf(
			"%d actions running (limit %d)", st.RunningActions, in.Limits.MaxConcurrentActions)}
	}
	if r.IsSequence() {
		return Decision{Verdict: Run, Action: action, Attempt: attempt,
			Reason: fmt.Sprintf("running %s (step %d of %d)", action.Type, attempt, len(r.Steps))}
	}
	return Decision{Verdict: Run, Action: action, Attempt: attempt,
		Reason: fmt.Sprintf("running %s (attempt %d, %d failures in the last %s)", action.Type, attempt, st.FailuresInWindow, r.FailureWindow)}
}

// decideLimits applies the per-target limits: an open escalation, the
// failure count and the cooldown. ok is false when none of them applies.
func decideLimits(r *policy.Remediation, st model.State, now time.Time) (Decision, bool) {
	switch {
	case !st.EscalatedAt.IsZero():
		return Decision{Verdict: Skip, Reason: fmt.Sprintf(
			"escalated to %s at %s: nothing more runs on this target until its alert resolves or %s pass",
			escalationTarget(st.EscalatedTo), st.EscalatedAt.UTC().Format(time.RFC3339), r.FailureWindow)}, true
	case r.MaxFailures > 0 && st.FailuresInWindow >= r.MaxFailures && !st.LastEscalationAt.IsZero():
		// A crash loop: the bigger remediation already had its turn in this
		// window. Escalating again would only loop; people must look. A
		// refusal, not a skip: it is handed off (SelfhealRefused), and the
		// status page and plan list the target as held back.
		return Decision{Verdict: Refuse, Severity: model.SeverityWarning, Reason: fmt.Sprintf(
			"%d failures within %s (limit %d), and already escalated at %s: held back for a person until %s, "+
				"not escalating again within the window (selfheal clear lets the next outage start the ladder again)",
			st.FailuresInWindow, r.FailureWindow, r.MaxFailures, st.LastEscalationAt.UTC().Format(time.RFC3339),
			st.LastEscalationAt.Add(r.FailureWindow.D()).UTC().Format(time.RFC3339))}, true
	case r.MaxFailures > 0 && st.FailuresInWindow >= r.MaxFailures:
		return Decision{Verdict: Escalate, Reason: fmt.Sprintf("%d failures within %s (limit %d): escalating to %s",
			st.FailuresInWindow, r.FailureWindow, r.MaxFailures, escalationTarget(r.EscalateTo))}, true
	}
	if cd := r.Cooldown.D(); cd > 0 && !st.LastActionAt.IsZero() {
		if until := st.LastActionAt.Add(cd); now.Before(until) {
			return Decision{Verdict: Skip, Reason: fmt.Sprintf("in cooldown until %s (last action %s, cooldown %s)",
				until.UTC().Format(time.RFC3339), st.LastActionAt.UTC().Format(time.RFC3339), r.Cooldown)}, true
		}
	}
	return Decision{}, false
}

// HeldBack reports whether the per-target limits hold r back on a target
// in state st now — an open escalation, a crash loop already escalated
// this window, the cooldown — and why, in the words a decision would use:
// what the status page lists. The same limits Decide applies.
func HeldBack(r *policy.Remediation, st model.State, now time.Time) (string, bool) {
	d, ok := decideLimits(r, st, now)
	if !ok || d.Verdict == Escalate {
		return "", false
	}
	return d.Reason, true
}

func orNone(s string) string {
	if s == "" {
		return "no reason given"
	}
	return s
}

func escalationTarget(name string) string {
	if name == "" {
		return "nobody (no escalate_to configured)"
	}
	return name
}

// Outcome is the job outcome a verdict that ends a job records.
func (v Verdict) Outcome() model.JobOutcome {
	switch v {
	case Skip:
		return model.OutcomeSkipped
	case Refuse:
		return model.OutcomeRefused
	case Escalate:
		return model.OutcomeEscalated
	case DryRun:
		return model.OutcomeDryRun
	}
	return model.JobOutcome(v)
}

// NeedsTargetCheck reports whether the verdict stands only once the
// target was checked: it would touch the target (or pretend to, in
// dry-run), now or after waiting (Defer).
func (v Verdict) NeedsTargetCheck() bool { return v == Run || v == DryRun || v == Defer }
