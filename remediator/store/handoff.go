package store

import (
	"context"
	"fmt"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5"
	prommodel "github.com/prometheus/common/model"
)

// Problem is something selfheal could not fix and people should hear of:
// an escalation still open, a target whose last action failed or was
// refused, or that the storm brake held back, with nothing succeeding
// since, or a long pause.
type Problem struct {
	Kind        string // escalated, gave_up, action_failed, refused, braked, chronic, paused
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
-- A chronic target: repaired max_remediations times within the window
-- since its last selfheal clear, with the history.
SELECT 'chronic', a.service_name, '', '',
       format('%s remediations within %s (limit %s): %s; first %s, last %s',
              count(*), $5::text, $4::int,
              (SELECT string_agg(format('%s ×%s', t.action_type, t.n), ', ' ORDER BY t.n DESC, t.action_type) FROM (
                   SELECT b.action_type, count(*) AS n FROM recovery_actions b
                   WHERE b.service_name = a.service_name AND b.status <> 'dry_run' AND b.parent_action_id IS NULL
                     AND b.started_at >= min(a.started_at)
                   GROUP BY b.action_type) t),
              to_char(min(a.started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
              to_char(max(a.started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
       min(a.started_at)
FROM recovery_actions a
-- Each target's last clear, read once (a lookup for every action in the
-- window took seconds with a million of them).
LEFT JOIN (SELECT service_name, max(cleared_at) AS at FROM target_clears GROUP BY service_name) c ON c.service_name = a.service_name
WHERE $4::int > 0 AND a.started_at >= now() - $6 * interval '1 second' AND a.status <> 'dry_run' AND a.parent_action_id IS NULL
  AND a.started_at > COALESCE(c.at, '-infinity')
GROUP BY a.service_name
HAVING count(*) >= $4::int
UNION ALL
SELECT 'paused', '', '', '', reason, updated_at
FROM engine_settings
WHERE paused AND updated_at <= now() - $2 * interval '1 second'
) p (kind, target, remediation, node, reason, since)`

// ProblemQuery says what counts as a problem.
type ProblemQuery struct {
	// Lookback is how far back a failed, refused or braked job counts.
	Lookback time.Duration
	// PausedFor is how long a pause lasts before it is one.
	PausedFor time.Duration
	// ChronicMax remediations of one target within ChronicWindow make it
	// chronic; 0: none is.
	ChronicMax    int
	ChronicWindow time.Duration
}

// OpenProblems returns what selfheal could not fix, as of now.
func (s *Store) OpenProblems(ctx context.Context, q ProblemQuery) ([]Problem, error) {
	rows, err := s.pool.Query(ctx, openProblemsSQL, q.Lookback.Seconds(), q.PausedFor.Seconds(), model.StormBrakeReason,
		q.ChronicMax, prommodel.Duration(q.ChronicWindow).String(), q.ChronicWindow.Seconds())
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
