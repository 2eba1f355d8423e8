package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Claim is a job held by one worker. While the worker decides, its
// transaction keeps the job's row locked, so no other worker or replica
// can take the job, and a crash releases it with the connection. The lock
// is FOR NO KEY UPDATE so that rows referencing the job can still be
// inserted. Every write the decision makes commits with Defer or Finish,
// atomically — or, when the decision is to act, with RecordIntent, which
// admits the action under the limits and commits the intent.
//
// From the intent on, the job belongs to its worker by a lease rather than
// a transaction: no connection stays open while the action runs, the
// worker renews the lease (Renew) on whichever connection the pool gives
// it, and Finish records the outcome in a transaction of its own. A
// database restart or a dropped connection therefore costs the worker
// nothing; only a lease that lapses lets another take the action over.
type Claim struct {
	held
	job   model.Job
	store *Store
	// acting is the action under way once RecordIntent admitted it, until
	// Finish recorded its outcome. The worker renews the lease from a
	// goroutine of its own while Finish runs: mu guards it.
	mu     sync.Mutex
	acting *acting
}

// action is the claim's action under way, nil when none is (or no longer).
func (c *Claim) action() *acting {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acting
}

func (c *Claim) setAction(a *acting) {
	c.mu.Lock()
	c.acting = a
	c.mu.Unlock()
}

// acting is the action a claim runs, owned by lease.
type acting struct {
	actionID int64
	owner    string
}

// held is a pooled connection with a transaction open on it: a Claim's or
// a Round's, whose row locks last until it commits or is released.
type held struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
	// kept: what the transaction wrote before savepoint keptSavepoint
	// (IngestAndClaim's alerts) is committed even when the rest is not.
	kept bool
}

const keptSavepoint = "kept"

// hold acquires a connection and begins a transaction on it.
func (s *Store) hold(ctx context.Context) (held, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return held{}, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Release()
		return held{}, err
	}
	return held{conn: conn, tx: tx}, nil
}

// release rolls back what was not committed — back to keptSavepoint, and
// commits what came before it, where the transaction has one — and gives
// the connection back. Safe to call more than once.
func (h *held) release() {
	if h.tx != nil {
		ctx := context.Background()
		if h.kept {
			if _, err := h.tx.Exec(ctx, "ROLLBACK TO SAVEPOINT "+keptSavepoint); err == nil {
				_ = h.tx.Commit(ctx)
			}
		}
		_ = h.tx.Rollback(ctx) // a no-op once committed
		h.tx = nil
	}
	if h.conn != nil {
		h.conn.Release()
		h.conn = nil
	}
}

// commit commits and gives the connection back.
func (h *held) commit(ctx context.Context) error {
	err := h.tx.Commit(ctx)
	h.tx = nil
	h.release()
	return err
}

// claimSQL takes the oldest due jobs: %[1]s narrows them to one node's in
// a fleet (through remediation_jobs_node_queued_idx), %[2]s adds a round's
// conditions, and %[3]s is how many. The jobs are chosen and locked from
// the queue alone, and joined with their alerts after: a plan made without
// statistics (a fresh install) or with stale ones (a queue that was empty
// when last analyzed, in a storm) may read and sort every due job, and
// the join would make each of those rows wide and cost an index lookup.
const claimSQL = `
SELECT j.id, j.occurrence_id, j.remediation, j.step, j.created_at,
       o.fingerprint, o.starts_at, o.status, o.alertname, o.labels, o.annotations,
       o.remediation IS DISTINCT FROM j.remediation, COALESCE(j.reason, ''), COALESCE(j.position, 1),
       COALESCE(j.node, ''), EXTRACT(EPOCH FROM now() - j.created_at)::float8,
       EXISTS (SELECT 1 FROM recovery_actions a WHERE a.job_id = j.id AND a.status = 'running' AND a.parent_action_id IS NULL)
FROM (
    SELECT j.id, j.occurrence_id, j.remediation, j.step, j.created_at, j.reason, j.position, j.node, j.not_before
    FROM remediation_jobs j
    WHERE j.state = 'queued' AND j.not_before <= now() %[1]s
      AND NOT (j.remediation = ANY($1))
      AND (j.remediation = ANY($2) OR j.created_at < now() - $3 * interval '1 second') %[2]s
    ORDER BY j.not_before, j.id
    LIMIT %[3]s
    FOR NO KEY UPDATE OF j SKIP LOCKED
) j
JOIN alert_occurrences o ON o.id = j.occurrence_id
ORDER BY j.not_before, j.id`

