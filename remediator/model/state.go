package model

import (
	"time"
)

// State is what the database knows that a decision depends on. Failures,
// escalations and cooldowns are counted per target and remediation: the
// remediation a ladder escalates to starts its own count on the same
// target.
type State struct {
	Now         time.Time
	Paused      bool
	PauseReason string
	// FailuresInWindow counts the target's failures: its detected outages
	// (OutageCounted says whether this occurrence's is among them) and its
	// failed actions.
	FailuresInWindow int
	OutageCounted    bool
	EscalatedAt      time.Time // an open escalation; zero when none
	EscalatedTo      string
	// LastEscalationAt is the newest escalation in the failure window,
	// cleared or not: a target escalates at most once per window.
	LastEscalationAt     time.Time
	LastActionAt         time.Time // last action of this remediation on this target; zero when none
	ActionsInStormWindow int
	// StormWindowOldest is when the oldest of those started: the storm
	// brake lets go, at the earliest, when it leaves the window.
	StormWindowOldest time.Time
	RunningActions    int
	// ChronicActions counts the target's actions, by any remediation,
	// within the chronic window since its last selfheal clear, up to
	// StateQuery.ChronicMax: past the limit, how far past it is not read.
	ChronicActions int
	// RebootPendingSince is set while a guarded reboot is under way.
	RebootPendingSince time.Time
}

// StateQuery says which target and windows a decision looks at.
type StateQuery struct {
	Target        string
	Remediation   string
	FailureWindow time.Duration
	StormWindow   time.Duration
	// ChronicWindow is how far back ChronicActions counts, and
	// ChronicMax how many at most; zero counts none.
	ChronicWindow time.Duration
	ChronicMax    int
	// CountOutage counts the job's alert occurrence as one failure of
	// Target, once, before the state is read and in the same round trip:
	// the alert is an outage of its target (engine's countsOutage).
	CountOutage bool
}

// Touch is an action of selfheal's on a target.
type Touch struct {
	ActionID    int64
	Action      string
	Remediation string
	Started     time.Time
	Completed   time.Time // zero while it runs
	Running     bool
}

// FastOccurrence is the fast path's occurrence of an outage.
type FastOccurrence struct {
	ID       int64
	StartsAt time.Time // the Docker event
	Firing   bool      // its remediation is still under way
}
