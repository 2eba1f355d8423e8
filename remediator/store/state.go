package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5"
)

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
           AND created_at >= greatest(statement_timestamp() - {failure_window} * interval '1 second', clr.at)),
       (SELECT max(started_at) FROM recovery_actions WHERE service_name = {target} AND remediation = {remediation}
         AND started_at >= COALESCE(clr.at, '-infinity')),
       storm.actions, storm.oldest,
       (SELECT count(*) FROM recovery_actions WHERE status = 'running'),
       -- The chronic count stops at its limit: a target healed thousands
       -- of times costs a decision no more than one healed a few times.
       (SELECT count(*) FROM (SELECT FROM recovery_actions
         WHERE service_name = {target} AND status <> 'dry_run' AND parent_action_id IS NULL
           AND started_at >= greatest(statement_timestamp() - {chronic_window} * interval '1 second',
                                      (SELECT max(cleared_at) FROM target_clears WHERE service_name = {target}))
         LIMIT {chronic_max}) chronic),
       (SELECT min(requested_at) FROM reboot_events
         WHERE status IN ('pending', 'rebooting')
           AND requested_at >= statement_timestamp() - {reboot_pending} * interval '1 second')
FROM engine_settings s
CROSS JOIN (
    SELECT count(*) AS actions, min(started_at) AS oldest FROM recovery_actions
    WHERE started_at >= statement_timestamp() - {storm_window} * interval '1 second' AND status <> 'dry_run'
) storm
CROSS JOIN LATERAL (
    -- The newest selfheal clear of the target: nothing before it counts.
    SELECT max(cleared_at) AS at FROM target_clears
    WHERE service_name = {target} AND (remediation = {remediation} OR remediation IS NULL)
) clr
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
      AND failure_time >= greatest(statement_timestamp() - {failure_window} * interval '1 second', clr.at)
) f
LEFT JOIN LATERAL (
    SELECT created_at, escalate_to FROM escalations
    WHERE service_name = {target} AND remediation = {remediation} AND cleared_at IS NULL
      AND created_at >= greatest(statement_timestamp() - {failure_window} * interval '1 second', clr.at)
    ORDER BY created_at DESC LIMIT 1
) esc ON true`

var stateSQL = strings.NewReplacer("{target}", "$1", "{remediation}", "$2", "{failure_window}", "$3", "{storm_window}", "$4",
	"{occurrence}", "$5", "{reboot_pending}", "$6", "{starts_at}", "$7", "{chronic_window}", "$8", "{chronic_max}", "$9").Replace(stateQuery)

// LoadState reads the decision state for q, with the database's clock,
// having first counted the job's outage when q says so (recordOutagesSQL:
// once, however often it is counted), in one round trip. It commits with
// the claim's outcome. The clock is statement_timestamp(): stable within
// the statement, so every time bound above is an index range
// (clock_timestamp() is volatile, and a bound on it is evaluated row by
// row — a scan of the whole table).
func (c *Claim) LoadState(ctx context.Context, q model.StateQuery) (model.State, error) {
	b := &pgx.Batch{}
	if q.CountOutage {
		queueOutages(b, []model.Outage{{Job: c.job, Target: q.Target}})
	}
	var st model.State
	b.Queue(stateSQL, q.Target, q.Remediation, q.FailureWindow.Seconds(), q.StormWindow.Seconds(),
		c.job.OccurrenceID, rebootPendingFor.Seconds(), c.job.StartsAt, q.ChronicWindow.Seconds(), q.ChronicMax).QueryRow(func(row pgx.Row) error {
		var err error
		st, err = scanState(row, q)
		return err
	})
	if err := c.tx.SendBatch(ctx, b).Close(); err != nil {
		return model.State{}, fmt.Errorf("load decision state for %q: %w", q.Target, err)
	}
	return st, nil
}

// ReadState reads the state a decision on q would meet now, for an alert
// that starts now, changing nothing (selfheal plan).
func (s *Store) ReadState(ctx context.Context, q model.StateQuery) (model.State, error) {
	var st model.State
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		st, err = scanState(tx.QueryRow(ctx, stateSQL, q.Target, q.Remediation, q.FailureWindow.Seconds(), q.StormWindow.Seconds(),
			int64(0), rebootPendingFor.Seconds(), time.Now(), q.ChronicWindow.Seconds(), q.ChronicMax), q)
		return err
	})
	return st, err
}

func scanState(row pgx.Row, q model.StateQuery) (model.State, error) {
	var st model.State
	var escalatedAt, lastEscalation, lastAction, stormOldest, reboot *time.Time
	err := row.Scan(
		&st.Now, &st.Paused, &st.PauseReason, &st.FailuresInWindow, &st.OutageCounted, &escalatedAt, &st.EscalatedTo,
		&lastEscalation, &lastAction, &st.ActionsInStormWindow, &stormOldest, &st.RunningActions, &st.ChronicActions, &reboot)
	if err != nil {
		return model.State{}, fmt.Errorf("load decision state for %q: %w", q.Target, err)
	}
	for _, t := range []struct {
		dst *time.Time
		src *time.Time
	}{{&st.EscalatedAt, escalatedAt}, {&st.LastEscalationAt, lastEscalation}, {&st.LastActionAt, lastAction},
		{&st.StormWindowOldest, stormOldest}, {&st.RebootPendingSince, reboot}} {
		if t.src != nil {
			*t.dst = *t.src
		}
	}
	return st, nil
}

// LastTouch returns an action, for another alert occurrence, that acted on
// the container target — one of the takingDown actions on it (a restart,
// a stop and start: action.TakingDown), or an action that recorded it
// among the containers it touches — and had not finished before since:
// one still running if there is one, else the newest.
func (c *Claim) LastTouch(ctx context.Context, target string, since time.Time, takingDown []string) (model.Touch, bool, error) {
	return lastTouch(ctx, c.tx, target, since, c.job.OccurrenceID, takingDown)
}

// ReadLastTouch is LastTouch for an alert not stored yet (selfheal plan).
func (s *Store) ReadLastTouch(ctx context.Context, target string, since time.Time, takingDown []string) (model.Touch, bool, error) {
	return lastTouch(ctx, s.pool, target, since, 0, takingDown)
}

// LockTargetAndLastTouch is LockTarget and then LastTouch, in one round
// trip: the look at selfheal's own actions runs right after the lock
// statement, in the same batch, and sees what LastTouch after the lock
// would. When the lock is refused the look is returned all the same, and
// means nothing.
func (c *Claim) LockTargetAndLastTouch(ctx context.Context, target string, since time.Time, takingDown []string) (bool, model.Touch, bool, error) {
	var (
		locked, found bool
		t             model.Touch
	)
	b := &pgx.Batch{}
	b.Queue(lockTargetSQL, target, c.job.ID).QueryRow(func(row pgx.Row) error { return row.Scan(&locked) })
	b.Queue(lastTouchSQL, target, since, c.job.OccurrenceID, takingDown).QueryRow(func(row pgx.Row) error {
		var err error
		t, found, err = scanTouch(row)
		return err
	})
	if err := c.tx.SendBatch(ctx, b).Close(); err != nil {
		return false, model.Touch{}, false, fmt.Errorf("lock target %q and look up selfheal's actions on it: %w", target, err)
	}
	return locked, t, found, nil
}

// lastTouchSQL is LastTouch's: $1 the target, $2 since, $3 the occurrence
// whose own actions do not count, $4 the actions that take a target down.
const lastTouchSQL = `
SELECT id, action_type, COALESCE(remediation, ''), started_at, completed_at, status = 'running'
FROM recovery_actions
WHERE started_at >= $2::timestamptz - interval '1 hour'
  AND ((service_name = $1 AND action_type = ANY($4::text[])) OR details->'touches' ? $1)
  AND status <> 'dry_run'
  AND (completed_at IS NULL OR completed_at >= $2)
  AND NOT EXISTS (SELECT 1 FROM remediation_jobs j WHERE j.id = recovery_actions.job_id AND j.occurrence_id = $3)
