package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5"
)

// ingestSQL upserts a delivery's alert occurrences and, in the same
// statement, queues each one's next job or cancels the jobs a resolution
// makes pointless. One statement per delivery, however many alerts it
// carries: in a storm the statement's fixed cost, not its rows, was most
// of the database's work.
//
//   - A resolved occurrence stays resolved, whatever order deliveries come in.
//   - A firing occurrence with a remediation gets step 1 on first receipt; it
//     gets a further step only when its newest job finished more than
//     $13 ago (the fix did not hold, or a cooldown has passed) — redeliveries
//     in between change nothing.
//   - No NOTIFY: it would serialise every delivery's commit on one lock.
//     The receiving replica wakes its own workers; others poll.
//   - Resolution cancels queued jobs that have not started (SKIP LOCKED: a
//     job a worker holds is never waited for, so a hung action cannot hang
//     the webhook), clears the target's escalation and records recovery time.
//   - Whatever reads a table for resolved occurrences is gated on there
//     being one, a value known before anything is read: as a join with occ,
//     a plan made without statistics (a storm on a fresh install) read every
//     queued job for every alert.
const ingestSQL = `
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[], $7::text[],
                         $8::text[], $9::timestamptz[], $10::bool[], $11::text[], $12::text[], $15::int[])
        WITH ORDINALITY AS a(fingerprint, starts_at, alertname, status, labels, annotations, generator_url,
                             remediation, ends_at, critical, not_here, node, delivery, i)
), occ AS (
    INSERT INTO alert_occurrences AS o
        (fingerprint, starts_at, alertname, status, labels, annotations, generator_url,
         remediation, ends_at, resolved_at, node)
    SELECT a.fingerprint, a.starts_at, a.alertname, a.status, a.labels, a.annotations, a.generator_url, NULLIF(a.remediation, ''),
           CASE WHEN a.status = 'resolved' THEN a.ends_at END,
           CASE WHEN a.status = 'resolved' THEN now() END,
           -- The node that holds the name (its own, or an alias or IP it
           -- heartbeats with: each name is one node's, and a node's own
           -- name always wins); else the label as given; else the
           -- enrolled node writing it.
           COALESCE((SELECT nn.node FROM node_names nn WHERE nn.name = lower(a.node)),
                    NULLIF(lower(a.node), ''), (SELECT selfheal_node()))
    FROM input a
    ORDER BY a.i
    ON CONFLICT (fingerprint, starts_at) DO UPDATE SET
        last_received_at = now(),
        deliveries       = o.deliveries + 1,
        status           = CASE WHEN o.status = 'resolved' THEN 'resolved' ELSE EXCLUDED.status END,
        ends_at          = COALESCE(o.ends_at, EXCLUDED.ends_at),
        resolved_at      = COALESCE(o.resolved_at, EXCLUDED.resolved_at)
    RETURNING o.id, o.fingerprint, o.starts_at, o.status, o.remediation, o.ends_at, o.deliveries, o.joined_occurrence_id, o.node,
              (o.resolved_at = now()) AS just_resolved
), alert AS (
    -- Each occurrence with what its delivery said of it.
    SELECT occ.*, a.alertname, a.labels, a.critical, a.not_here, a.node AS node_label, a.delivery, a.i
    FROM occ JOIN input a ON a.fingerprint = occ.fingerprint AND a.starts_at = occ.starts_at
), resolved AS (
    SELECT array_agg(id) AS ids, array_agg(joined_occurrence_id) FILTER (WHERE joined_occurrence_id IS NOT NULL) AS joined
    FROM occ WHERE just_resolved
), joined_resolved AS (
    -- An alert that joined the fast path's occurrence resolves it too.
    UPDATE alert_occurrences f
    SET status = 'resolved', ends_at = COALESCE(f.ends_at, now()), resolved_at = now()
    WHERE (SELECT joined IS NOT NULL FROM resolved) AND f.id = ANY ((SELECT joined FROM resolved)::bigint[])
      AND f.status = 'firing'
    RETURNING f.id
), critical_event AS (
    -- A critical alert is a critical event once, when it is first seen firing.
    INSERT INTO self_healing_events (severity, event_type, service_name, remediation, occurrence_id, message, details, node)
    SELECT 'CRITICAL', 'critical_alert', NULL, a.remediation, a.id,
           format('critical alert %s started firing', a.alertname), jsonb_build_object('labels', a.labels), a.node
    FROM alert a
    WHERE a.critical AND a.deliveries = 1 AND a.status = 'firing'
    RETURNING id
), not_here AS (
    -- An alert this selfheal does not act on (another node's) says so once.
    INSERT INTO self_healing_events (severity, event_type, service_name, remediation, occurrence_id, message, details, node)
    SELECT 'INFO', 'alert_not_here', NULL, a.remediation, a.id, a.not_here,
           jsonb_build_object('alertname', a.alertname, 'node', a.node_label), a.node
    FROM alert a
    WHERE a.not_here <> '' AND a.deliveries = 1
    RETURNING id
), job AS (
    INSERT INTO remediation_jobs (occurrence_id, remediation, step, node)
    SELECT a.id, a.remediation, COALESCE(last.step, 0) + 1, a.node
    FROM alert a
    LEFT JOIN LATERAL (
        SELECT j.step, j.state, j.finished_at
        FROM remediation_jobs j
        WHERE j.occurrence_id = a.id AND j.remediation = a.remediation
        ORDER BY j.step DESC
        LIMIT 1
    ) last ON true
    WHERE a.status = 'firing'
      AND a.remediation IS NOT NULL
      AND a.not_here = ''
      AND (last.step IS NULL
           OR (last.state <> 'queued' AND last.finished_at < now() - $13::interval))
    ORDER BY a.i
    ON CONFLICT DO NOTHING
    RETURNING id, occurrence_id, node
), silent AS (
    -- In a fleet ($14 > 0), the jobs queued for a node whose engine is
    -- stopped or silent: they wait for it.
    SELECT a.id, a.remediation, a.alertname, a.node, n.name, n.stopped_at, n.last_heartbeat
    FROM job JOIN alert a ON a.id = job.occurrence_id LEFT JOIN nodes n ON n.name = a.node
    WHERE $14 > 0 AND a.node IS NOT NULL
      AND (n.name IS NULL OR n.stopped_at IS NOT NULL OR n.last_heartbeat < now() - $14 * interval '1 second')
), waiting AS (
    -- Say so once, when the job is queued.
    INSERT INTO self_healing_events (severity, event_type, service_name, remediation, occurrence_id, message, details, node)
    SELECT 'WARNING', 'node_silent', NULL, s.remediation, s.id,
           CASE WHEN s.name IS NULL THEN format('node %s has never been heard from: the job for %s waits for its engine', s.node, s.alertname)
                WHEN s.stopped_at IS NOT NULL THEN format('node %s''s engine stopped at %s: the job for %s waits for it', s.node, s.stopped_at, s.alertname)
                ELSE format('node %s has been silent since %s: the job for %s waits for its engine', s.node, s.last_heartbeat, s.alertname) END,
           jsonb_build_object('node', s.node, 'last_heartbeat', s.last_heartbeat, 'stopped_at', s.stopped_at), s.node
    FROM silent s
    RETURNING id
), cancelled AS (
    UPDATE remediation_jobs j
    SET state = 'cancelled', finished_at = now(), reason = 'alert resolved before the step started'
    WHERE j.id IN (
        SELECT q.id
        FROM remediation_jobs q
        WHERE (SELECT ids IS NOT NULL FROM resolved)
          AND q.occurrence_id = ANY ((SELECT ids FROM resolved)::bigint[])
          AND q.state = 'queued' AND NOT q.keep_on_resolve
          -- a job whose action started is not cancelled: if its worker died,
          -- the queue marks it interrupted instead.
          AND NOT EXISTS (SELECT 1 FROM recovery_actions a WHERE a.job_id = q.id)
        FOR NO KEY UPDATE OF q SKIP LOCKED)
    RETURNING j.occurrence_id
), targets AS (
    -- What each resolved occurrence's jobs acted on: a finished job names
    -- its target; one still acting is known by its action's row.
    SELECT j.occurrence_id, j.target AS target FROM remediation_jobs j
    WHERE (SELECT ids IS NOT NULL FROM resolved) AND j.occurrence_id = ANY ((SELECT ids FROM resolved)::bigint[])
      AND j.target IS NOT NULL
    UNION
    SELECT j.occurrence_id, a.service_name FROM recovery_actions a
    JOIN remediation_jobs j ON a.job_id = j.id
    WHERE (SELECT ids IS NOT NULL FROM resolved) AND j.occurrence_id = ANY ((SELECT ids FROM resolved)::bigint[])
), cleared AS (
    UPDATE escalations e
    SET cleared_at = now()
    WHERE e.cleared_at IS NULL AND e.service_name IN (SELECT target FROM targets)
    RETURNING e.id
), resolved_event AS (
    INSERT INTO self_healing_events (severity, event_type, service_name, remediation, occurrence_id, message, details, node)
    SELECT 'INFO', 'alert_resolved', (SELECT min(t.target) FROM targets t WHERE t.occurrence_id = a.id),
           a.remediation, a.id,
           format('%s resolved after %s', a.alertname,
                  date_trunc('second', COALESCE(a.ends_at, now()) - a.starts_at)),
           jsonb_build_object('recovery_seconds',
                  EXTRACT(EPOCH FROM COALESCE(a.ends_at, now()) - a.starts_at)), a.node
    FROM alert a
    WHERE a.just_resolved AND a.remediation IS NOT NULL
    RETURNING id
)
-- What each delivery changed. (Every data-modifying CTE above runs to its
-- end whether or not this reads it.)
SELECT a.delivery,
       count(*) FILTER (WHERE k.kind = 'queued'),
       count(*) FILTER (WHERE k.kind = 'cancelled'),
       count(*) FILTER (WHERE k.kind = 'waiting'),
       COALESCE(array_agg(DISTINCT COALESCE(k.node, '')) FILTER (WHERE k.kind = 'queued'), '{}')
FROM (SELECT 'queued' AS kind, occurrence_id, node FROM job
      UNION ALL SELECT 'cancelled', occurrence_id, NULL FROM cancelled
      UNION ALL SELECT 'waiting', id, NULL FROM silent) k
JOIN alert a ON a.id = k.occurrence_id
GROUP BY a.delivery`

