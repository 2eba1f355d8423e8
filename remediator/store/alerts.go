package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// Alert is one alert from a webhook delivery, ready to persist.
type Alert struct {
	Fingerprint  string
	StartsAt     time.Time // already truncated to milliseconds
	EndsAt       time.Time
	Status       string // "firing" or "resolved"
	Alertname    string
	Labels       map[string]string
	Annotations  map[string]string
	GeneratorURL string
	// Remediation is the policy's match for the alert, empty when none.
	Remediation string
	// Critical marks an alert that is a critical event when it starts
	// firing (a database lost, a disk above 95 %): it counts toward the
	// critical-events threshold.
	Critical bool
	// Node is the node the alert is for ("" when it names none).
	Node string
	// NotHere, when set, says why this selfheal does not act on the alert
	// (it is for another node): it is stored and shown, and queues nothing.
	NotHere string
}

// IngestResult counts what one delivery changed.
type IngestResult struct {
	JobsQueued    int
	JobsCancelled int
	// Nodes are the nodes jobs were queued for ("" for a job of no node).
	Nodes []string
	// Waiting counts jobs queued for a node whose engine is silent.
	Waiting int
}

// Add adds r's counts to res.
func (res *IngestResult) Add(r IngestResult) {
	res.JobsQueued += r.JobsQueued
	res.JobsCancelled += r.JobsCancelled
	res.Waiting += r.Waiting
	for _, n := range r.Nodes {
		if !slices.Contains(res.Nodes, n) {
			res.Nodes = append(res.Nodes, n)
		}
	}
}