ORDER BY status = 'running' DESC, started_at DESC
LIMIT 1`

func lastTouch(ctx context.Context, q querier, target string, since time.Time, occurrence int64, takingDown []string) (model.Touch, bool, error) {
	t, found, err := scanTouch(q.QueryRow(ctx, lastTouchSQL, target, since, occurrence, takingDown))
	if err != nil {
		return model.Touch{}, false, fmt.Errorf("look up selfheal's actions on %q: %w", target, err)
	}
	return t, found, nil
}

// scanTouch reads lastTouchSQL's row; no row is no touch.
func scanTouch(row pgx.Row) (model.Touch, bool, error) {
	var t model.Touch
	var completed *time.Time
	err := row.Scan(&t.ActionID, &t.Action, &t.Remediation, &t.Started, &completed, &t.Running)
	if errors.Is(err, pgx.ErrNoRows) {
		return model.Touch{}, false, nil
	}
	if err != nil {
		return model.Touch{}, false, err
	}
	if completed != nil {
		t.Completed = *completed
	}
	return t, true, nil
}

// FastOccurrence returns the fast path's occurrence of remediation on
// target that an alert which started at startsAt may belong to: opened by a
// Docker event no later than the alert began (a second's slack for
// clocks), and still firing or healed no more than within before it.
func (c *Claim) FastOccurrence(ctx context.Context, remediation, target string, startsAt time.Time, within time.Duration) (model.FastOccurrence, bool, error) {
	return fastOccurrence(ctx, c.tx, remediation, target, startsAt, within)
}

// ReadFastOccurrence is FastOccurrence outside a claim (selfheal plan).
func (s *Store) ReadFastOccurrence(ctx context.Context, remediation, target string, startsAt time.Time, within time.Duration) (model.FastOccurrence, bool, error) {
	return fastOccurrence(ctx, s.pool, remediation, target, startsAt, within)
}

func fastOccurrence(ctx context.Context, q querier, remediation, target string, startsAt time.Time, within time.Duration) (model.FastOccurrence, bool, error) {
	var f model.FastOccurrence
	err := q.QueryRow(ctx, `
		SELECT id, starts_at, status = 'firing' FROM alert_occurrences
		WHERE labels->>'selfheal_path' = 'fast' AND remediation = $1 AND labels->>'selfheal_target' = $2
		  AND starts_at <= $3::timestamptz + interval '1 second' AND starts_at >= $3::timestamptz - interval '1 day'
		  AND (status = 'firing' OR resolved_at + $4 * interval '1 second' >= $3::timestamptz)
		ORDER BY starts_at DESC LIMIT 1`, remediation, target, startsAt, within.Seconds()).Scan(&f.ID, &f.StartsAt, &f.Firing)
	if errors.Is(err, pgx.ErrNoRows) {
		return model.FastOccurrence{}, false, nil
	}
	if err != nil {
		return model.FastOccurrence{}, false, fmt.Errorf("find the fast path's occurrence for %s: %w", target, err)
	}
	return f, true, nil
}
