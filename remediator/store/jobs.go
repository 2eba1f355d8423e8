package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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
}

// Claim is a job held by one worker. The worker's transaction keeps the
// job's row locked for as long as it works on it, so no other worker or
// replica can take the job, and a crash releases it with the connection.
// The lock is FOR NO KEY UPDATE so that rows referencing the job (the
// intent, written on another connection) can still be inserted.
// Every write a Claim makes commits with Finish or Defer, atomically.
type Claim struct {
	held
	job  Job
	pool *pgxpool.Pool
}

// held is a pooled connection with a transaction open on it: a Claim's or
// a Round's, whose row locks last until it commits or is released.
type held struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
}

// hold acquires a connection and begins a transaction on it.
func (s *Store) hold(ctx context.Context) (held, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return held{}, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Release()
		return held{}, err
	}
	return held{conn: conn, tx: tx}, nil
}

// release rolls back what was not committed and gives the connection
// back. Safe to call more than once.
func (h *held) release() {
	if h.tx != nil {
		_ = h.tx.Rollback(context.Background())
		h.tx = nil
	}
	if h.conn != nil {
		h.conn.Release()
		h.conn = nil
	}
}

// commit commits and gives the connection back.
func (h *held) commit(ctx context.Context) error {
	err := h.tx.Commit(ctx)
	h.tx = nil
	h.release()
	return err
}

// claimSQL takes the oldest due jobs: %[1]s narrows them to one node's in
// a fleet (through remediation_jobs_node_queued_idx), %[2]s adds a round's
// conditions, and %[3]s is how many. The jobs are chosen and locked from
// the queue alone, and joined with their alerts after: a plan made without
// statistics (a fresh install) or with stale ones (a queue that was empty
// when last analyzed, in a storm) may read and sort every due job, and
// the join would make each of those rows wide and cost an index lookup.
const claimSQL = `
SELECT j.id, j.occurrence_id, j.remediation, j.step, j.created_at,
       o.fingerprint, o.starts_at, o.status, o.alertname, o.labels, o.annotations,
       o.remediation IS DISTINCT FROM j.remediation, COALESCE(j.reason, ''), COALESCE(j.position, 1),
       COALESCE(j.node, '')
FROM (
    SELECT j.id, j.occurrence_id, j.remediation, j.step, j.created_at, j.reason, j.position, j.node, j.not_before
    FROM remediation_jobs j
    WHERE j.state = 'queued' AND j.not_before <= now() %[1]s
      AND NOT (j.remediation = ANY($1))
      AND (j.remediation = ANY($2) OR j.created_at < now() - $3 * interval '1 second') %[2]s
    ORDER BY j.not_before, j.id
    LIMIT %[3]s
    FOR NO KEY UPDATE OF j SKIP LOCKED
) j
JOIN alert_occurrences o ON o.id = j.occurrence_id
ORDER BY j.not_before, j.id`

const nodeFilter = "AND j.node = ANY($4)"

var (
	claimAnySQL  = fmt.Sprintf(claimSQL, "", "", "1")
	claimNodeSQL = fmt.Sprintf(claimSQL, nodeFilter, "", "1")
	claimIDSQL   = fmt.Sprintf(claimSQL, "", "AND j.id = $4", "1")
)

// scanJob reads one row of claimSQL.
func scanJob(row pgx.Row, j *Job) error {
	return row.Scan(&j.ID, &j.OccurrenceID, &j.Remediation, &j.Step, &j.CreatedAt,
		&j.Fingerprint, &j.StartsAt, &j.AlertStatus, &j.Alertname, &j.Labels, &j.Annotations, &j.Escalated,
		&j.Reason, &j.Position, &j.Node)
}