// ingestAlertSQL upserts one alert occurrence and, in the same statement,
// queues its next job or cancels the jobs a resolution makes pointless.
//
//   - A resolved occurrence stays resolved, whatever order deliveries come in.
//   - A firing occurrence with a remediation gets step 1 on first receipt; it
//     gets a further step only when its newest job finished more than
//     $10 ago (the fix did not hold, or a cooldown has passed) — redeliveries
//     in between change nothing.
//   - No NOTIFY: it would serialise every delivery's commit on one lock.
//     The receiving replica wakes its own workers; others poll.
//   - Resolution cancels queued jobs that have not started (SKIP LOCKED: a
//     job a worker holds is never waited for, so a hung action cannot hang
//     the webhook), clears the target's escalation and records recovery time.
const ingestAlertSQL = `
WITH occ AS (
    INSERT INTO alert_occurrences AS o
        (fingerprint, starts_at, alertname, status, labels, annotations, generator_url,
         remediation, ends_at, resolved_at, node)
    VALUES ($1, $2, $3, $4, $5, $6, $7, NULLIF($8, ''),
            CASE WHEN $4 = 'resolved' THEN $9::timestamptz END,
            CASE WHEN $4 = 'resolved' THEN now() END,
            -- The node's own name for an alias or IP it heartbeats with;
            -- else the label as given; else the enrolled node writing it.
            COALESCE((SELECT n.name FROM nodes n WHERE lower($13) = ANY (n.names) ORDER BY n.last_heartbeat DESC LIMIT 1),
                     NULLIF(lower($13), ''), (SELECT selfheal_node())))
    ON CONFLICT (fingerprint, starts_at) DO UPDATE SET
        last_received_at = now(),
        deliveries       = o.deliveries + 1,
        status           = CASE WHEN o.status = 'resolved' THEN 'resolved' ELSE EXCLUDED.status END,
        ends_at          = COALESCE(o.ends_at, EXCLUDED.ends_at),
        resolved_at      = COALESCE(o.resolved_at, EXCLUDED.resolved_at)
    RETURNING o.id, o.status, o.remediation, o.starts_at, o.ends_at, o.deliveries, o.joined_occurrence_id, o.node,
              (o.resolved_at = now()) AS just_resolved
), joined_resolved AS (
    -- An alert that joined the fast path's occurrence resolves it too.
    -- By primary key: a join with occ could plan a scan of the table.
    UPDATE alert_occurrences f
    SET status = 'resolved', ends_at = COALESCE(f.ends_at, now()), resolved_at = now()
    WHERE f.id = (SELECT occ.joined_occurrence_id FROM occ WHERE occ.just_resolved) AND f.status = 'firing'
    RETURNING f.id
), critical_event AS (
    -- A critical alert is a critical event once, when it is first seen firing.
    INSERT INTO self_healing_events (severity, event_type, service_name, remediation, occurrence_id, message, details, node)
    SELECT 'CRITICAL', 'critical_alert', NULL, occ.remediation, occ.id,
           format('critical alert %s started firing', $3::text), jsonb_build_object('labels', $5::jsonb), occ.node
    FROM occ
    WHERE $11 AND occ.deliveries = 1 AND occ.status = 'firing'
    RETURNING id
), not_here AS (
    -- An alert this selfheal does not act on (another node's) says so once.
    INSERT INTO self_healing_events (severity, event_type, service_name, remediation, occurrence_id, message, details, node)
    SELECT 'INFO', 'alert_not_here', NULL, occ.remediation, occ.id, $12,
           jsonb_build_object('alertname', $3::text, 'node', $13::text), occ.node
    FROM occ
    WHERE $12 <> '' AND occ.deliveries = 1
    RETURNING id
), job AS (
    INSERT INTO remediation_jobs (occurrence_id, remediation, step, node)
    SELECT occ.id, occ.remediation, COALESCE(last.step, 0) + 1, occ.node
    FROM occ
    LEFT JOIN LATERAL (
        SELECT j.step, j.state, j.finished_at
        FROM remediation_jobs j
        WHERE j.occurrence_id = occ.id AND j.remediation = occ.remediation
        ORDER BY j.step DESC
        LIMIT 1
    ) last ON true
    WHERE occ.status = 'firing'
      AND occ.remediation IS NOT NULL
      AND $12 = ''
      AND (last.step IS NULL
           OR (last.state <> 'queued' AND last.finished_at < now() - $10::interval))
    ON CONFLICT DO NOTHING
    RETURNING id
), waiting AS (
    -- In a fleet ($14 > 0), a job for a node whose engine is stopped or
    -- silent waits for it: say so once, when it is queued.
    INSERT INTO self_healing_events (severity, event_type, service_name, remediation, occurrence_id, message, details, node)
    SELECT 'WARNING', 'node_silent', NULL, occ.remediation, occ.id,
           CASE WHEN n.name IS NULL THEN format('node %s has never been heard from: the job for %s waits for its engine', occ.node, $3::text)
                WHEN n.stopped_at IS NOT NULL THEN format('node %s''s engine stopped at %s: the job for %s waits for it', occ.node, n.stopped_at, $3::text)
                ELSE format('node %s has been silent since %s: the job for %s waits for its engine', occ.node, n.last_heartbeat, $3::text) END,
           jsonb_build_object('node', occ.node, 'last_heartbeat', n.last_heartbeat, 'stopped_at', n.stopped_at), occ.node
    FROM occ LEFT JOIN nodes n ON n.name = occ.node
    WHERE $14 > 0 AND EXISTS (SELECT 1 FROM job) AND occ.node IS NOT NULL
      AND (n.name IS NULL OR n.stopped_at IS NOT NULL OR n.last_heartbeat < now() - $14 * interval '1 second')
    RETURNING id
), cancelled AS (
    -- Gated on the resolution, a value known before anything is read:
    -- otherwise a plan made without statistics (a storm on a fresh
    -- install) read every queued job for every alert.
    UPDATE remediation_jobs j
    SET state = 'cancelled', finished_at = now(), reason = 'alert resolved before the step started'
    WHERE j.id IN (
        SELECT q.id
        FROM remediation_jobs q
        WHERE (SELECT occ.just_resolved FROM occ)
          AND q.occurrence_id = (SELECT occ.id FROM occ)
          AND q.state = 'queued' AND NOT q.keep_on_resolve
          -- a job whose action started is not cancelled: if its worker died,
          -- the queue marks it interrupted instead.
          AND NOT EXISTS (SELECT 1 FROM recovery_actions a WHERE a.job_id = q.id)
        FOR NO KEY UPDATE OF q SKIP LOCKED)
    RETURNING j.id
), targets AS (
    -- What the occurrence's jobs acted on: a finished job names its target;
    -- one still acting is known by its action's row.
    -- Gated on the resolution as cancelled is.
    SELECT j.target AS target FROM remediation_jobs j
    WHERE (SELECT occ.just_resolved FROM occ) AND j.occurrence_id = (SELECT occ.id FROM occ) AND j.target IS NOT NULL
    UNION
    SELECT a.service_name FROM recovery_actions a
    JOIN remediation_jobs j ON a.job_id = j.id
    WHERE (SELECT occ.just_resolved FROM occ) AND j.occurrence_id = (SELECT occ.id FROM occ)
), cleared AS (
    UPDATE escalations e
    SET cleared_at = now()
    WHERE e.cleared_at IS NULL AND e.service_name IN (SELECT target FROM targets)
    RETURNING e.id
), resolved_event AS (
    INSERT INTO self_healing_events (severity, event_type, service_name, remediation, occurrence_id, message, details, node)
    SELECT 'INFO', 'alert_resolved', (SELECT min(target) FROM targets),
           occ.remediation, occ.id,
           format('%s resolved after %s', $3::text,
                  date_trunc('second', COALESCE(occ.ends_at, now()) - occ.starts_at)),
           jsonb_build_object('recovery_seconds',
                  EXTRACT(EPOCH FROM COALESCE(occ.ends_at, now()) - occ.starts_at)), occ.node
    FROM occ
    WHERE occ.just_resolved AND occ.remediation IS NOT NULL
    RETURNING id
)
SELECT (SELECT count(*) FROM job), (SELECT count(*) FROM cancelled),
       (SELECT count(*) FROM cleared), (SELECT count(*) FROM resolved_event),
       (SELECT count(*) FROM critical_event), (SELECT count(*) FROM not_here),
       (SELECT count(*) FROM waiting), COALESCE((SELECT node FROM occ), '')`