const nodeFilter = "AND j.node = ANY($4)"

var (
	claimAnySQL  = fmt.Sprintf(claimSQL, "", "", "1")
	claimNodeSQL = fmt.Sprintf(claimSQL, nodeFilter, "", "1")
	claimIDSQL   = fmt.Sprintf(claimSQL, "", "AND j.id = $4", "1")
)

// scanJob reads one row of claimSQL.
func scanJob(row pgx.Row, j *model.Job) error {
	var waited float64
	err := row.Scan(&j.ID, &j.OccurrenceID, &j.Remediation, &j.Step, &j.CreatedAt,
		&j.Fingerprint, &j.StartsAt, &j.AlertStatus, &j.Alertname, &j.Labels, &j.Annotations, &j.Escalated,
		&j.Reason, &j.Position, &j.Node, &waited, &j.Acting)
	j.Waited = seconds(waited)
	return err
}

// claimArgs are claimSQL's parameters for f: $1 to $3, and $4 in a fleet.
func claimArgs(f model.ClaimFilter) []any {
	skip, known := f.Skip, f.Known
	if skip == nil {
		skip = []string{}
	}
	if known == nil {
		known = []string{}
	}
	args := []any{skip, known, f.UnknownAfter.Seconds()}
	switch {
	case f.ID != 0:
		args = append(args, f.ID)
	case f.Nodes != nil:
		args = append(args, f.Nodes)
	}
	return args
}

// ClaimJob takes the oldest due job no one else holds that f lets this
// replica take. It returns nil, nil when there is none.
func (s *Store) ClaimJob(ctx context.Context, f model.ClaimFilter) (*Claim, error) {
	h, err := s.hold(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim job: %w", err)
	}
	c := &Claim{held: h, store: s}
	jobs, err := claimJobs(ctx, c.tx, claimSQLFor(f), claimArgs(f))
	if err != nil || len(jobs) == 0 {
		c.Release()
		if err != nil {
			return nil, fmt.Errorf("claim job: %w", err)
		}
		return nil, nil
	}
	c.job = jobs[0]
	return c, nil
}

// IngestAndClaim stores alerts as IngestAlerts does and, in the same
// transaction, claims the oldest due job f lets this replica take: most
// often one they just queued. Nothing is committed yet. The decision on
// the job commits the alerts with it (Defer, Finish, RecordIntent): one
// commit, one flush of the WAL, where storing and then claiming cost two.
// A decision that ends without recording anything (Release, or Retry
// after a failure) still commits the alerts, their job back in the queue.
// With no job to claim, the alerts are committed at once and the claim is
// nil. The fast path opens its occurrences this way.
//
// gate, when not nil, is waited for once the alerts are written and the
// job claimed, before anything commits or the claim is returned: an error
// from it rolls everything back, and is returned as it is. (The fast path
// asks Alertmanager for silences meanwhile.)
func (s *Store) IngestAndClaim(ctx context.Context, alerts []model.Alert, reopenAfter time.Duration, f model.ClaimFilter, gate func() error) (*Claim, model.IngestResult, error) {
	h, err := s.hold(ctx)
	if err != nil {
		return nil, model.IngestResult{}, fmt.Errorf("persist alerts: %w", err)
	}
	b := &pgx.Batch{}
	res := s.queueIngest(b, [][]model.Alert{alerts}, reopenAfter)
	b.Queue("RESET plan_cache_mode") // the ingest's setting, not the decision's
	b.Queue("SAVEPOINT " + keptSavepoint)
	var jobs []model.Job
	queueClaim(b, claimSQLFor(f), claimArgs(f), &jobs)
	if err := h.tx.SendBatch(ctx, b).Close(); err != nil {
		h.release()
		return nil, model.IngestResult{}, fmt.Errorf("persist alerts: %w", err)
	}
	if gate != nil {
		if err := gate(); err != nil {
			h.release()
			return nil, model.IngestResult{}, err
		}
	}
	if len(jobs) == 0 {
		if err := h.commit(ctx); err != nil {
			return nil, model.IngestResult{}, fmt.Errorf("persist alerts: %w", err)
		}
		return nil, res[0], nil
	}
	h.kept = true
	return &Claim{held: h, store: s, job: jobs[0]}, res[0], nil
}