// IngestAlerts persists every alert of one delivery in one statement, and
// so one transaction. It is idempotent: delivering the same alerts again
// changes only delivery counters. reopenAfter is how long after a finished
// job a still-firing occurrence may get its next step. An alert repeated
// within the delivery is stored once (resolved if either copy is).
func (s *Store) IngestAlerts(ctx context.Context, alerts []model.Alert, reopenAfter time.Duration) (model.IngestResult, error) {
	res, err := s.IngestDeliveries(ctx, [][]model.Alert{alerts}, reopenAfter)
	if err != nil {
		return model.IngestResult{}, err
	}
	return res[0], nil
}

// IngestDeliveries persists several deliveries in one statement and one
// transaction — one commit, one flush of the WAL, for all of them — and
// returns what each changed, in order. Each is stored as IngestAlerts
// stores it. Deliveries should not share an alert (fingerprint and start):
// one that several carry is stored once, as if it came once, and counted
// for the first. The alerts are written in the order of their keys, so
// that two statements sharing alerts lock them in the same order and never
// deadlock.
func (s *Store) IngestDeliveries(ctx context.Context, deliveries [][]model.Alert, reopenAfter time.Duration) ([]model.IngestResult, error) {
	return s.ingest(ctx, s.pool, deliveries, reopenAfter)
}