// IngestAlerts persists every alert of one delivery in one transaction. It
// is idempotent: delivering the same alerts again changes only delivery
// counters. reopenAfter is how long after a finished job a still-firing
// occurrence may get its next step.
func (s *Store) IngestAlerts(ctx context.Context, alerts []Alert, reopenAfter time.Duration) (IngestResult, error) {
	var res IngestResult
	if len(alerts) == 0 {
		return res, nil
	}
	b := &pgx.Batch{}
	for _, a := range alerts {
		labels, annotations := a.Labels, a.Annotations
		if labels == nil {
			labels = map[string]string{}
		}
		if annotations == nil {
			annotations = map[string]string{}
		}
		b.Queue(ingestAlertSQL, a.Fingerprint, a.StartsAt, a.Alertname, a.Status, labels, annotations,
			a.GeneratorURL, a.Remediation, a.EndsAt, reopenAfter, a.Critical, a.NotHere, a.Node,
			s.silentAfter.Seconds()).QueryRow(func(row pgx.Row) error {
			var queued, cancelled, cleared, resolved, critical, notHere, waiting int
			var node string
			if err := row.Scan(&queued, &cancelled, &cleared, &resolved, &critical, &notHere, &waiting, &node); err != nil {
				return err
			}
			r := IngestResult{JobsQueued: queued, JobsCancelled: cancelled, Waiting: waiting}
			if queued > 0 {
				r.Nodes = []string{node}
			}
			res.Add(r)
			return nil
		})
	}
	// A single statement is its own transaction; several share one.
	var err error
	if len(alerts) == 1 {
		err = s.pool.SendBatch(ctx, b).Close()
	} else {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() })
	}
	if err != nil {
		return IngestResult{}, fmt.Errorf("persist alerts: %w", err)
	}
	return res, nil
}