// args are claimSQL's parameters for f: $1 to $3, and $4 in a fleet.
func (f ClaimFilter) args() []any {
	skip, known := f.Skip, f.Known
	if skip == nil {
		skip = []string{}
	}
	if known == nil {
		known = []string{}
	}
	args := []any{skip, known, f.UnknownAfter.Seconds()}
	switch {
	case f.ID != 0:
		args = append(args, f.ID)
	case f.Nodes != nil:
		args = append(args, f.Nodes)
	}
	return args
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

// ClaimJob takes the oldest due job no one else holds that f lets this
// replica take. It returns nil, nil when there is none.
func (s *Store) ClaimJob(ctx context.Context, f ClaimFilter) (*Claim, error) {
	h, err := s.hold(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim job: %w", err)
	}
	c := &Claim{held: h, pool: s.pool}
	sql := claimAnySQL
	switch {
	case f.ID != 0:
		sql = claimIDSQL
	case f.Nodes != nil:
		sql = claimNodeSQL
	}
	jobs, err := claimJobs(ctx, c.tx, sql, f.args())
	if err != nil || len(jobs) == 0 {
		c.Release()
		if err != nil {
			return nil, fmt.Errorf("claim job: %w", err)
		}
		return nil, nil
	}
	c.job = jobs[0]
	return c, nil
}

// claimJobs runs a claimSQL statement in tx, planned with sorting off. The
// queue's index gives the jobs in order; a plan that sorts instead reads
// every due job, and the planner picks it whenever it believes the queue
// short — which, in a storm, is when its statistics are oldest. Sorting is
// back on for the claim's other statements.
func claimJobs(ctx context.Context, tx pgx.Tx, sql string, args []any) ([]Job, error) {
	var jobs []Job
	b := &pgx.Batch{}
	b.Queue("SET LOCAL enable_sort = off")
	b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var j Job
			if err := scanJob(rows, &j); err != nil {
				return err
			}
			jobs = append(jobs, j)
		}
		return rows.Err()
	})
	b.Queue("RESET enable_sort")
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return jobs, nil
}

// Job is the claimed job.
func (c *Claim) Job() Job { return c.job }

// Release ends the claim without recording anything: the job goes back to
// the queue. Safe to call after Finish or Defer.
func (c *Claim) Release() { c.release() }

// Orphan is an action a job started that never recorded its outcome.
type Orphan struct {
	ActionID int64
	Target   string
	Action   string
}

// OrphanedAction returns the action this job started that never recorded
// its outcome: its worker died between intent and outcome. Holding the
// job's row lock proves that worker is gone.
func (c *Claim) OrphanedAction(ctx context.Context) (Orphan, bool, error) {
	var o Orphan
	err := c.tx.QueryRow(ctx, `SELECT id, service_name, action_type FROM recovery_actions WHERE job_id = $1 AND status = 'running'`,
		c.job.ID).Scan(&o.ActionID, &o.Target, &o.Action)
	if errors.Is(err, pgx.ErrNoRows) {
		return Orphan{}, false, nil
	}
	if err != nil {
		return Orphan{}, false, fmt.Errorf("look up orphaned action: %w", err)
	}
	return o, true, nil
}

// LockTarget takes the per-target advisory lock for the rest of the claim.
// It does not wait: false means another worker is acting on the target.
func (c *Claim) LockTarget(ctx context.Context, target string) (bool, error) {
	var ok bool
	err := c.tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtextextended('selfheal/target/' || $1, 0))`, target).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("lock target %q: %w", target, err)
	}
	return ok, nil
}

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
	RunningActions       int
	// RebootPendingSince is set while a guarded reboot is under way.
	RebootPendingSince time.Time
}

// StateQuery says which target and windows a decision looks at.
type StateQuery struct {
	Target        string
	Remediation   string
	FailureWindow time.Duration
	StormWindow   time.Duration
}

// rebootPendingFor is how long a reboot that was started but never
// validated holds smaller actions back; a reboot that did not happen by
// then has failed, and healing goes on.
const rebootPendingFor = 10 * time.Minute

// stateQuery is the decision state of one target and remediation, with
// the database's clock. Its placeholders are parameters in stateSQL (one
// decision) and columns in roundStateSQL (a round's).
const stateQuery = `
SELECT statement_timestamp(),
       s.paused, s.reason,
       f.failures, f.outage_counted,
       esc.created_at, COALESCE(esc.escalate_to, ''),
       (SELECT max(created_at) FROM escalations
         WHERE service_name = {target} AND remediation = {remediation}
           AND created_at >= statement_timestamp() - {failure_window} * interval '1 second'),
       (SELECT max(started_at) FROM recovery_actions WHERE service_name = {target} AND remediation = {remediation}),
       (SELECT count(*) FROM recovery_actions
         WHERE started_at >= statement_timestamp() - {storm_window} * interval '1 second' AND status <> 'dry_run'),
       (SELECT count(*) FROM recovery_actions WHERE status = 'running'),
       (SELECT min(requested_at) FROM reboot_events
         WHERE status IN ('pending', 'rebooting')
           AND requested_at >= statement_timestamp() - {reboot_pending} * interval '1 second')
