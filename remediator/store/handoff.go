package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// StormBrakeReason begins the reason of every decision the storm brake
// makes (engine.Limits), so that the braked targets can be listed.
const StormBrakeReason = "storm brake"

// Problem is something selfheal could not fix and people should hear of:
// an escalation still open, a target whose last action failed or was
// refused, or that the storm brake held back, with nothing succeeding
// since, or a long pause.
type Problem struct {
	Kind        string // escalated, gave_up, action_failed, refused, braked, paused
	Target      string
	Remediation string
	Node        string
	Reason      string
	Since       time.Time
	// Evidence is the newest evidence an action on the target kept (its
	// state and last log lines before that action), as recorded JSON;
	// nil when none did within the lookback.
	Evidence []byte
}

// openProblemsSQL lists what is unresolved now. An escalation is open
// until its alert resolves; a failed or refused job counts while it is the
// newest finished job of its target and remediation within the lookback,
// and so does one the storm brake skipped.
const openProblemsSQL = `
SELECT p.*, (SELECT a.details->'evidence' FROM recovery_actions a
             WHERE a.service_name = p.target AND p.target <> '' AND a.details ? 'evidence'
               AND a.started_at >= now() - $1 * interval '1 second'
             ORDER BY a.started_at DESC LIMIT 1)
FROM (
SELECT CASE WHEN e.escalate_to IS NULL THEN 'gave_up' ELSE 'escalated' END,
       e.service_name, e.remediation, COALESCE(o.node, ''), e.reason, e.created_at
FROM escalations e
LEFT JOIN remediation_jobs j ON j.id = e.job_id
LEFT JOIN alert_occurrences o ON o.id = j.occurrence_id
WHERE e.cleared_at IS NULL AND e.created_at >= now() - $1 * interval '1 second'
UNION ALL
SELECT CASE last.outcome WHEN 'failed' THEN 'action_failed' WHEN 'refused' THEN 'refused' ELSE 'braked' END,
       last.target, last.remediation, COALESCE(o.node, ''), COALESCE(last.reason, ''), last.finished_at
FROM (
    SELECT DISTINCT ON (target, remediation) id, occurrence_id, target, remediation, outcome, reason, finished_at
    FROM remediation_jobs
    WHERE finished_at >= now() - $1 * interval '1 second' AND target IS NOT NULL
      AND (outcome IN ('succeeded', 'failed', 'refused') OR (outcome = 'skipped' AND reason LIKE ($3::text || ':%')))
    ORDER BY target, remediation, finished_at DESC
) last
JOIN alert_occurrences o ON o.id = last.occurrence_id
WHERE last.outcome <> 'succeeded' AND o.status = 'firing'
UNION ALL
SELECT 'paused', '', '', '', reason, updated_at
FROM engine_settings
WHERE paused AND updated_at <= now() - $2 * interval '1 second'
) p (kind, target, remediation, node, reason, since)`

// OpenProblems returns what selfheal could not fix, as of now.
func (s *Store) OpenProblems(ctx context.Context, lookback, pausedFor time.Duration) ([]Problem, error) {
	rows, err := s.pool.Query(ctx, openProblemsSQL, lookback.Seconds(), pausedFor.Seconds(), StormBrakeReason)
	if err != nil {
		return nil, fmt.Errorf("read open problems: %w", err)
	}
	ps, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Problem, error) {
		var p Problem
		err := r.Scan(&p.Kind, &p.Target, &p.Remediation, &p.Node, &p.Reason, &p.Since, &p.Evidence)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("read open problems: %w", err)
	}
	return ps, nil
}
