package store

import (
	"context"
	"fmt"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5"
)

// Activity is one line of the timeline `selfheal events` prints: an alert
// received, a decision or an action.
type Activity struct {
	Time        time.Time
	Kind        string // alert, event or action
	Severity    string
	Target      string
	Remediation string
	What        string
	Detail      string
	// Details are an action's or event's recorded details (an action's
	// evidence among them); nil for an alert.
	Details map[string]any
}

// activitySQL takes the newest $1 of each source through its time index
// and merges them: its cost is bounded by the limit, not by the window.
const activitySQL = `
SELECT t, kind, severity, target, remediation, what, detail, details FROM (
    (SELECT first_received_at AS t, 0 AS rank, 'alert' AS kind,
           CASE status WHEN 'firing' THEN 'FIRING' ELSE 'RESOLVED' END AS severity,
           COALESCE(labels->>'service', labels->>'container', labels->>'instance', '') AS target,
           COALESCE(remediation, '') AS remediation,
           alertname AS what,
           CASE WHEN remediation IS NULL THEN 'no remediation matches'
                ELSE format('%s delivery(ies)', deliveries) END AS detail,
           NULL::jsonb AS details
    FROM alert_occurrences
    WHERE first_received_at >= $2
    ORDER BY first_received_at DESC LIMIT $1)
    UNION ALL
    (SELECT event_time, 1, 'event', severity, COALESCE(service_name, ''), COALESCE(remediation, ''),
           event_type, message, details
    FROM self_healing_events
    WHERE event_time >= $2
    ORDER BY event_time DESC LIMIT $1)
    UNION ALL
    (SELECT started_at, 2, 'action', upper(status), service_name, COALESCE(remediation, ''),
           action_type,
           concat_ws(' ', CASE WHEN attempt IS NOT NULL THEN format('attempt %s', attempt) END,
                     CASE WHEN completed_at IS NOT NULL
                          THEN format('took %ss', round(EXTRACT(EPOCH FROM completed_at - started_at)::numeric, 2)) END,
                     error_message),
           details
    FROM recovery_actions
    WHERE started_at >= $2
    ORDER BY started_at DESC LIMIT $1)
) a
-- at the same instant: alert, then the decision, then the action
ORDER BY t DESC, rank DESC
LIMIT $1`

// RecentActivity returns up to limit lines since the given time, newest first.
func (s *Store) RecentActivity(ctx context.Context, limit int, since time.Time) ([]Activity, error) {
	rows, err := s.pool.Query(ctx, activitySQL, limit, since)
	if err != nil {
		return nil, fmt.Errorf("read activity: %w", err)
	}
	acts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Activity, error) {
		var a Activity
		err := r.Scan(&a.Time, &a.Kind, &a.Severity, &a.Target, &a.Remediation, &a.What, &a.Detail, &a.Details)
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("read activity: %w", err)
	}
	return acts, nil
}

// SetPaused switches the global pause that every replica obeys.
func (s *Store) SetPaused(ctx context.Context, paused bool, reason string) error {
	b := &pgx.Batch{}
	b.Queue(`UPDATE engine_settings SET paused = $1, reason = $2, updated_at = now()`, paused, reason)
	msg := "remediation resumed"
	if paused {
		msg = "remediation paused: " + reason
	}
	b.Queue(`INSERT INTO self_healing_events (severity, event_type, message) VALUES ('WARNING', $1, $2)`,
		map[bool]string{true: "paused", false: "resumed"}[paused], msg)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() })
	if err != nil {
		return fmt.Errorf("set pause: %w", err)
	}
	return nil
}

// Paused reports the global pause switch.
func (s *Store) Paused(ctx context.Context) (bool, string, error) {
	var paused bool
	var reason string
	if err := s.pool.QueryRow(ctx, `SELECT paused, reason FROM engine_settings`).Scan(&paused, &reason); err != nil {
		return false, "", fmt.Errorf("read pause: %w", err)
	}
	return paused, reason, nil
}