// claimSQLFor is the claim statement for f.
func claimSQLFor(f model.ClaimFilter) string {
	switch {
	case f.ID != 0:
		return claimIDSQL
	case f.Nodes != nil:
		return claimNodeSQL
	}
	return claimAnySQL
}

// claimJobs runs a claimSQL statement in tx, planned with sorting off. The
// queue's index gives the jobs in order; a plan that sorts instead reads
// every due job, and the planner picks it whenever it believes the queue
// short — which, in a storm, is when its statistics are oldest. Sorting is
// back on for the claim's other statements.
func claimJobs(ctx context.Context, tx pgx.Tx, sql string, args []any) ([]model.Job, error) {
	var jobs []model.Job
	b := &pgx.Batch{}
	queueClaim(b, sql, args, &jobs)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return jobs, nil
}

// queueClaim queues in b the claim statement sql, planned with sorting off
// (claimJobs), whose jobs are appended to *jobs as b's results are read.
func queueClaim(b *pgx.Batch, sql string, args []any, jobs *[]model.Job) {
	b.Queue("SET LOCAL enable_sort = off")
	b.Queue(sql, args...).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var j model.Job
			if err := scanJob(rows, &j); err != nil {
				return err
			}
			*jobs = append(*jobs, j)
		}
		return rows.Err()
	})
	b.Queue("RESET enable_sort")
}

// Job is the claimed job.
func (c *Claim) Job() model.Job { return c.job }

// Release ends the claim without recording anything: the job goes back to
// the queue. Safe to call after Finish or Defer.
func (c *Claim) Release() { c.release() }

