package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5"
)

// RebootHistory returns how many reboots were started since the given
// time, and when the last one was.
func (s *Store) RebootHistory(ctx context.Context, since time.Time) (int, time.Time, error) {
	var n int
	var last *time.Time
	err := s.pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE requested_at >= $1), max(requested_at)
		FROM reboot_events WHERE status IN ('rebooting', 'validated', 'validation_failed')`, since).Scan(&n, &last)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("read reboot history: %w", err)
	}
	if last == nil {
		return n, time.Time{}, nil
	}
	return n, *last, nil
}

// Reboot is a reboot about to happen, with the state to check afterwards.
type Reboot struct {
	ID       int64
	ActionID int64
	Reason   string
	BootID   string
	PreState map[string]any
	Started  time.Time
}

// RebootGuard is the limit a reboot is started under: none within Window
// of the last, and fewer than MaxPerDay in the last 24 hours.
type RebootGuard struct {
	Window    time.Duration
	MaxPerDay int
}

// ErrRebootGuard wraps the reason a reboot was not started: the guard,
// checked with the start in one step, refused it.
var ErrRebootGuard = errors.New("reboot guard")

// StartReboot records, and commits, a reboot about to run — only if the
// guard allows it. The history is read and the row written under one
// lock per node, so two reboots asked for at once (two alerts, two
// replicas) cannot both pass the window.
func (s *Store) StartReboot(ctx context.Context, r Reboot, g RebootGuard) (int64, error) {
	var id int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('selfheal/reboot/' || COALESCE(selfheal_node(), ''), 0))`); err != nil {
			return err
		}
		var inDay int
		var last *time.Time
		if err := tx.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE requested_at >= now() - interval '24 hours'), max(requested_at)
			FROM reboot_events WHERE status IN ('rebooting', 'validated', 'validation_failed')`).Scan(&inDay, &last); err != nil {
			return err
		}
		if g.MaxPerDay > 0 && inDay >= g.MaxPerDay {
			return fmt.Errorf("%w: %d reboots in the last 24h (limit %d)", ErrRebootGuard, inDay, g.MaxPerDay)
		}
		if last != nil && g.Window > 0 && time.Since(*last) < g.Window {
			return fmt.Errorf("%w: another reboot started at %s, within the %s window", ErrRebootGuard, last.UTC().Format(time.RFC3339), g.Window)
		}
		return tx.QueryRow(ctx, `
			INSERT INTO reboot_events (reason, status, pre_state, boot_id, action_id)
			VALUES ($1, 'rebooting', $2, $3, NULLIF($4, 0)) RETURNING id`,
			r.Reason, jsonObject(r.PreState), r.BootID, r.ActionID).Scan(&id)
	})
	if err != nil {
		if errors.Is(err, ErrRebootGuard) {
			return 0, err
		}
		return 0, fmt.Errorf("record reboot: %w", err)
	}
	return id, nil
}

// FailReboot records that the reboot command failed.
func (s *Store) FailReboot(ctx context.Context, id int64, reason string) error {
	_, err := s.pool.Exec(ctx, `UPDATE reboot_events SET status = 'failed', details = details || jsonb_build_object('error', $2::text) WHERE id = $1`, id, reason)
	if err != nil {
		return fmt.Errorf("record failed reboot %d: %w", id, err)
	}
	return nil
}

// RebootsToValidate returns reboots that were started and not checked yet.
func (s *Store) RebootsToValidate(ctx context.Context) ([]Reboot, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, COALESCE(action_id, 0), reason, COALESCE(boot_id, ''), pre_state, requested_at
		FROM reboot_events WHERE status = 'rebooting' ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read reboots to validate: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Reboot, error) {
		var rb Reboot
		err := r.Scan(&rb.ID, &rb.ActionID, &rb.Reason, &rb.BootID, &rb.PreState, &rb.Started)
		return rb, err
	})
}

// RebootValidation is the check made after a reboot.
type RebootValidation struct {
	// Status is validated, validation_failed, or failed (no reboot happened).
	Status    string
	PostState map[string]any
	Severity  model.Severity
	Message   string
}

// RebootHappened completes the reboot's action and job, which the reboot
// itself interrupted: selfheal runs in a new boot, so the action did what
// it was for. Called at start, before any worker could mark it interrupted.
func (s *Store) RebootHappened(ctx context.Context, r Reboot) error {
	if r.ActionID == 0 {
		return nil
	}
	b := &pgx.Batch{}
	b.Queue(`UPDATE recovery_actions SET status = 'succeeded', completed_at = COALESCE(completed_at, now())
		WHERE id = $1 AND status IN ('running', 'interrupted')`, r.ActionID)
	b.Queue(`UPDATE remediation_jobs SET state = 'done', outcome = 'succeeded', finished_at = COALESCE(finished_at, now())
		WHERE id = (SELECT job_id FROM recovery_actions WHERE id = $1) AND state IN ('queued', 'interrupted')`, r.ActionID)
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
		return fmt.Errorf("complete reboot action %d: %w", r.ActionID, err)
	}
	return nil
}

// CompleteReboot records the validation made after a reboot (or that no
// reboot happened) and its event.
func (s *Store) CompleteReboot(ctx context.Context, r Reboot, v RebootValidation) error {
	b := &pgx.Batch{}
	b.Queue(`UPDATE reboot_events SET status = $2, post_state = $3, validated_at = now() WHERE id = $1`,
		r.ID, v.Status, jsonObject(v.PostState))
	b.Queue(`INSERT INTO self_healing_events (severity, event_type, service_name, message, details)
		VALUES ($1, 'reboot_validation', 'host', $2, $3)`, v.Severity, v.Message, jsonObject(v.PostState))
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
		return fmt.Errorf("record reboot validation %d: %w", r.ID, err)
	}
	return nil
}
