package model

import (
	"time"
)

// Job is one queued remediation step together with the alert it serves.
type Job struct {
	ID           int64
	OccurrenceID int64
	Remediation  string
	Step         int
	CreatedAt    time.Time // when the job was queued
	Fingerprint  string
	StartsAt     time.Time
	AlertStatus  string
	Alertname    string
	Labels       map[string]string
	Annotations  map[string]string
	// Escalated is set when the job's remediation took the occurrence over
	// by escalation rather than by matching the alert.
	Escalated bool
	// Reason is why the job was last deferred; empty for a new job.
	Reason string
	// Position is which action of a sequence the job runs (1 for a job the
	// alert itself queued).
	Position int
	// Node is the node the job is for ("" when its alert named none).
	Node string
	// Waited is how long ago it was queued, by the database's clock.
	Waited time.Duration
	// Acting: an action of the job's has not recorded its outcome (its
	// worker runs it, or stopped), as the claim found it. It cannot change
	// while the job is held: only its holder starts an action for it, and
	// recording an outcome takes the job's row.
	Acting bool
}

// ClaimFilter says which jobs a replica takes.
type ClaimFilter struct {
	// Known are the remediations this replica's configuration has: a job
	// of another is left to a replica that knows it, until it has waited
	// UnknownAfter (no replica knows it: it is claimed to be refused).
	Known        []string
	UnknownAfter time.Duration
	// Skip are the remediations this replica cannot act on now (the
	// Docker Engine away): another replica may.
	Skip []string
	// Nodes, when set, are the names of this engine's node (fleet mode):
	// only jobs for it are taken. Nil takes every node's (one host).
	Nodes []string
	// ID, when set, takes that job only, if it is due and no one holds it
	// (one a round left for a decision of its own).
	ID int64
}

// Orphan is an action a job started that has not recorded its outcome.
type Orphan struct {
	ActionID int64
	Target   string
	Action   string
	Owner    string
	// Held says that its owner may still hold it: the lease has not lapsed,
	// or the database started too recently for the owner to have renewed
	// it. HeldFor is how long that lasts at the least.
	Held    bool
	HeldFor time.Duration
	// RunsFor is how long the action may still run by its own timeout: the
	// next step waits that long after a takeover, since a lapsed lease
	// says the owner stopped renewing, not that its action stopped.
	RunsFor time.Duration
}

// Outage is a job's alert counted as one failure of its target.
type Outage struct {
	Job    Job
	Target string
}

// RoundQuery is one decision's StateQuery, for its job.
type RoundQuery struct {
	Job Job
	StateQuery
}

// Settled is a round's job that ends with a decision that runs nothing,
// and the decision's event (which names the job's target).
type Settled struct {
	Job    Job
	Result JobOutcome
	Target string
	Reason string
	Event  Event
}