FROM engine_settings s
CROSS JOIN LATERAL (
    -- The target's failures in the window, and whether this alert's outage
    -- is among them, in one read of (service_name, remediation,
    -- failure_time). No condition on failure_type: the partial index on
    -- outages by occurrence would then qualify, and a plan made without
    -- statistics chose it and read it whole for every decision.
    SELECT count(*) AS failures,
           COALESCE(bool_or(failure_type = 'outage' AND (occurrence_id = {occurrence} OR failure_time >= {starts_at})), false)
               AS outage_counted
    FROM service_failures
    WHERE service_name = {target} AND remediation = {remediation}
      AND failure_time >= statement_timestamp() - {failure_window} * interval '1 second'
) f
LEFT JOIN LATERAL (
    SELECT created_at, escalate_to FROM escalations
    WHERE service_name = {target} AND remediation = {remediation} AND cleared_at IS NULL
      AND created_at >= statement_timestamp() - {failure_window} * interval '1 second'
    ORDER BY created_at DESC LIMIT 1
) esc ON true`

var stateSQL = strings.NewReplacer("{target}", "$1", "{remediation}", "$2", "{failure_window}", "$3", "{storm_window}", "$4",
	"{occurrence}", "$5", "{reboot_pending}", "$6", "{starts_at}", "$7").Replace(stateQuery)

// LoadState reads the decision state for q, with the database's clock. The
// clock is statement_timestamp(): stable within the statement, so every
// time bound above is an index range (clock_timestamp() is volatile, and a
// bound on it is evaluated row by row — a scan of the whole table).
func (c *Claim) LoadState(ctx context.Context, q StateQuery) (State, error) {
	return scanState(c.tx.QueryRow(ctx, stateSQL, q.Target, q.Remediation, q.FailureWindow.Seconds(), q.StormWindow.Seconds(),
		c.job.OccurrenceID, rebootPendingFor.Seconds(), c.job.StartsAt), q)
}

// ReadState reads the state a decision on q would meet now, for an alert
// that starts now, changing nothing (selfheal plan).
func (s *Store) ReadState(ctx context.Context, q StateQuery) (State, error) {
	var st State
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		st, err = scanState(tx.QueryRow(ctx, stateSQL, q.Target, q.Remediation, q.FailureWindow.Seconds(), q.StormWindow.Seconds(),
			int64(0), rebootPendingFor.Seconds(), time.Now()), q)
		return err
	})
	return st, err
}

func scanState(row pgx.Row, q StateQuery) (State, error) {
	var st State
	var escalatedAt, lastEscalation, lastAction, reboot *time.Time
	err := row.Scan(
		&st.Now, &st.Paused, &st.PauseReason, &st.FailuresInWindow, &st.OutageCounted, &escalatedAt, &st.EscalatedTo,
		&lastEscalation, &lastAction, &st.ActionsInStormWindow, &st.RunningActions, &reboot)
	if err != nil {
		return State{}, fmt.Errorf("load decision state for %q: %w", q.Target, err)
	}
	for _, t := range []struct {
		dst *time.Time
		src *time.Time
	}{{&st.EscalatedAt, escalatedAt}, {&st.LastEscalationAt, lastEscalation}, {&st.LastActionAt, lastAction}, {&st.RebootPendingSince, reboot}} {
		if t.src != nil {
			*t.dst = *t.src
		}
	}
	return st, nil
}

// RecordOutage counts the job's alert occurrence as one failure of
// target, once (recordOutagesSQL): recording it again (a deferred job
// looked at anew, another replica) changes nothing. It commits with the
// claim's outcome.
func (c *Claim) RecordOutage(ctx context.Context, target string) error {
	return recordOutages(ctx, c.tx, []Outage{{Job: c.job, Target: target}})
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

// LastTouch returns an action, for another alert occurrence, that acted on
// the container target — a restart or stop and start of it, or an action
// that recorded it among the containers it touches — and had not finished
// before since: one still running if there is one, else the newest.
func (c *Claim) LastTouch(ctx context.Context, target string, since time.Time) (Touch, bool, error) {
	var t Touch
	var completed *time.Time
	err := c.tx.QueryRow(ctx, `
		SELECT id, action_type, COALESCE(remediation, ''), started_at, completed_at, status = 'running'
		FROM recovery_actions
		WHERE started_at >= $2::timestamptz - interval '1 hour'
		  AND ((service_name = $1 AND action_type IN ('restart', 'stop_start')) OR details->'touches' ? $1)
		  AND status <> 'dry_run'
		  AND (completed_at IS NULL OR completed_at >= $2)
		  AND NOT EXISTS (SELECT 1 FROM remediation_jobs j WHERE j.id = recovery_actions.job_id AND j.occurrence_id = $3)
		ORDER BY status = 'running' DESC, started_at DESC
		LIMIT 1`, target, since, c.job.OccurrenceID).Scan(&t.ActionID, &t.Action, &t.Remediation, &t.Started, &completed, &t.Running)
	if errors.Is(err, pgx.ErrNoRows) {
		return Touch{}, false, nil
	}
	if err != nil {
		return Touch{}, false, fmt.Errorf("look up selfheal's actions on %q: %w", target, err)
	}
	if completed != nil {
		t.Completed = *completed
	}
	return t, true, nil
}

// FastOccurrence is the fast path's occurrence of an outage.
type FastOccurrence struct {
	ID       int64
	StartsAt time.Time // the Docker event
	Firing   bool      // its remediation is still under way
}

// FastOccurrence returns the fast path's occurrence of remediation on
// target that an alert which started at startsAt may belong to: opened by a
// Docker event no later than the alert began (a second's slack for
// clocks), and still firing or healed no more than within before it.
func (c *Claim) FastOccurrence(ctx context.Context, remediation, target string, startsAt time.Time, within time.Duration) (FastOccurrence, bool, error) {
	var f FastOccurrence
	err := c.tx.QueryRow(ctx, `
		SELECT id, starts_at, status = 'firing' FROM alert_occurrences
		WHERE labels->>'selfheal_path' = 'fast' AND remediation = $1 AND labels->>'selfheal_target' = $2
		  AND starts_at <= $3::timestamptz + interval '1 second' AND starts_at >= $3::timestamptz - interval '1 day'
		  AND (status = 'firing' OR resolved_at + $4 * interval '1 second' >= $3::timestamptz)
		ORDER BY starts_at DESC LIMIT 1`, remediation, target, startsAt, within.Seconds()).Scan(&f.ID, &f.StartsAt, &f.Firing)
	if errors.Is(err, pgx.ErrNoRows) {
		return FastOccurrence{}, false, nil
	}
	if err != nil {
		return FastOccurrence{}, false, fmt.Errorf("find the fast path's occurrence for %s: %w", target, err)
	}
	return f, true, nil
}

// Defer puts the job back in the queue until d from now, with a reason,
// and records events, if any, in the same commit.
func (c *Claim) Defer(ctx context.Context, d time.Duration, reason string, events ...Event) error {
	_, err := c.tx.Exec(ctx, `UPDATE remediation_jobs SET not_before = clock_timestamp() + $2 * interval '1 second', reason = $3 WHERE id = $1`,
		c.job.ID, d.Seconds(), reason)
	for _, e := range events {
		if err != nil {
			break
		}
		_, err = c.tx.Exec(ctx, `INSERT INTO self_healing_events (event_time, severity, event_type, service_name, remediation, job_id, occurrence_id, message, details)
			VALUES (clock_timestamp(), $1, $2, NULLIF($3, ''), $4, $5, $6, $7, $8)`,
			e.Severity, e.Type, e.Target, c.job.Remediation, c.job.ID, c.job.OccurrenceID, e.Message, jsonObject(e.Details))
	}
	if err != nil {
		c.Release()
		return fmt.Errorf("defer job %d: %w", c.job.ID, err)
	}
	if err := c.commit(ctx); err != nil {
		return fmt.Errorf("defer job %d: %w", c.job.ID, err)
	}
	return nil
}

// Intent describes an action about to run.
type Intent struct {
	Target   string
	Action   string
	Category string
	Attempt  int
	// Reason explains the decision; it becomes the decision event.
	Reason  string
	Details map[string]any
}

const intentSQL = `
WITH action AS (
    INSERT INTO recovery_actions (service_name, action_type, status, job_id, remediation, category, attempt, details, cooldown_until)
    VALUES ($1, $2, 'running', $3, $4, NULLIF($5, ''), $6, $7,
            CASE WHEN COALESCE(($7::jsonb->>'cooldown_seconds')::float8, 0) > 0
                 THEN now() + make_interval(secs => ($7::jsonb->>'cooldown_seconds')::float8) END)
    RETURNING id
), decision AS (
    INSERT INTO self_healing_events (severity, event_type, service_name, remediation, job_id, occurrence_id, message, details)
    SELECT 'INFO', 'decision', $1, $4, $3, $8, $9, jsonb_build_object('verdict', 'run', 'action', $2::text, 'attempt', $6::int)
    FROM action
)
SELECT id FROM action`

// RecordIntent writes, and commits at once, the row saying an action is
// about to run, with the decision that led to it. It uses a connection of
// its own so the row is durable before the action starts, while the claim's
// transaction stays open.
func (c *Claim) RecordIntent(ctx context.Context, in Intent) (int64, error) {
	var id int64
	j := c.job
	err := c.pool.QueryRow(ctx, intentSQL, in.Target, in.Action, j.ID, j.Remediation, in.Category, in.Attempt,
		jsonObject(in.Details), j.OccurrenceID, in.Reason).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("record intent for %s on %q: %w", in.Action, in.Target, err)
	}
	return id, nil
}

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

	// Revert, when set, records a change to undo when the alert resolves.
	Revert *Revert

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

// Revert is a temporary change an action made, on Host.
type Revert struct {
	Host       string
	ActionType string
	Target     string
	Data       map[string]any
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

// Finish records the outcome and ends the claim.
func (c *Claim) Finish(ctx context.Context, o Outcome) error {
	defer c.Release()
	j := c.job
	b := &pgx.Batch{}
	var result any
	if o.Result != "" {
		result = o.Result
	}
	b.Queue(`UPDATE remediation_jobs SET state = $2, outcome = $3, target = NULLIF($4, ''), reason = $5, finished_at = clock_timestamp()
		WHERE id = $1`, j.ID, o.State, result, o.Target, o.Reason)
	if o.ActionID != 0 {
		b.Queue(`UPDATE recovery_actions SET status = $2, error_message = NULLIF($3, ''), completed_at = clock_timestamp(),
			details = details || $4 WHERE id = $1`, o.ActionID, o.ActionStatus, o.ActionError, jsonObject(o.ActionDetail))
	}
	if o.JoinedTo != 0 {
		b.Queue(`UPDATE alert_occurrences SET joined_occurrence_id = $2 WHERE id = $1`, j.OccurrenceID, o.JoinedTo)
	}
	if o.ResolveOccurrence {
		b.Queue(`UPDATE alert_occurrences SET status = 'resolved', ends_at = COALESCE(ends_at, clock_timestamp()),
			resolved_at = clock_timestamp() WHERE id = $1 AND status = 'firing'`, j.OccurrenceID)
	}
	for _, t := range o.Touched {
		if o.ActionID == 0 {
			break
		}
		b.Queue(`INSERT INTO recovery_actions (service_name, action_type, status, job_id, remediation, category, attempt,
				details, error_message, started_at, completed_at, parent_action_id)
			SELECT $1, $2, $3, job_id, remediation, category, attempt, $4, NULLIF($5, ''), $6, $7, id
			FROM recovery_actions WHERE id = $8`,
			t.Target, t.Action, t.Status, jsonObject(t.Details), t.Error, t.Started, t.Ended, o.ActionID)
	}
	if d := o.DryRun; d != nil {
		b.Queue(`INSERT INTO recovery_actions (service_name, action_type, status, job_id, remediation, category, attempt, details, completed_at)
			VALUES ($1, $2, 'dry_run', $3, $4, NULLIF($5, ''), $6, $7, clock_timestamp())`,
			d.Target, d.Action, j.ID, j.Remediation, d.Category, d.Attempt, jsonObject(d.Details))
	}
	if f := o.Failure; f != nil {
		b.Queue(`INSERT INTO service_failures (service_name, failure_type, status, failure_time, remediation, job_id)
			VALUES ($1, $2, $3, clock_timestamp(), $4, $5)`, o.Target, f.Type, f.Status, j.Remediation, j.ID)
	}
	if e := o.Escalation; e != nil {
		b.Queue(`INSERT INTO escalations (service_name, remediation, escalate_to, reason, job_id, created_at)
			VALUES ($1, $2, NULLIF($3, ''), $4, $5, clock_timestamp())`, o.Target, j.Remediation, e.To, e.Reason, j.ID)
		if e.To != "" {
			// The bigger remediation takes over the same alert occurrence.
			// It runs even if the alert resolves meanwhile: the smaller
			// fixes did not hold, so a moment's recovery proves nothing.
			b.Queue(`INSERT INTO remediation_jobs (occurrence_id, remediation, step, keep_on_resolve, node)
				VALUES ($1, $2, 1, true, COALESCE(NULLIF($3, ''), selfheal_node())) ON CONFLICT DO NOTHING`, j.OccurrenceID, e.To, j.Node)
		}
	}
	if r := o.Revert; r != nil {
		b.Queue(`INSERT INTO pending_reverts (action_id, occurrence_id, action_type, target, data, host)
			VALUES (NULLIF($1, 0), $2, $3, $4, $5, $6)`, o.ActionID, j.OccurrenceID, r.ActionType, r.Target, jsonObject(r.Data), r.Host)
	}
	if f := o.FollowUp; f != nil {
		b.Queue(`INSERT INTO remediation_jobs (occurrence_id, remediation, step, not_before, keep_on_resolve, position, node)
			SELECT $1, $2, $3, clock_timestamp() + $4 * interval '1 second', $5, NULLIF($6, 0), COALESCE(NULLIF($7, ''), selfheal_node())
			FROM alert_occurrences WHERE id = $1 AND (status = 'firing' OR $5)
			ON CONFLICT DO NOTHING`, j.OccurrenceID, j.Remediation, j.Step+1, f.After.Seconds(), f.Sequence, f.Position, j.Node)
	}
	for _, e := range o.Events {
		b.Queue(`INSERT INTO self_healing_events (event_time, severity, event_type, service_name, remediation, job_id, occurrence_id, message, details)
			VALUES (clock_timestamp(), $1, $2, NULLIF($3, ''), $4, $5, $6, $7, $8)`,
			e.Severity, e.Type, e.Target, j.Remediation, j.ID, j.OccurrenceID, e.Message, jsonObject(e.Details))
	}
	if err := c.tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("record outcome of job %d: %w", j.ID, err)
	}
	if err := c.commit(ctx); err != nil {
		return fmt.Errorf("record outcome of job %d: %w", j.ID, err)
	}
	return nil
}

func jsonObject(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
