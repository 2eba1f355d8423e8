package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Clear is a person's word that a target's cause is fixed (selfheal
// clear): who, and why.
type Clear struct {
	Target string
	// Remediation limits the clear to one remediation; empty clears all.
	Remediation string
	By, Reason  string
}

// Cleared is what a clear ended.
type Cleared struct {
	// Escalations are the remediations whose open escalation it closed.
	Escalations []string
	// Failures counts the failures in the last day that no longer count.
	Failures int
	// Cooldowns are the remediations with an action in the last day whose
	// cooldown no longer holds.
	Cooldowns []string
}

// ClearTarget records c: from now on the target's decisions (for the
// remediation, or all) count no failure, escalation or action from before
// it, so the next outage starts the ladder again; its open escalations
// close, with who closed them; an event records it. All in one commit.
func (s *Store) ClearTarget(ctx context.Context, c Clear) (Cleared, error) {
	var out Cleared
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Under the target's lock, so a decision under way on the target
		// (another replica's, perhaps) is wholly before the clear — its
		// failure, its escalation closed by it — never half; and timed
		// when the lock is held (clock_timestamp, not the transaction's
		// start), so that nothing committed before the clear counts after.
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SELECT pg_advisory_xact_lock(%s)`, fmt.Sprintf(targetLockKey, "$1")), c.Target); err != nil {
			return err
		}
		var at time.Time
		if err := tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&at); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO target_clears (service_name, remediation, cleared_by, reason, cleared_at)
			VALUES ($1, NULLIF($2, ''), $3, $4, $5)`, c.Target, c.Remediation, c.By, c.Reason, at); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `UPDATE escalations SET cleared_at = $4, cleared_by = $3
			WHERE service_name = $1 AND ($2 = '' OR remediation = $2) AND cleared_at IS NULL
			RETURNING remediation`, c.Target, c.Remediation, c.By, at)
		if err != nil {
			return err
		}
		if out.Escalations, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM service_failures
			WHERE service_name = $1 AND ($2 = '' OR remediation = $2) AND failure_time >= now() - interval '1 day'`,
			c.Target, c.Remediation).Scan(&out.Failures); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `SELECT DISTINCT remediation FROM recovery_actions
			WHERE service_name = $1 AND ($2 = '' OR remediation = $2) AND remediation IS NOT NULL
			  AND started_at >= now() - interval '1 day' ORDER BY remediation`, c.Target, c.Remediation)
		if err != nil {
			return err
		}
		if out.Cooldowns, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		msg := fmt.Sprintf("cleared by %s: failures, escalations and cooldowns before now no longer count", c.By)
		if c.Reason != "" {
			msg += " (" + c.Reason + ")"
		}
		_, err = tx.Exec(ctx, `INSERT INTO self_healing_events (severity, event_type, service_name, message, details)
			VALUES ('WARNING', 'clear', $1, $2, $3)`, c.Target, msg, jsonObject(map[string]any{
			"cleared_by": c.By, "reason": c.Reason, "remediation": c.Remediation,
			"escalations_closed": out.Escalations, "failures_forgotten": out.Failures}))
		return err
	})
	if err != nil {
		return Cleared{}, fmt.Errorf("clear %s: %w", c.Target, err)
	}
	return out, nil
}