// batcher is a pool or a transaction (as querier is, in store.go).
type batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// delivered is an alert and the delivery it came in.
type delivered struct {
	model.Alert
	delivery int
}

func (s *Store) ingest(ctx context.Context, q batcher, deliveries [][]model.Alert, reopenAfter time.Duration) ([]model.IngestResult, error) {
	b := &pgx.Batch{}
	results := s.queueIngest(b, deliveries, reopenAfter)
	if b.Len() == 0 {
		return results, nil
	}
	if err := q.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("persist alerts: %w", err)
	}
	return results, nil
}

// queueIngest queues in b the statements that store the deliveries (none
// when they carry no alert), and returns what each changed, filled in as
// b's results are read.
func (s *Store) queueIngest(b *pgx.Batch, deliveries [][]model.Alert, reopenAfter time.Duration) []model.IngestResult {
	results := make([]model.IngestResult, len(deliveries))
	var all []delivered
	for d, alerts := range deliveries {
		for _, a := range alerts {
			all = append(all, delivered{a, d})
		}
	}
	if len(all) == 0 {
		return results
	}
	all = distinctAlerts(all)
	n := len(all)
	var (
		fingerprints, alertnames, statuses, urls = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		remediations, notHere, nodes             = make([]string, n), make([]string, n), make([]string, n)
		startsAt, endsAt                         = make([]time.Time, n), make([]time.Time, n)
		labels, annotations                      = make([]map[string]string, n), make([]map[string]string, n)
		critical                                 = make([]bool, n)
		index                                    = make([]int32, n)
	)
	for i, a := range all {
		fingerprints[i], startsAt[i], alertnames[i], statuses[i], urls[i] = a.Fingerprint, a.StartsAt, a.Alertname, a.Status, a.GeneratorURL
		remediations[i], critical[i], notHere[i], nodes[i] = a.Remediation, a.Critical, a.NotHere, a.Node
		labels[i], annotations[i] = a.Labels, a.Annotations
		if labels[i] == nil {
			labels[i] = map[string]string{}
		}
		if annotations[i] == nil {
			annotations[i] = map[string]string{}
		}
		endsAt[i], index[i] = a.EndsAt, int32(a.delivery)
	}
	// One round trip, one (implicit) transaction. The statement is big,
	// and planning it anew for each delivery (as PostgreSQL does while a
	// custom plan looks cheaper) cost several times its execution; its plan
	// does not depend on the values, so the generic one is used — for this
	// transaction only.
	b.Queue("SELECT set_config('plan_cache_mode', 'force_generic_plan', true)")
	b.Queue(ingestSQL, fingerprints, startsAt, alertnames, statuses, labels, annotations, urls,
		remediations, endsAt, critical, notHere, nodes, reopenAfter, s.silentAfter.Seconds(), index).Query(func(rows pgx.Rows) error {
		var d int32
		var r model.IngestResult
		_, err := pgx.ForEachRow(rows, []any{&d, &r.JobsQueued, &r.JobsCancelled, &r.Waiting, &r.Nodes}, func() error {
			results[d] = r
			results[d].Nodes = slices.Clone(r.Nodes)
			return nil
		})
		return err
	})
	return results
}