// OrphanedAction returns the action this job started that has not
// recorded its outcome, and whether its owner may still hold it (judged by
// the database's clock against the lease the owner renews; an action
// recorded before leases existed has none, and is not held). lease is how
// long a lease lasts: an owner whose lease was last written before the
// database itself started is given that long after the start to renew it.
// It reads the action only when the claim found one (model.Job.Acting):
// most jobs have none, and cost no round trip here.
func (c *Claim) OrphanedAction(ctx context.Context, lease time.Duration) (model.Orphan, bool, error) {
	if !c.job.Acting {
		return model.Orphan{}, false, nil
	}
	var o model.Orphan
	var heldFor, runsFor float64
	err := c.tx.QueryRow(ctx, `
		SELECT id, service_name, action_type, COALESCE(owner, ''),
		       GREATEST(EXTRACT(EPOCH FROM COALESCE(lease_until, '-infinity') - now()),
		                CASE WHEN renewed_at < pg_postmaster_start_time()
		                     THEN EXTRACT(EPOCH FROM pg_postmaster_start_time() + $2 * interval '1 second' - now()) END, 0),
		       GREATEST(EXTRACT(EPOCH FROM COALESCE(deadline, '-infinity') - now()), 0)
		FROM recovery_actions WHERE job_id = $1 AND status = 'running' AND parent_action_id IS NULL`,
		c.job.ID, lease.Seconds()).Scan(&o.ActionID, &o.Target, &o.Action, &o.Owner, &heldFor, &runsFor)
	if errors.Is(err, pgx.ErrNoRows) {
		return model.Orphan{}, false, nil
	}
	if err != nil {
		return model.Orphan{}, false, fmt.Errorf("look up orphaned action: %w", err)
	}
	o.HeldFor, o.RunsFor = seconds(heldFor), seconds(runsFor)
	o.Held = o.HeldFor > 0
	return o, true, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// targetLockKey is the advisory lock of one target: per node (a fleet
// node's session names its node), so that two nodes' containers of the
// same name are two targets.
const targetLockKey = `hashtextextended('selfheal/target/' || COALESCE(selfheal_node(), '') || '/' || %s, 0)`

// lockTargetSQL takes target $1's lock for job $2 (LockTarget).
var lockTargetSQL = fmt.Sprintf(`SELECT pg_try_advisory_xact_lock(%s)
	AND NOT EXISTS (SELECT 1 FROM recovery_actions
	                WHERE status = 'running' AND service_name = $1 AND parent_action_id IS NULL AND job_id IS DISTINCT FROM $2)`,
	fmt.Sprintf(targetLockKey, "$1"))

// LockTarget takes the per-target advisory lock for the rest of the
// decision. It does not wait: false means another worker is deciding on
// the target, or an action on it is running (its own lease, not a lock,
// holds it while it runs).
func (c *Claim) LockTarget(ctx context.Context, target string) (bool, error) {
	var ok bool
	if err := c.tx.QueryRow(ctx, lockTargetSQL, target, c.job.ID).Scan(&ok); err != nil {
		return false, fmt.Errorf("lock target %q: %w", target, err)
	}
	return ok, nil
}

// Defer puts the job back in the queue until d from now, with a reason,
// and records events, if any, in the same commit.
func (c *Claim) Defer(ctx context.Context, d time.Duration, reason string, events ...model.Event) error {
	_, err := c.tx.Exec(ctx, `UPDATE remediation_jobs SET not_before = clock_timestamp() + $2 * interval '1 second', reason = $3 WHERE id = $1`,
		c.job.ID, d.Seconds(), model.Truncate(reason, maxReasonBytes))
	for _, e := range events {
		if err != nil {
			break
		}
		_, err = c.tx.Exec(ctx, `INSERT INTO self_healing_events (event_time, severity, event_type, service_name, remediation, job_id, occurrence_id, message, details)
			VALUES (clock_timestamp(), $1, $2, NULLIF($3, ''), $4, $5, $6, $7, $8)`,
			e.Severity, e.Type, e.Target, c.job.Remediation, c.job.ID, c.job.OccurrenceID, e.Message, jsonObject(e.Details))
	}
	if err != nil {
		c.Release()
		return fmt.Errorf("defer job %d: %w", c.job.ID, err)
	}
	if err := c.commit(ctx); err != nil {
		return fmt.Errorf("defer job %d: %w", c.job.ID, err)
	}
	return nil
}

// Retry gives back a job whose handling failed with cause, counting the
// attempt: it is due again after a backoff that doubles with each attempt
// (1 s up to a minute), and after maxAttempts it is refused, with an event
// that says why. The claim's transaction, which the failure may have
// aborted, is rolled back first; the count is written on its own. It
// reports whether the job was refused. After an intent it does nothing:
// the action's lease decides.
func (c *Claim) Retry(ctx context.Context, cause error, maxAttempts int) (bool, error) {
	if c.action() != nil {
		// The action ran: its lease, not a retry, says what happens next.
		return false, nil
	}
	c.release()
	reason := model.Truncate(cause.Error(), maxReasonBytes)
	var refused bool
	err := pgx.BeginFunc(ctx, c.store.pool, func(tx pgx.Tx) error {
		var attempts int
		err := tx.QueryRow(ctx, `UPDATE remediation_jobs
			SET attempts = attempts + 1,
			    not_before = clock_timestamp() + LEAST(power(2, attempts), 60) * interval '1 second',
			    reason = $2
			WHERE id = $1 AND state = 'queued' RETURNING attempts`, c.job.ID, "handling failed: "+reason).Scan(&attempts)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // finished or cancelled meanwhile
		}
		if err != nil || attempts < maxAttempts {
			return err
		}
		refused = true
		msg := fmt.Sprintf("the job could not be handled in %d attempts; it is refused: %s", attempts, reason)
		if _, err := tx.Exec(ctx, `UPDATE remediation_jobs SET state = 'done', outcome = 'refused', reason = $2, finished_at = clock_timestamp()
			WHERE id = $1`, c.job.ID, msg); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO self_healing_events (event_time, severity, event_type, remediation, job_id, occurrence_id, message, details)
			VALUES (clock_timestamp(), 'ERROR', 'job_failed', $1, $2, $3, $4, jsonb_build_object('attempts', $5::int))`,
			c.job.Remediation, c.job.ID, c.job.OccurrenceID, msg, attempts)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("count a failed attempt at job %d: %w", c.job.ID, err)
	}
	return refused, nil
}

// maxReasonBytes bounds a reason or error stored with a job: a message
// that quotes a client's data (a megabyte label, say) must not be stored
// or logged whole, again at every retry.
const maxReasonBytes = 1024
