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

// A Round is many jobs decided together, in one transaction: what a storm
// repeats — claiming, locking targets, counting outages, reading state,
// recording outcomes — is one statement per round instead of one per job.
// Only jobs that may need nothing of their own are taken: no sequence step
// under way, no action started, of the remediations the engine names. The jobs
// the round does not finish stay queued when it commits, for a decision
// of their own.
type Round struct {
	held
	jobs []model.Job
}

// roundClaimSQL takes up to $6 due jobs of the remediations in $5; $4 is
// the node's names in a fleet, NULL otherwise.
var (
	roundConditions = `
      AND j.remediation = ANY($5) AND j.position IS NULL
      AND NOT EXISTS (SELECT 1 FROM recovery_actions a WHERE a.job_id = j.id)`
	roundAnySQL  = fmt.Sprintf(claimSQL, "AND $4::text[] IS NULL", roundConditions, "$6")
	roundNodeSQL = fmt.Sprintf(claimSQL, nodeFilter, roundConditions, "$6")
)

// ClaimRound takes up to n due jobs of the remediations named, that f lets
// this replica take and no one else holds. It returns nil, nil when there
// are none.
func (s *Store) ClaimRound(ctx context.Context, f model.ClaimFilter, remediations []string, n int) (*Round, error) {
	h, err := s.hold(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim a round of jobs: %w", err)
	}
	r := &Round{held: h}
	sql, args := roundAnySQL, claimArgs(f)
	if f.Nodes == nil {
		args = append(args, nil)
	} else {
		sql = roundNodeSQL
	}
	r.jobs, err = claimJobs(ctx, r.tx, sql, append(args, remediations, n))
	if err != nil || len(r.jobs) == 0 {
		r.Release()
		if err != nil {
			return nil, fmt.Errorf("claim a round of jobs: %w", err)
		}
		return nil, nil
	}
	return r, nil
}

// Jobs are the round's jobs, oldest first.
func (r *Round) Jobs() []model.Job { return r.jobs }

// Release ends the round without recording anything: its jobs go back to
// the queue. Safe to call after Finish.
func (r *Round) Release() { r.release() }

// LockTargets takes, for the rest of the round, the per-target advisory
// lock of each target it can, without waiting (the lock LockTarget takes),
// and returns those it holds on which no action runs.
func (r *Round) LockTargets(ctx context.Context, targets []string) (map[string]bool, error) {
	rows, err := r.tx.Query(ctx, fmt.Sprintf(`SELECT t FROM unnest($1::text[]) t
		WHERE pg_try_advisory_xact_lock(%s)
		  AND NOT EXISTS (SELECT 1 FROM recovery_actions WHERE status = 'running' AND service_name = t AND parent_action_id IS NULL)`,
		fmt.Sprintf(targetLockKey, "t")), targets)
	locked, err := stringSet(rows, err)
	if err != nil {
		return nil, fmt.Errorf("lock a round's targets: %w", err)
	}
	return locked, nil
}

// stringSet is the set of the one text column of rows (a query's result
// and its error).
func stringSet(rows pgx.Rows, err error) (map[string]bool, error) {
	if err != nil {
		return nil, err
	}
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	set := make(map[string]bool, len(list))
	for _, v := range list {
		set[v] = true
	}
	return set, nil
}

// TouchedTargets returns those of targets that an action of selfheal's
// acted on (the way LastTouch looks) and had not finished before since:
// their alerts may be selfheal's own doing, which a round does not judge.
func (r *Round) TouchedTargets(ctx context.Context, targets []string, since time.Time, takingDown []string) (map[string]bool, error) {
	rows, err := r.tx.Query(ctx, `
		SELECT DISTINCT t FROM unnest($1::text[]) t
		WHERE EXISTS (SELECT 1 FROM recovery_actions
		              WHERE started_at >= $2::timestamptz - interval '1 hour'
		                AND ((service_name = t AND action_type = ANY($3::text[])) OR details->'touches' ? t)
		                AND status <> 'dry_run'
		                AND (completed_at IS NULL OR completed_at >= $2))`, targets, since, takingDown)
	touched, err := stringSet(rows, err)
	if err != nil {
		return nil, fmt.Errorf("look up selfheal's actions on a round's targets: %w", err)
	}
	return touched, nil
}

// recordOutagesSQL counts each alert's occurrence as one failure of its
// target, once: not again for the same occurrence, and not for another
// alert of the same outage (the same container named another way, a second
// rule, a round's second alert for it) when the target's last outage was
// recorded after that alert began.
const recordOutagesSQL = `
INSERT INTO service_failures (service_name, failure_type, status, failure_time, remediation, job_id, occurrence_id, details)
SELECT DISTINCT ON (u.target, u.remediation)
       u.target, 'outage', 'detected', clock_timestamp(), u.remediation, u.job, u.occurrence, jsonb_build_object('alertname', u.alertname)
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::timestamptz[])
     WITH ORDINALITY AS u(target, remediation, job, occurrence, alertname, starts_at, i)
-- Read by (service_name, remediation, failure_time), failure_type checked
-- on the rows found: see stateQuery.
WHERE (SELECT bool_or(f.failure_type = 'outage') FROM service_failures f
       WHERE f.service_name = u.target AND f.remediation = u.remediation AND f.failure_time >= u.starts_at) IS NOT TRUE
ORDER BY u.target, u.remediation, u.i
ON CONFLICT (occurrence_id, remediation) WHERE failure_type = 'outage' DO NOTHING`