// JobCounts returns the work not yet done: how many jobs are queued and how
// many actions are running now. Both read a partial index of unfinished
// rows only, so a scrape costs the same whatever the history; finished jobs
// are counted by selfheal_jobs_total as they finish.
func (s *Store) JobCounts(ctx context.Context) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT 'queued', count(*) FROM remediation_jobs WHERE state = 'queued'
		UNION ALL
		SELECT 'running', count(*) FROM recovery_actions WHERE status = 'running'`)
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	counts := map[string]int64{}
	var state string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&state, &n}, func() error { counts[state] += n; return nil })
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	return counts, nil
}

// retentionSQL deletes rows past their retention. Unfinished work is never
// deleted: running actions, queued jobs and the alerts they serve stay.
var retentionSQL = []struct{ table, sql string }{
	{"service_failures", `SELECT cleanup_service_failures()`},
	{"recovery_actions", `WITH d AS (DELETE FROM recovery_actions WHERE started_at < now() - interval '7 days' AND status <> 'running' RETURNING 1) SELECT count(*) FROM d`},
	{"reboot_events", `WITH d AS (DELETE FROM reboot_events WHERE requested_at < now() - interval '30 days' AND status NOT IN ('pending', 'rebooting') RETURNING 1) SELECT count(*) FROM d`},
	{"self_healing_events", `WITH d AS (DELETE FROM self_healing_events WHERE event_time < now() - interval '30 days' RETURNING 1) SELECT count(*) FROM d`},
	{"escalations", `WITH d AS (DELETE FROM escalations WHERE created_at < now() - interval '30 days' RETURNING 1) SELECT count(*) FROM d`},
	{"pending_reverts", `WITH d AS (DELETE FROM pending_reverts WHERE reverted_at < now() - interval '30 days' RETURNING 1) SELECT count(*) FROM d`},
	{"remediation_jobs", `WITH d AS (DELETE FROM remediation_jobs j WHERE j.state <> 'queued' AND j.finished_at < now() - interval '7 days'
		AND NOT EXISTS (SELECT 1 FROM recovery_actions a WHERE a.job_id = j.id AND a.status = 'running') RETURNING 1) SELECT count(*) FROM d`},
	{"alert_occurrences", `WITH d AS (DELETE FROM alert_occurrences o WHERE o.last_received_at < now() - interval '30 days'
		AND NOT EXISTS (SELECT 1 FROM remediation_jobs j WHERE j.occurrence_id = o.id AND j.state = 'queued') RETURNING 1) SELECT count(*) FROM d`},
}

// ApplyRetention deletes old rows and returns how many it deleted per
// table. Only one replica does the work at a time; the others return at once.
func (s *Store) ApplyRetention(ctx context.Context) (map[string]int64, error) {
	deleted := map[string]int64{}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, migrationLockKey+1).Scan(&got); err != nil || !got {
			return err
		}
		for _, r := range retentionSQL {
			var n int64
			if err := tx.QueryRow(ctx, r.sql).Scan(&n); err != nil {
				return fmt.Errorf("%s: %w", r.table, err)
			}
			deleted[r.table] = n
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("apply retention: %w", err)
	}
	return deleted, nil
}

// RecordEvent writes one row of the audit trail on its own.
func (s *Store) RecordEvent(ctx context.Context, e model.Event) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO self_healing_events (severity, event_type, service_name, message, details)
		VALUES ($1, $2, NULLIF($3, ''), $4, $5)`, e.Severity, e.Type, e.Target, e.Message, jsonObject(e.Details))
	if err != nil {
		return fmt.Errorf("record event %s: %w", e.Type, err)
	}
	return nil
}

// Heartbeat records that the replica is alive with its configuration, and
// returns how many replicas seen within alive run the same configuration
// fingerprint and how many another. Replicas silent for a day are removed.
func (s *Store) Heartbeat(ctx context.Context, r model.Replica, alive time.Duration) (same, other int, err error) {
	if r.Remediations == nil {
		r.Remediations = []string{}
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO replicas (id, host, version, config_fingerprint, remediations)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (id) DO UPDATE SET last_seen = now(), config_fingerprint = EXCLUDED.config_fingerprint,
				remediations = EXCLUDED.remediations, version = EXCLUDED.version`,
			r.ID, r.Host, r.Version, r.ConfigFingerprint, r.Remediations); err != nil {
			return err
		}
		if r.OnlyAlive {
			same, other = -1, -1
			return nil
		}
		if _, err := tx.Exec(ctx, `DELETE FROM replicas WHERE last_seen < now() - interval '1 day'`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE config_fingerprint = $1), count(*) FILTER (WHERE config_fingerprint <> $1)
			FROM replicas WHERE last_seen >= now() - $2 * interval '1 second'`,
			r.ConfigFingerprint, alive.Seconds()).Scan(&same, &other)
	})
	if err != nil {
		return 0, 0, fmt.Errorf("heartbeat: %w", err)
	}
	return same, other, nil
}

