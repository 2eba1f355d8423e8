package store

import (
	"context"
	"fmt"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5"
)

// DueReverts returns the changes on node's devices whose alert has
// resolved (or is gone), whoever made them; with owner set (selfheal is
// stopping), also every change that replica made and has not undone.
func (s *Store) DueReverts(ctx context.Context, node, owner string) ([]model.PendingRevert, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT r.id, r.action_type, r.target, r.data,
		       CASE WHEN o.status = 'resolved' THEN 'alert resolved'
		            WHEN o.id IS NULL THEN 'alert forgotten'
		            ELSE 'selfheal stopping' END
		FROM pending_reverts r
		LEFT JOIN alert_occurrences o ON o.id = r.occurrence_id
		WHERE r.reverted_at IS NULL AND r.host = $1 AND (r.owner = $2 OR o.id IS NULL OR o.status = 'resolved')
		ORDER BY r.id`, node, owner)
	if err != nil {
		return nil, fmt.Errorf("read pending reverts: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (model.PendingRevert, error) {
		var p model.PendingRevert
		err := r.Scan(&p.ID, &p.ActionType, &p.Target, &p.Data, &p.Why)
		return p, err
	})
}

// MarkReverted records that a change was undone (err nil) or could not be.
// A failed revert stays pending, to be tried again.
func (s *Store) MarkReverted(ctx context.Context, p model.PendingRevert, revertErr error) error {
	b := &pgx.Batch{}
	if revertErr == nil {
		b.Queue(`UPDATE pending_reverts SET reverted_at = now(), result = $2 WHERE id = $1`, p.ID, "reverted: "+p.Why)
		b.Queue(`INSERT INTO self_healing_events (severity, event_type, service_name, message, details)
			VALUES ('INFO', 'reverted', $1, $2, $3)`, p.Target,
			fmt.Sprintf("%s on %s undone (%s)", p.ActionType, p.Target, p.Why), jsonObject(p.Data))
	} else {
		b.Queue(`UPDATE pending_reverts SET result = $2 WHERE id = $1`, p.ID, "revert failed: "+revertErr.Error())
		b.Queue(`INSERT INTO self_healing_events (severity, event_type, service_name, message, details)
			VALUES ('ERROR', 'revert_failed', $1, $2, $3)`, p.Target,
			fmt.Sprintf("could not undo %s on %s: %v", p.ActionType, p.Target, revertErr), jsonObject(p.Data))
	}
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() }); err != nil {
		return fmt.Errorf("record revert %d: %w", p.ID, err)
	}
	return nil
}

// CriticalEvents returns how many CRITICAL or EMERGENCY events were
// recorded within window (get_critical_events_count).
func (s *Store) CriticalEvents(ctx context.Context, window time.Duration) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT get_critical_events_count($1::numeric / 60)`, window.Seconds()).Scan(&n); err != nil {
		return 0, fmt.Errorf("count critical events: %w", err)
	}
	return n, nil
}

// FiringSince returns when the firing occurrence of fingerprint began, if
// one is firing.
func (s *Store) FiringSince(ctx context.Context, fingerprint string) (time.Time, bool, error) {
	return firingSince(ctx, s.pool, fingerprint)
}

func firingSince(ctx context.Context, q querier, fingerprint string) (time.Time, bool, error) {
	var t time.Time
	err := q.QueryRow(ctx, `SELECT starts_at FROM alert_occurrences WHERE fingerprint = $1 AND status = 'firing'
		ORDER BY starts_at DESC LIMIT 1`, fingerprint).Scan(&t)
	if err == pgx.ErrNoRows {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("look up %s: %w", fingerprint, err)
	}
	return t, true, nil
}
