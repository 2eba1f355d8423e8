// Package action is the contract between the engine and the actions it
// runs, and the registry of action types. An action type registers its
// name and its parameters — a struct with its defaults, yaml keys and
// validation — so the configuration decodes and checks every step without
// knowing the type, and the engine runs it through Executor without
// knowing what it does. It depends on nothing of selfheal's.
package action

import (
	"context"
	"errors"
	"time"
)

// Executor runs one type of action.
type Executor interface {
	// Permit reports, changing nothing, whether the request's target may
	// be touched; the error says why not (a *Refusal to choose the event's
	// severity).
	Permit(ctx context.Context, req Request) error
	// Execute runs the action and verifies its effect.
	Execute(ctx context.Context, req Request) (Result, error)
}

// Request is one action to run.
type Request struct {
	Target string
	// Params are the step's parameters, of the type its action registered.
	Params Params
	Verify Verify
	// Labels are the alert's, for actions that need more than the target.
	Labels map[string]string
	// Remediation and Reason say why, for actions that record it (reboot).
	Remediation string
	Reason      string
	// ActionID is the intent's row in recovery_actions.
	ActionID int64
}

// Verify says how an action's effect on a container is checked.
type Verify struct {
	// Timeout bounds the wait for the target to be running (and healthy).
	Timeout time.Duration
	// StableFor is how long the target must then stay up.
	StableFor time.Duration
}

// Result is what an action reports.
type Result struct {
	// Details are stored with the action.
	Details map[string]any
	// Touched are the containers the action acted on beside its target —
	// dependents, a compose project's other services — in the order it
	// did, and those it chose to leave alone. Reported whether the action
	// succeeded or not.
	Touched []Touched
}

// Touched is one container an action acted on beside its target, or left
// alone. The engine records each one acted on as its own row in
// recovery_actions under the same job, and each left alone as an event.
type Touched struct {
	Target string
	// Action is what was done to it (restart, stop_start).
	Action string
	// Role says why it was touched: "dependent of gateway", "service of
	// project app".
	Role string
	// Skipped, when set, says why it was left alone; nothing was done.
	Skipped string
	// Started and Ended bound what was done.
	Started, Ended time.Time
	// Err is why what was done failed.
	Err error
}

// Witness is implemented by executors whose target has state worth
// keeping before they change it — a container's exit state and last log
// lines, gone once it restarts. The engine asks just before Execute and
// stores what it returns (JSON) with the action, whatever the outcome; an
// error is recorded in its place and the action runs all the same.
type Witness interface {
	Evidence(ctx context.Context, req Request) (Evidence, error)
}

// Evidence is what a Witness found.
type Evidence struct {
	// Record is stored with the action (as JSON).
	Record any
	// Facts are what a remediation's causes choose on.
	Facts Facts
}

// Facts are what the evidence says about why the target is down.
type Facts struct {
	// Stopped: the target is not running (it exited, or never started).
	Stopped bool
	// OOMKilled: the kernel killed its last run for memory.
	OOMKilled bool
	// ExitCode is its last run's exit code.
	ExitCode int
	// RanFor is how long its last run lasted, when it has stopped; zero
	// when unknown.
	RanFor time.Duration
}

// StopsOnResolve is implemented by the parameters of an action that may be
// stopped when its alert resolves: its context is then cancelled with
// ErrAlertResolved as the cause (context.Cause), within a few seconds.
type StopsOnResolve interface {
	StopOnResolve() bool
}

// ErrAlertResolved is the cause of an action's context cancelled because
// its alert resolved (StopsOnResolve).
var ErrAlertResolved = errors.New("the alert resolved")

// Executable is implemented by the parameters of an action that runs a
// program of the operator's: the configuration must allow it by path.
type Executable interface {
	Executable() string
}

// Reverter is implemented by executors whose changes are temporary (a
// lowered power limit, say). PlanRevert, asked before the action runs,
// returns what Revert will need to undo the change Execute is about to
// make — nil when it would make none; the engine records it with the
// intent, before the change, so a crash at any point leaves it to be
// undone. Revert is called with it when the alert resolves or selfheal
// stops, whether or not Execute got as far as the change: it must leave
// alone what it finds unchanged.
type Reverter interface {
	PlanRevert(ctx context.Context, req Request) (map[string]any, error)
	Revert(ctx context.Context, target string, data map[string]any) error
}

// Severity is the severity of the event a refusal writes; the values are
// the audit trail's.
type Severity string

// Severities a refusal may carry.
const (
	Warning   Severity = "WARNING"
	Error     Severity = "ERROR"
	Critical  Severity = "CRITICAL"
	Emergency Severity = "EMERGENCY"
)

// Severities lists every Severity, for the test that keeps them the
// audit trail's.
var Severities = []Severity{Warning, Error, Critical, Emergency}

// Refusal is a Permit error that carries the severity of its event; a
// plain error is a WARNING.
type Refusal struct {
	Severity Severity
	Reason   string
}

func (r *Refusal) Error() string { return r.Reason }

// Recovery is what a RecoveryChecker found.
type Recovery struct {
	// Recovered: the target came back by itself and stayed up.
	Recovered bool
	// Since is when it came back.
	Since time.Time
	// Settling, when positive, is how much longer it must stay up before
	// it counts as recovered; the engine waits that long.
	Settling time.Duration
	// Reason is for the audit trail.
	Reason string
}

// RecoveryChecker is implemented by executors that can tell whether a
// target came back by itself since its alert began (a container restarted
// by its restart policy, or by a person). The engine asks before acting on
// a category A alert, so a brief stop that Prometheus happened to see costs
// no needless restart.
type RecoveryChecker interface {
	Recovered(ctx context.Context, target string, since time.Time, stableFor time.Duration) (Recovery, error)
}

// Toucher is implemented by executors that act on containers other than
// their target (a hard restart of every service). The engine records them
// with the intent, so that an alert the action itself causes — a service
// seen down while it restarts — is known as selfheal's own doing rather
// than a failure of that service.
type Toucher interface {
	Touches(ctx context.Context, req Request) ([]string, error)
}

// Availability is implemented by executors that act through a service that
// may be away (the Docker Engine). While it is, this replica claims none of
// the jobs that need it: another replica, or this one later, acts on them.
type Availability interface {
	Available(ctx context.Context) error
}

// Canonicalizer is implemented by executors whose targets have several
// names (a container: its name, "/name", its ID, an ID prefix). The engine
// keys a target's lock, failures, cooldown and escalation on the canonical
// name, so every spelling of one target is one target.
type Canonicalizer interface {
	Canonical(ctx context.Context, target string) (string, error)
}

// TargetPermit is implemented by executors whose Permit depends on the
// target alone — not on the alert's labels or the action's parameters — so
// that a round of decisions (a storm) asks it once per target.
type TargetPermit interface {
	PermitsByTarget()
}

// IsTransient reports whether an error says the target cannot be reached
// now (the Docker Engine down or slow) rather than that it may not be
// touched: such a job is deferred, not refused.
func IsTransient(err error) bool {
	var t interface{ Transient() bool }
	return errors.As(err, &t) && t.Transient() || errors.Is(err, context.DeadlineExceeded)
}