// RaiseOwnAlert persists an alert selfheal raises itself (the
// critical-events threshold): next, given when the alert with fingerprint
// fp began firing (firing false when it does not), returns the alert to
// store, or nil. It runs under a lock per node and fingerprint, so that
// replicas deciding at once raise one occurrence, not one each.
func (s *Store) RaiseOwnAlert(ctx context.Context, fp string, reopenAfter time.Duration, next func(since time.Time, firing bool) *model.Alert) (model.IngestResult, error) {
	var res model.IngestResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('selfheal/alert/' || COALESCE(selfheal_node(), '') || '/' || $1, 0))`, fp); err != nil {
			return err
		}
		since, firing, err := firingSince(ctx, tx, fp)
		if err != nil {
			return err
		}
		a := next(since, firing)
		if a == nil {
			return nil
		}
		all, err := s.ingest(ctx, tx, [][]model.Alert{{*a}}, reopenAfter)
		if err == nil {
			res = all[0]
		}
		return err
	})
	if err != nil {
		return model.IngestResult{}, fmt.Errorf("raise alert %s: %w", fp, err)
	}
	return res, nil
}

// distinctAlerts sorts alerts by their key (fingerprint, start) and keeps
// one of each: the resolved copy when there is one, counted for the first
// delivery that carried the alert.
func distinctAlerts(alerts []delivered) []delivered {
	sorted := slices.Clone(alerts)
	slices.SortStableFunc(sorted, func(a, b delivered) int {
		if c := strings.Compare(a.Fingerprint, b.Fingerprint); c != 0 {
			return c
		}
		return a.StartsAt.Compare(b.StartsAt)
	})
	out := sorted[:0]
	for _, a := range sorted {
		if k := len(out) - 1; k >= 0 && out[k].Fingerprint == a.Fingerprint && out[k].StartsAt.Equal(a.StartsAt) {
			if a.Status == "resolved" && out[k].Status != "resolved" {
				out[k].Alert = a.Alert
			}
			continue
		}
		out = append(out, a)
	}
	return out
}
