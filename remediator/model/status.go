package model

// The closed sets the schema's CHECK constraints hold. A test keeps each
// list equal to its constraint (TestStatusSetsMatchTheSchema).

// Severity is an event's severity in self_healing_events.
type Severity string

// Severities, mildest first.
const (
	SeverityInfo      Severity = "INFO"
	SeverityWarning   Severity = "WARNING"
	SeverityError     Severity = "ERROR"
	SeverityCritical  Severity = "CRITICAL"
	SeverityEmergency Severity = "EMERGENCY"
)

// Severities lists every severity.
var Severities = []Severity{SeverityInfo, SeverityWarning, SeverityError, SeverityCritical, SeverityEmergency}

// JobState is where a job is in remediation_jobs.
type JobState string

// Job states.
const (
	JobQueued      JobState = "queued"
	JobDone        JobState = "done"
	JobCancelled   JobState = "cancelled"
	JobInterrupted JobState = "interrupted"
)

// JobStates lists every job state.
var JobStates = []JobState{JobQueued, JobDone, JobCancelled, JobInterrupted}

// JobOutcome is how a finished job ended.
type JobOutcome string

// Job outcomes.
const (
	OutcomeSucceeded JobOutcome = "succeeded"
	OutcomeFailed    JobOutcome = "failed"
	OutcomeRefused   JobOutcome = "refused"
	OutcomeSkipped   JobOutcome = "skipped"
	OutcomeDryRun    JobOutcome = "dry_run"
	OutcomeEscalated JobOutcome = "escalated"
)

// JobOutcomes lists every job outcome.
var JobOutcomes = []JobOutcome{OutcomeSucceeded, OutcomeFailed, OutcomeRefused, OutcomeSkipped, OutcomeDryRun, OutcomeEscalated}

// ActionStatus is an action's status in recovery_actions.
type ActionStatus string

// Action statuses.
const (
	ActionRunning     ActionStatus = "running"
	ActionSucceeded   ActionStatus = "succeeded"
	ActionFailed      ActionStatus = "failed"
	ActionInterrupted ActionStatus = "interrupted"
	ActionDryRun      ActionStatus = "dry_run"
)

// ActionStatuses lists every action status.
var ActionStatuses = []ActionStatus{ActionRunning, ActionSucceeded, ActionFailed, ActionInterrupted, ActionDryRun}
