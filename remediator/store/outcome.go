package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5"
)

// admissionLock serialises admissions in the scope the counts cover: the
// session's node in a fleet (row-level security keeps its counts to its
// own rows), the whole database on one host.
const admissionLock = `SELECT pg_advisory_xact_lock(hashtextextended('selfheal/admission/' || COALESCE(selfheal_node(), ''), 0))`

// intentSQL counts, under the admission lock, the actions running and
// those started within the storm window, and inserts the intent — running,
// leased to its owner, with its deadline, its decision event and the
// change to undo — only while both are below their limits. The counts are
// those stateQuery reads; the statement's snapshot is taken after the lock
// is held, so it sees every intent admitted before it.
const intentSQL = `
WITH counts AS (
    SELECT (SELECT count(*) FROM recovery_actions WHERE status = 'running') AS running,
           (SELECT count(*) FROM recovery_actions
             WHERE started_at >= statement_timestamp() - $12 * interval '1 second' AND status <> 'dry_run') AS in_window
), action AS (
    INSERT INTO recovery_actions (service_name, action_type, status, job_id, remediation, category, attempt, details,
                                  cooldown_until, started_at, owner, lease_until, renewed_at, deadline)
    SELECT $1, $2, 'running', $3, $4, NULLIF($5, ''), $6, $7,
           CASE WHEN COALESCE(($7::jsonb->>'cooldown_seconds')::float8, 0) > 0
                THEN clock_timestamp() + make_interval(secs => ($7::jsonb->>'cooldown_seconds')::float8) END,
           clock_timestamp(), $13, clock_timestamp() + $14 * interval '1 second', clock_timestamp(),
           clock_timestamp() + $15 * interval '1 second'
    FROM counts
    WHERE ($10 = 0 OR running < $10) AND ($11 = 0 OR in_window < $11)
    RETURNING id, lease_until
), decision AS (
    INSERT INTO self_healing_events (severity, event_type, service_name, remediation, job_id, occurrence_id, message, details)
    SELECT 'INFO', 'decision', $1, $4, $3, $8, $9, jsonb_build_object('verdict', 'run', 'action', $2::text, 'attempt', $6::int)
    FROM action
), leased AS (
    -- While its action runs, the job is not due: a worker that finds it
    -- due again finds a lapsed lease.
    UPDATE remediation_jobs SET not_before = (SELECT lease_until FROM action), attempts = 0
    WHERE id = $3 AND EXISTS (SELECT 1 FROM action)
), revert AS (
    INSERT INTO pending_reverts (action_id, occurrence_id, action_type, target, data, host, owner)
    SELECT id, $8, $2, $1, $16, $17, $13 FROM action WHERE $16::jsonb IS NOT NULL
)
SELECT COALESCE((SELECT id FROM action), 0), running, in_window FROM counts`

// RecordIntent admits the action under in.Limits and, if admitted, writes
// the row saying it is about to run and commits the claim's decision with
// it, so the intent is durable before the action starts. From then on the
// claim holds no transaction: the action is the owner's by its lease
// (Renew), and Finish records the outcome. When a limit refuses it,
// nothing is written and the claim's transaction stays open for the
// decision the counts now call for (Defer or Finish).
func (c *Claim) RecordIntent(ctx context.Context, in model.Intent) (model.Admitted, error) {
	j := c.job
	var a model.Admitted
	var revert any
	host := ""
	if in.Revert != nil {
		revert, host = jsonObject(in.Revert.Data), in.Revert.Host
	}
	b := &pgx.Batch{}
	// The lock is taken in a savepoint: a refusal rolls back to it, which
	// releases the lock at once rather than when the decision the refusal
	// calls for commits.
	b.Queue("SAVEPOINT admission")
	b.Queue(admissionLock)
	b.Queue(intentSQL, in.Target, in.Action, j.ID, j.Remediation, in.Category, in.Attempt,
		jsonObject(in.Details), j.OccurrenceID, in.Reason, in.Limits.MaxRunning, in.Limits.MaxInWindow,
		in.Limits.Window.Seconds(), in.Owner, in.Lease.Seconds(), in.Timeout.Seconds(), revert, host).QueryRow(func(row pgx.Row) error {
		return row.Scan(&a.ActionID, &a.Running, &a.InWindow)
	})
	if err := c.tx.SendBatch(ctx, b).Close(); err != nil {
		return model.Admitted{}, fmt.Errorf("record intent for %s on %q: %w", in.Action, in.Target, err)
	}
	if a.ActionID == 0 {
		if _, err := c.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT admission"); err != nil {
			return model.Admitted{}, fmt.Errorf("record intent for %s on %q: %w", in.Action, in.Target, err)
		}
		return a, nil
	}
	if err := c.commit(ctx); err != nil {
		return model.Admitted{}, fmt.Errorf("record intent for %s on %q: %w", in.Action, in.Target, err)
	}
	c.setAction(&acting{actionID: a.ActionID, owner: in.Owner})
	return a, nil
}

