package model

import (
	"errors"
	"time"
)

// Intent describes an action about to run.
type Intent struct {
	Target   string
	Action   string
	Category string
	Attempt  int
	// Reason explains the decision; it becomes the decision event.
	Reason  string
	Details map[string]any
	// Limits are what admission checks, atomically with the insert.
	Limits Admission
	// Owner is the replica that will run the action, and Lease how long it
	// holds it without renewing; Timeout bounds the action itself.
	Owner   string
	Lease   time.Duration
	Timeout time.Duration
	// Revert, when set, is the undoing of the change the action is about
	// to make, recorded before it is made.
	Revert *Revert
}

// Admission is the limits an intent is admitted under, across every worker
// and replica in their scope (the database; in a fleet, each node's rows):
// at most MaxRunning actions running at once and MaxInWindow started per
// Window (the storm brake). Zero is no limit.
type Admission struct {
	MaxRunning  int
	MaxInWindow int
	Window      time.Duration
}

// Admitted is what RecordIntent found under the admission lock.
type Admitted struct {
	// ActionID is the intent's row; zero when a limit refused it.
	ActionID int64
	// Running and InWindow are the counts the limits were checked against.
	Running  int
	InWindow int
}

// ErrTakenOver means the action's lease lapsed and another worker took it
// over (marked it interrupted): its owner no longer records its outcome.
var ErrTakenOver = errors.New("the action was taken over: its lease had lapsed")

// Event is one row of the audit trail.
type Event struct {
	Severity Severity
	Type     string
	Target   string
	Message  string
	Details  map[string]any
}

// Outcome is everything a finished job records, written in one commit.
type Outcome struct {
	// State is JobDone or JobInterrupted.
	State JobState
	// Result is the job's outcome; empty for an interrupted job.
	Result JobOutcome
	Target string
	Reason string

	// ActionID, when set, completes that recovery_actions row.
	ActionID     int64
	ActionStatus ActionStatus // succeeded, failed or interrupted
	ActionError  string
	ActionDetail map[string]any

	// DryRun, when set, records the action that would have run.
	DryRun *Intent

	// Touched are the other containers the action acted on, each recorded
	// as its own row under ActionID.
	Touched []TouchedAction

	// JoinedTo, when set, records that the job's occurrence is the same
	// outage as that (fast path) occurrence.
	JoinedTo int64
	// ResolveOccurrence resolves the job's occurrence (the fast path's,
	// which no Alertmanager resolution will end).
	ResolveOccurrence bool

	// Failure, when set, records a failure of Target.
	Failure *Failure

	// Escalation, when set, opens an escalation on Target.
	Escalation *Escalation

	// FollowUp, when set, queues the next step of the same occurrence.
	FollowUp *FollowUp

	Events []Event
}

// TouchedAction is a container an action acted on beside its target.
type TouchedAction struct {
	Target  string
	Action  string
	Status  ActionStatus // succeeded or failed
	Error   string
	Started time.Time
	Ended   time.Time
	Details map[string]any
}

// Failure is one failed attempt on a service.
type Failure struct {
	Type   string
	Status string
}

// Escalation hands a target on to a bigger remediation.
type Escalation struct {
	To     string
	Reason string
}

// Revert is a temporary change an action is about to make, and how to
// undo it; Host is the node whose devices hold it.
type Revert struct {
	Host string
	Data map[string]any
}

// FollowUp queues the next step after a delay.
type FollowUp struct {
	After time.Duration
	// Sequence queues the next step of a sequence, at Position: it is
	// queued whether or not the alert still fires, and a resolution does
	// not cancel it.
	Sequence bool
	Position int
}

// PendingRevert is a temporary change waiting to be undone.
type PendingRevert struct {
	ID         int64
	ActionType string
	Target     string
	Data       map[string]any
	// Why is "alert resolved" or "selfheal stopping".
	Why string
}

// StormBrakeReason begins the reason of every decision the storm brake
// makes (engine.Limits), so that the braked targets can be listed.
const StormBrakeReason = "storm brake"