// queueOutages queues recordOutagesSQL for outages, if any, in b.
func queueOutages(b *pgx.Batch, outages []model.Outage) {
	if len(outages) == 0 {
		return
	}
	n := len(outages)
	targets, remediations, alertnames := make([]string, n), make([]string, n), make([]string, n)
	jobs, occurrences, startsAt := make([]int64, n), make([]int64, n), make([]time.Time, n)
	for i, o := range outages {
		targets[i], remediations[i], alertnames[i] = o.Target, o.Job.Remediation, o.Job.Alertname
		jobs[i], occurrences[i], startsAt[i] = o.Job.ID, o.Job.OccurrenceID, o.Job.StartsAt
	}
	b.Queue(recordOutagesSQL, targets, remediations, jobs, occurrences, alertnames, startsAt)
}

// roundStateSQL reads stateQuery for each of a round's decisions, in the
// order given.
var roundStateSQL = `
SELECT st.* FROM unnest($1::text[], $2::text[], $3::float8[], $4::bigint[], $5::timestamptz[])
     WITH ORDINALITY AS q(target, remediation, failure_window, occurrence, starts_at, i)
CROSS JOIN LATERAL (` + strings.NewReplacer("{target}", "q.target", "{remediation}", "q.remediation",
	"{failure_window}", "q.failure_window", "{storm_window}", "$6", "{occurrence}", "q.occurrence",
	"{reboot_pending}", "$7", "{starts_at}", "q.starts_at", "{chronic_window}", "$8", "{chronic_max}", "$9").Replace(stateQuery) + `) st
ORDER BY q.i`

// LoadStates reads the decision state for each query, in order, in one
// statement with one clock, having first counted the outages the queries
// ask for (StateQuery.CountOutage), in one round trip; every query must
// have the same StormWindow, ChronicWindow and ChronicMax.
func (r *Round) LoadStates(ctx context.Context, qs []model.RoundQuery) ([]model.State, error) {
	if len(qs) == 0 {
		return nil, nil
	}
	n := len(qs)
	targets, remediations := make([]string, n), make([]string, n)
	windows, occurrences, startsAt := make([]float64, n), make([]int64, n), make([]time.Time, n)
	var outages []model.Outage
	for i, q := range qs {
		targets[i], remediations[i], windows[i] = q.Target, q.Remediation, q.FailureWindow.Seconds()
		occurrences[i], startsAt[i] = q.Job.OccurrenceID, q.Job.StartsAt
		if q.CountOutage {
			outages = append(outages, model.Outage{Job: q.Job, Target: q.Target})
		}
	}
	b := &pgx.Batch{}
	queueOutages(b, outages)
	states := make([]model.State, 0, n)
	b.Queue(roundStateSQL, targets, remediations, windows, occurrences, startsAt,
		qs[0].StormWindow.Seconds(), rebootPendingFor.Seconds(), qs[0].ChronicWindow.Seconds(), qs[0].ChronicMax).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			st, err := scanState(rows, qs[len(states)].StateQuery)
			if err != nil {
				return err
			}
			states = append(states, st)
		}
		return rows.Err()
	})
	if err := r.tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("load a round's decision state: %w", err)
	}
	if len(states) != n {
		return nil, errors.New("load a round's decision state: a row is missing")
	}
	return states, nil
}

// Finish records the settled jobs, finished, with their events, and
// commits the round. Its other jobs stay queued.
func (r *Round) Finish(ctx context.Context, settled []model.Settled) error {
	defer r.Release()
	n := len(settled)
	ids, occurrences := make([]int64, n), make([]int64, n)
	results, targets, reasons, remediations := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	severities, types, messages := make([]string, n), make([]string, n), make([]string, n)
	details := make([]map[string]any, n)
	for i, s := range settled {
		ids[i], occurrences[i], remediations[i] = s.Job.ID, s.Job.OccurrenceID, s.Job.Remediation
		results[i], targets[i], reasons[i] = string(s.Result), s.Target, s.Reason
		severities[i], types[i], messages[i], details[i] = string(s.Event.Severity), s.Event.Type, s.Event.Message, jsonObject(s.Event.Details)
	}
	b := &pgx.Batch{}
	b.Queue(`UPDATE remediation_jobs j SET state = 'done', outcome = u.result, target = NULLIF(u.target, ''), reason = u.reason,
			finished_at = clock_timestamp()
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(id, result, target, reason)
		WHERE j.id = u.id`, ids, results, targets, reasons)
	b.Queue(`INSERT INTO self_healing_events (event_time, severity, event_type, service_name, remediation, job_id, occurrence_id, message, details)
		SELECT clock_timestamp(), e.severity, e.type, NULLIF(e.target, ''), e.remediation, e.job, e.occurrence, e.message, e.details
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::text[], $8::jsonb[])
		     AS e(severity, type, target, remediation, job, occurrence, message, details)`,
		severities, types, targets, remediations, ids, occurrences, messages, details)
	if err := r.tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("record a round of %d decisions: %w", n, err)
	}
	if err := r.commit(ctx); err != nil {
		return fmt.Errorf("record a round of %d decisions: %w", n, err)
	}
	return nil
}