// HeldCandidate is a target and remediation that may be held back: one
// with an action, a failure or an escalation in the last day since its
// last selfheal clear. Whether it is held is the decision's to say
// (engine.HeldBack over ReadState).
type HeldCandidate struct {
	Target      string
	Remediation string
	Last        time.Time // the newest of those
}

// HeldCandidates returns up to 100 candidates, newest first.
func (s *Store) HeldCandidates(ctx context.Context) ([]HeldCandidate, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT t.service_name, t.remediation, max(t.at) FROM (
		    SELECT service_name, remediation, started_at AS at FROM recovery_actions
		    WHERE started_at >= now() - interval '1 day' AND status <> 'dry_run' AND remediation IS NOT NULL
		    UNION ALL
		    SELECT service_name, remediation, failure_time FROM service_failures
		    WHERE failure_time >= now() - interval '1 day' AND remediation IS NOT NULL
		    UNION ALL
		    SELECT service_name, remediation, created_at FROM escalations WHERE created_at >= now() - interval '1 day'
		) t
		WHERE t.at > COALESCE((SELECT max(c.cleared_at) FROM target_clears c WHERE c.service_name = t.service_name
		                       AND (c.remediation = t.remediation OR c.remediation IS NULL)), '-infinity')
		GROUP BY t.service_name, t.remediation
		ORDER BY max(t.at) DESC
		LIMIT 100`)
	if err != nil {
		return nil, fmt.Errorf("read held targets: %w", err)
	}
	hs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[HeldCandidate])
	if err != nil {
		return nil, fmt.Errorf("read held targets: %w", err)
	}
	return hs, nil
}

// LatestEvidence returns, for each of targets with one in the last day,
// the evidence its newest action kept (as recorded JSON).
func (s *Store) LatestEvidence(ctx context.Context, targets []string) (map[string][]byte, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT DISTINCT ON (service_name) service_name, details->'evidence' FROM recovery_actions
		WHERE service_name = ANY($1) AND details ? 'evidence' AND started_at >= now() - interval '1 day'
		ORDER BY service_name, started_at DESC`, targets)
	if err != nil {
		return nil, fmt.Errorf("read evidence: %w", err)
	}
	out := map[string][]byte{}
	var target string
	var ev []byte
	_, err = pgx.ForEachRow(rows, []any{&target, &ev}, func() error {
		out[target] = append([]byte(nil), ev...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read evidence: %w", err)
	}
	return out, nil
}

// WaitingJob is a queued job a decision deferred: why, and when it is
// decided again.
type WaitingJob struct {
	Target      string
	Remediation string
	Reason      string
	NotBefore   time.Time
}

// WaitingJobs returns up to 50 deferred jobs, the soonest first: waiting
// for a running action's slot, for Docker, for a silent node.
func (s *Store) WaitingJobs(ctx context.Context) ([]WaitingJob, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT COALESCE(j.target, o.labels->>'service', o.labels->>'instance', ''), j.remediation, j.reason, j.not_before
		FROM remediation_jobs j JOIN alert_occurrences o ON o.id = j.occurrence_id
		WHERE j.state = 'queued' AND j.reason IS NOT NULL
		ORDER BY j.not_before
		LIMIT 50`)
	if err != nil {
		return nil, fmt.Errorf("read waiting jobs: %w", err)
	}
	ws, err := pgx.CollectRows(rows, pgx.RowToStructByPos[WaitingJob])
	if err != nil {
		return nil, fmt.Errorf("read waiting jobs: %w", err)
	}
	return ws, nil
}