// ReleaseLeases ends the leases of the actions owner still runs: it is
// exiting without waiting for them (its shutdown timeout passed), so
// whoever finds their jobs next takes them over at once rather than a
// lease later. Their next steps still wait for each action's deadline.
func (s *Store) ReleaseLeases(ctx context.Context, owner string) (int, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE recovery_actions SET lease_until = now(), renewed_at = now() WHERE status = 'running' AND owner = $1`, owner)
	if err != nil {
		return 0, fmt.Errorf("release the leases of %s: %w", owner, err)
	}
	if _, err := s.pool.Exec(ctx, `UPDATE remediation_jobs j SET not_before = now() FROM recovery_actions a
		WHERE a.job_id = j.id AND a.status = 'running' AND a.owner = $1 AND j.state = 'queued'`, owner); err != nil {
		return 0, fmt.Errorf("release the leases of %s: %w", owner, err)
	}
	return int(tag.RowsAffected()), nil
}

// Renew extends the lease of the claim's running action by lease, from the
// database's clock, and reports whether the action's alert has resolved
// since. It uses any connection of the pool, so it works across
// reconnections. ErrTakenOver says another worker took the action over.
// Once Finish has recorded the outcome there is nothing to renew: it
// returns false, nil, even when it raced with Finish.
func (c *Claim) Renew(ctx context.Context, lease time.Duration) (resolved bool, err error) {
	a := c.action()
	if a == nil {
		return false, nil
	}
	err = c.store.pool.QueryRow(ctx, `UPDATE recovery_actions a
		SET lease_until = clock_timestamp() + $3 * interval '1 second', renewed_at = clock_timestamp()
		WHERE id = $1 AND status = 'running' AND owner = $2
		RETURNING COALESCE((SELECT o.status = 'resolved' FROM remediation_jobs j JOIN alert_occurrences o ON o.id = j.occurrence_id
		                    WHERE j.id = a.job_id), false)`, a.actionID, a.owner, lease.Seconds()).Scan(&resolved)
	switch {
	case c.action() == nil:
		return false, nil // Finish recorded the outcome meanwhile
	case errors.Is(err, pgx.ErrNoRows):
		return false, model.ErrTakenOver
	case err != nil:
		return false, fmt.Errorf("renew the lease of action %d: %w", a.actionID, err)
	}
	return resolved, nil
}

// Finish records the outcome and ends the claim, in one commit. After a
// decision (no action) it commits the claim's transaction. After an action
// it opens a transaction of its own — the claim holds none while its
// action runs — and records the outcome only while the action is still
// the claim's: if its lease lapsed and another worker took it over, it
// records that the outcome came late and returns ErrTakenOver.
func (c *Claim) Finish(ctx context.Context, o model.Outcome) error {
	if c.action() == nil {
		defer c.Release()
		if err := c.tx.SendBatch(ctx, outcomeBatch(c.job, o)).Close(); err != nil {
			return fmt.Errorf("record outcome of job %d: %w", c.job.ID, err)
		}
		if err := c.commit(ctx); err != nil {
			return fmt.Errorf("record outcome of job %d: %w", c.job.ID, err)
		}
		return nil
	}
	j, a := c.job, c.action()
	var lost bool
	err := pgx.BeginFunc(ctx, c.store.pool, func(tx pgx.Tx) error {
		// Only a worker deciding on the job holds its row, and not for long.
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '10s'"); err != nil {
			return err
		}
		var status, owner string
		err := tx.QueryRow(ctx, `SELECT a.status, COALESCE(a.owner, '')
			FROM remediation_jobs j JOIN recovery_actions a ON a.job_id = j.id AND a.id = $2
			WHERE j.id = $1 FOR NO KEY UPDATE OF j`, j.ID, a.actionID).Scan(&status, &owner)
		if errors.Is(err, pgx.ErrNoRows) {
			status = "gone"
		} else if err != nil {
			return err
		}
		if status != string(model.ActionRunning) || owner != a.owner {
			lost = true
			_, err := tx.Exec(ctx, `INSERT INTO self_healing_events (severity, event_type, service_name, remediation, job_id, occurrence_id, message, details)
				VALUES ('WARNING', 'outcome_after_takeover', NULLIF($1, ''), $2, $3, $4, $5, $6)`,
				o.Target, j.Remediation, j.ID, j.OccurrenceID,
				fmt.Sprintf("action %d ended (%s) after another worker had taken it over (it is %s): its outcome is not recorded", a.actionID, o.ActionStatus, status),
				map[string]any{"action_id": a.actionID, "status": string(o.ActionStatus), "error": o.ActionError})
			return err
		}
		return tx.SendBatch(ctx, outcomeBatch(j, o)).Close()
	})
	if err != nil {
		return fmt.Errorf("record outcome of job %d: %w", j.ID, err)
	}
	c.setAction(nil)
	if lost {
		return model.ErrTakenOver
	}
	return nil
}

// outcomeBatch is every write an outcome makes, for one commit.
func outcomeBatch(j model.Job, o model.Outcome) *pgx.Batch {
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
	return b
}

func jsonObject(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
