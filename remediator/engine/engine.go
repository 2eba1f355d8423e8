// Package engine turns stored alerts into remediations. Workers claim jobs
// from the database, serialise on the target, decide with Decide from the
// policy and the stored state, write the intent, run the action with a
// timeout, and write the outcome — so several replicas, restarts and crashes
// behave like one careful process.
package engine

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
)

// Claim is a job held by one worker, and everything the engine reads and
// writes while it holds it; *store.Claim is one, backed by a transaction.
// Every write commits with Finish or Defer; Release gives the job back.
type Claim interface {
	Job() store.Job
	OrphanedAction(ctx context.Context, lease time.Duration) (store.Orphan, bool, error)
	LockTarget(ctx context.Context, target string) (bool, error)
	RecordOutage(ctx context.Context, target string) error
	LoadState(ctx context.Context, q store.StateQuery) (store.State, error)
	LastTouch(ctx context.Context, target string, since time.Time) (store.Touch, bool, error)
	FastOccurrence(ctx context.Context, remediation, target string, startsAt time.Time, within time.Duration) (store.FastOccurrence, bool, error)
	RecordIntent(ctx context.Context, in store.Intent) (store.Admitted, error)
	Renew(ctx context.Context, lease time.Duration) (resolved bool, err error)
	Defer(ctx context.Context, d time.Duration, reason string, events ...store.Event) error
	Retry(ctx context.Context, cause error, maxAttempts int) (bool, error)
	Finish(ctx context.Context, o store.Outcome) error
	Release()
}

var _ Claim = (*store.Claim)(nil)

// Store is the database the engine works from.
type Store interface {
	ClaimJob(ctx context.Context, f store.ClaimFilter) (*store.Claim, error)
	ClaimRound(ctx context.Context, f store.ClaimFilter, remediations []string, n int) (*store.Round, error)
	Heartbeat(ctx context.Context, r store.Replica, alive time.Duration) (same, other int, err error)
	ApplyRetention(ctx context.Context) (map[string]int64, error)
	JobCounts(ctx context.Context) (map[string]int64, error)
	DueReverts(ctx context.Context, node, owner string) ([]store.PendingRevert, error)
	MarkReverted(ctx context.Context, p store.PendingRevert, revertErr error) error
	CriticalEvents(ctx context.Context, window time.Duration) (int, error)
	RaiseOwnAlert(ctx context.Context, fp string, reopenAfter time.Duration, next func(since time.Time, firing bool) *store.Alert) (store.IngestResult, error)
	IngestAlerts(ctx context.Context, alerts []store.Alert, reopenAfter time.Duration) (store.IngestResult, error)
	NodeHeartbeat(ctx context.Context, b store.NodeBeat) (refused []string, err error)
	NodeStopped(ctx context.Context, name, engine string) error
	ListenForJobs(ctx context.Context, node string, wake func()) error
	ReleaseLeases(ctx context.Context, owner string) (int, error)
	NextDue(ctx context.Context, nodes []string) (time.Time, bool, error)
}

var _ Store = (*store.Store)(nil)

// Engine runs the workers.
type Engine struct {
	host  string // this machine, as the replicas table shows it
	store Store
	claim func(ctx context.Context, f store.ClaimFilter) (Claim, error) // the Store's; tests give their own
	// claimRound claims a round (the Store's; tests give their own), which
	// workers do while storming: a decision met the storm brake, or waited
	// long for a worker (stormOf).
	claimRound func(ctx context.Context, f store.ClaimFilter, remediations []string, n int) (Round, error)
	storming   atomic.Bool
	abandoned  atomic.Bool                   // Abandon was called: renew no lease
	rounds     sync.Mutex                    // held by the worker deciding a round
	nextRound  time.Time                     // under rounds: when the next may start
	cfg        atomic.Pointer[policy.Config] // swapped by Reload
	executors  map[string]action.Executor
	logger     *slog.Logger
	wake       chan struct{}
	m          *metrics

	// revertGen counts the temporary changes this engine made; the revert
	// loop (one goroutine: revertSeen, revertChecked) looks for changes to
	// undo often only while some may be in place.
	revertGen     atomic.Int64
	revertSeen    int64
	revertChecked time.Time

	replica  string // this process, as the replicas table knows it
	mismatch int    // live replicas with another configuration, at the last heartbeat
	beats    int    // heartbeats so far (one goroutine)
	// refusedNames are the aliases the last heartbeat could not claim:
	// another node's. The workers claim no job for them.
	namesMu      sync.Mutex
	refusedNames []string

	availMu   sync.Mutex
	availAt   time.Time
	skip      []string // remediations this replica cannot act on now
	skipError string
}

// unknownRemediationAfter is how long a job of a remediation this
// replica's configuration lacks is left to a replica that has it; past it
// no replica does, and the job is claimed to be refused.
const unknownRemediationAfter = 5 * time.Minute

// replicaAlive is how long a replica counts as alive after its last
// heartbeat (node.heartbeat_interval apart).
const replicaAlive = time.Minute

// heartbeat records this replica and its node, with its configuration
// fingerprint, and counts the live replicas that run the same
// configuration and another.
func (e *Engine) heartbeat(ctx context.Context) {
	cfg := e.config()
	refused, err := e.store.NodeHeartbeat(ctx, store.NodeBeat{Name: e.node(), Names: cfg.Node.Names(),
		Engine: e.replica, Version: version.Version, ConfigFingerprint: cfg.Fingerprint()})
	e.namesMu.Lock()
	switch {
	case err != nil && ctx.Err() == nil:
		e.logger.Debug("node heartbeat failed", "err", err)
	case err == nil && len(refused) > 0 && !slices.Equal(refused, e.refusedNames):
		e.logger.Warn("node.aliases: these names are another node's name or alias; alerts naming them are not this node's",
			"names", refused)
	}
	if err == nil {
		e.refusedNames = refused
	}
	e.namesMu.Unlock()
	// Counting the replicas reads every live one: in a fleet (hundreds of
	// them) once a minute, not at every beat.
	e.beats++
	onlyAlive := cfg.Node.Fleet && (e.beats-1)%max(1, int(time.Minute/cfg.Node.HeartbeatInterval.D())) != 0
	same, other, err := e.store.Heartbeat(ctx, store.Replica{ID: e.replica, Host: e.host, Version: version.Version,
		ConfigFingerprint: cfg.Fingerprint(), Remediations: cfg.Names(), OnlyAlive: onlyAlive}, replicaAlive)
	if err != nil {
		if ctx.Err() == nil {
			e.logger.Debug("heartbeat failed", "err", err)
		}
		return
	}
	if onlyAlive {
		return
	}
	e.m.replicas.WithLabelValues("same").Set(float64(same))
	e.m.replicas.WithLabelValues("other").Set(float64(other))
	if other > 0 && e.mismatch == 0 {
		e.logger.Warn("replicas on this database run another configuration: each leaves the others' remediations alone",
			"this_fingerprint", e.config().Fingerprint(), "other_replicas", other)
	}
	e.mismatch = other
}

// availabilityTTL is how long the engine trusts its last look at what it
// can act on.
const availabilityTTL = time.Second

// unavailable returns the remediations one of whose actions cannot run now
// on this replica, looking again at most once per availabilityTTL.
func (e *Engine) unavailable(ctx context.Context) []string {
	e.availMu.Lock()
	defer e.availMu.Unlock()
	if time.Since(e.availAt) < availabilityTTL {
		return e.skip
	}
	// One bound for all the checks: a Docker Engine that hangs holds the
	// workers back a second, not a second per action type.
	actx, cancel := context.WithTimeout(ctx, availabilityTTL)
	defer cancel()
	errs := map[string]error{}
	for t, ex := range e.executors {
		if a, ok := ex.(action.Availability); ok {
			errs[t] = a.Available(actx)
		}
	}
	if ctx.Err() != nil {
		return e.skip // stopping: what was seen last stands
	}
	var skip []string
	var why string
	for _, r := range e.config().Remediations {
		for _, s := range r.Steps {
			if err := errs[s.Type]; err != nil {
				skip, why = append(skip, r.Name), err.Error()
				break
			}
		}
	}
	switch {
	case why != "" && e.skipError == "":
		e.logger.Warn("cannot act now: leaving these remediations' jobs to other replicas or later", "remediations", skip, "err", why)
	case why == "" && e.skipError != "":
		e.logger.Info("can act again on every remediation")
	}
	e.m.unavailable.Set(float64(len(skip)))
	e.skip, e.skipError, e.availAt = skip, why, time.Now()
	return skip
}

// New checks that every action the configuration names has an executor and
// returns an Engine. It registers the engine's metrics with reg.
func New(st Store, cfg *policy.Config, executors map[string]action.Executor, logger *slog.Logger, reg prometheus.Registerer) (*Engine, error) {
	if err := checkExecutors(cfg, executors); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	e := &Engine{
		host:      host,
		replica:   fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano()),
		store:     st,
		executors: executors,
		logger:    logger,
		wake:      make(chan struct{}, 1),
		m:         newMetrics(st),
	}
	e.claim, e.claimRound = e.claimFromStore, e.claimRoundFromStore
	e.cfg.Store(cfg)
	e.m.configInfo.WithLabelValues(cfg.Fingerprint()).Set(1)
	e.m.replicas.WithLabelValues("same")
	e.m.replicas.WithLabelValues("other")
	if reg != nil {
		e.m.register(reg)
	}
	return e, nil
}

// Wake tells an idle worker to look for jobs now.
func (e *Engine) Wake() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run works until ctx ends, then waits for the actions in flight to finish
// and record their outcome (each is bounded by its own timeout), and undoes
// every temporary change still in place.
func (e *Engine) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range e.config().Engine.Workers {
		wg.Go(func() { e.worker(ctx, i) })
	}
	wg.Go(func() {
		e.heartbeat(ctx)
		e.every(ctx, e.config().Node.HeartbeatInterval.D(), e.heartbeat)
	})
	if e.config().Node.Fleet {
		wg.Go(func() { e.listen(ctx) })
	}
	wg.Go(func() { e.every(ctx, e.config().Engine.RetentionInterval.D(), e.applyRetention) })
	wg.Go(func() {
		e.every(ctx, e.config().Engine.RevertInterval.D(), e.revertWhenDue)
	})
	wg.Go(func() { e.every(ctx, e.config().Engine.CriticalEvents.Interval.D(), e.watchCriticalEvents) })
	wg.Wait()
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	e.revert(final, true)
	// From now on this node's jobs wait, and say so.
	if err := e.store.NodeStopped(final, e.node(), e.replica); err != nil {
		e.logger.Warn("could not record that this node's engine stopped", "err", err)
	}
}

// Abandon gives up the actions still in flight: the process exits without
// waiting for them (its shutdown timeout passed). Their leases are
// renewed no more and ended now, so the next start, or another replica,
// records them as interrupted at once and goes on once each action's
// timeout has passed.
func (e *Engine) Abandon(ctx context.Context) {
	e.abandoned.Store(true)
	n, err := e.store.ReleaseLeases(ctx, e.replica)
	switch {
	case err != nil:
		e.logger.Warn("could not give up the actions in flight; they are taken over once their leases lapse", "err", err)
	case n > 0:
		e.logger.Warn("gave up the actions in flight: they are recorded as interrupted by the next start or another replica", "actions", n)
	}
}

// listen wakes a worker whenever a webhook replica queues a job for this
// node (fleet mode), listening again after a lost connection; the
// workers' polling covers the gaps.
func (e *Engine) listen(ctx context.Context) {
	node := e.node()
	var quiet errorLog
	for ctx.Err() == nil {
		err := e.store.ListenForJobs(ctx, node, e.Wake)
		if err != nil && ctx.Err() == nil && quiet.due(err, time.Now()) {
			e.logger.Warn("cannot listen for this node's jobs; polling meanwhile", "err", err,
				"poll_interval", e.config().Engine.PollInterval.D())
		}
		select {
		case <-ctx.Done():
		case <-time.After(e.config().Engine.PollInterval.D()):
		}
	}
}

// every runs f at each interval until ctx ends.
func (e *Engine) every(ctx context.Context, interval time.Duration, f func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

func (e *Engine) applyRetention(ctx context.Context) {
	deleted, err := e.store.ApplyRetention(ctx)
	if err != nil {
		e.logger.Warn("retention failed", "err", err)
		return
	}
	e.logger.Debug("retention applied", "deleted", deleted)
}

// revertRecheck is how often the engine looks for temporary changes to
// undo when it knows of none in place (another replica on this host may
// have made one).
const revertRecheck = 30 * time.Second

// revertWhenDue undoes the temporary changes whose alert resolved, at each
// revert_interval while some are in place, and otherwise only every
// revertRecheck: an idle engine (a fleet of them) does not ask the
// database every two seconds about changes that do not exist.
func (e *Engine) revertWhenDue(ctx context.Context) {
	gen := e.revertGen.Load()
	if gen == e.revertSeen && time.Since(e.revertChecked) < revertRecheck {
		return
	}
	e.revert(ctx, false)
	inPlace, err := e.store.DueReverts(ctx, e.node(), e.replica)
	if err != nil {
		return
	}
	e.revertChecked = time.Now()
	if len(inPlace) == 0 {
		e.revertSeen = gen
	}
}

// revert undoes the temporary changes on this node whose alert resolved,
// whoever made them; with stopping, also every one this replica made.
func (e *Engine) revert(ctx context.Context, stopping bool) {
	owner := ""
	if stopping {
		owner = e.replica
	}
	due, err := e.store.DueReverts(ctx, e.node(), owner)
	if err != nil {
		if ctx.Err() == nil {
			e.logger.Warn("cannot read pending reverts", "err", err)
		}
		return
	}
	for _, p := range due {
		var err error
		if rv, ok := e.executors[p.ActionType].(action.Reverter); ok {
			err = rv.Revert(ctx, p.Target, p.Data)
		} else {
			err = fmt.Errorf("action %s cannot be undone by this build", p.ActionType)
		}
		if err != nil {
			e.logger.Error("could not undo a temporary change", "action", p.ActionType, "target", p.Target, "err", err)
		} else {
			e.logger.Info("temporary change undone", "action", p.ActionType, "target", p.Target, "why", p.Why)
		}
		if err := e.store.MarkReverted(ctx, p, err); err != nil {
			e.logger.Error("could not record a revert", "err", err)
		}
	}
}

func (e *Engine) worker(ctx context.Context, id int) {
	poll := time.NewTimer(0)
	defer poll.Stop()
	var quiet errorLog
	for {
		worked, err := e.ProcessOne(ctx)
		if err != nil && ctx.Err() == nil && quiet.due(err, time.Now()) {
			e.logger.Error("job processing failed; will retry", "worker", id, "err", err)
		}
		if worked && err == nil {
			// Another job may be waiting: let the next idle worker look.
			e.Wake()
			continue
		}
		// Idle, or an error (the database is down, say): wait before trying
		// again rather than spin on it.
		poll.Reset(e.idleWait(ctx, err))
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-poll.C:
		}
	}
}

// idleWait is how long an idle worker waits for a wake-up before it looks
// again: the poll interval, or, in a fleet (where new jobs wake it), until
// the node's next deferred job is due if that is sooner.
func (e *Engine) idleWait(ctx context.Context, lastErr error) time.Duration {
	cfg := e.config()
	wait := cfg.Engine.PollInterval.D()
	if !cfg.Node.Fleet || lastErr != nil {
		return wait
	}
	next, ok, err := e.store.NextDue(ctx, e.nodeNames(cfg))
	if err != nil || !ok {
		return wait
	}
	return max(min(time.Until(next), wait), 10*time.Millisecond)
}

// nodeNames are the names this node claims jobs for: its name and the
// aliases the database let it have.
func (e *Engine) nodeNames(cfg *policy.Config) []string {
	e.namesMu.Lock()
	defer e.namesMu.Unlock()
	return slices.DeleteFunc(cfg.Node.Names(), func(n string) bool { return slices.Contains(e.refusedNames, n) })
}

// errorLog keeps a failing loop (say, while the database is down) from
// logging the same error every poll: a new error logs at once, a repeated
// one once a minute.
type errorLog struct {
	last string
	at   time.Time
}

func (l *errorLog) due(err error, now time.Time) bool {
	if msg := err.Error(); msg != l.last || now.Sub(l.at) >= time.Minute {
		l.last, l.at = msg, now
		return true
	}
	return false
}

// ProcessOne claims one due job and handles it. It reports whether there
// was a job.
func (e *Engine) ProcessOne(ctx context.Context) (bool, error) {
	cfg := e.config()
	f := store.ClaimFilter{Known: cfg.Names(), UnknownAfter: unknownRemediationAfter, Skip: e.unavailable(ctx)}
	if cfg.Node.Fleet {
		f.Nodes = e.nodeNames(cfg)
	}
	if e.storming.Load() {
		// One worker decides the rounds; the others wait for the storm to
		// pass.
		if !e.rounds.TryLock() {
			return false, nil
		}
		worked, err := e.processRound(ctx, f)
		e.rounds.Unlock()
		if worked || err != nil {
			return worked, err
		}
	}
	c, err := e.claim(ctx, f)
	if err != nil || c == nil {
		return false, err
	}
	defer c.Release()
	return true, e.handleOrRetry(ctx, c)
}

// maxJobAttempts bounds how often a job whose handling fails (an error,
// not a decision: a statement the database refuses, say) is tried again,
// with backoff, before it is refused with an event. A job that keeps
// failing must not hold the head of the queue.
const maxJobAttempts = 5

// handleOrRetry handles the claimed job; if that fails before an action
// started, the attempt is counted and the job tried again later (or, past
// maxJobAttempts, refused). The error returned is the handling's, bounded
// in size: it may quote a client's data.
func (e *Engine) handleOrRetry(ctx context.Context, c Claim) error {
	err := e.handle(ctx, c)
	if err == nil || ctx.Err() != nil {
		return err
	}
	refused, rerr := c.Retry(ctx, err, maxJobAttempts)
	err = fmt.Errorf("job %d: %s", c.Job().ID, store.Truncate(err.Error(), 1024))
	if rerr != nil {
		return fmt.Errorf("%w (%v)", err, rerr)
	}
	if refused {
		e.m.jobs.WithLabelValues(string(store.OutcomeRefused)).Inc()
		e.logger.Error("job refused after repeated failures", "job", c.Job().ID, "attempts", maxJobAttempts, "err", err)
		return nil
	}
	return err
}

// claimFromStore claims through the Store, as a Claim.
func (e *Engine) claimFromStore(ctx context.Context, f store.ClaimFilter) (Claim, error) {
	c, err := e.store.ClaimJob(ctx, f)
	if c == nil { // no job: a nil *store.Claim must not become a non-nil Claim
		return nil, err
	}
	return c, err
}

// permitTimeout bounds the read-only target check before a decision.
const permitTimeout = 5 * time.Second

func (e *Engine) handle(ctx context.Context, c Claim) error {
	// The job runs under the policy it started with, whatever a reload does.
	cfg := e.config()
	j := c.Job()
	log := e.logger.With("job", j.ID, "remediation", j.Remediation, "alertname", j.Alertname, "step", j.Step)

	// An action of this job has not recorded its outcome. While its
	// owner's lease holds, the owner is running it (perhaps through a
	// database restart): wait, counting nothing. Once the lease has
	// lapsed the owner is gone: record that the action was interrupted,
	// with an unknown effect, and never run it again. It is a failure of
	// the target, and the remediation goes on — the ladder's next step
	// (which first checks whether the target came back) or a sequence's —
	// once the interrupted action's own timeout has passed, so that a step
	// never runs while the one before it may still run.
	if orphan, orphaned, err := c.OrphanedAction(ctx, actionLease); err != nil {
		return err
	} else if orphaned && orphan.Held {
		e.m.deferred.Inc()
		return c.Defer(ctx, max(orphan.HeldFor, 100*time.Millisecond), fmt.Sprintf(
			"%s of %s (action %d) is still running, held by %s", orphan.Action, orphan.Target, orphan.ActionID, orphan.Owner))
	} else if orphaned {
		log.Warn("marking an interrupted action", "action_id", orphan.ActionID, "target", orphan.Target, "owner", orphan.Owner)
		e.m.jobs.WithLabelValues(string(store.JobInterrupted)).Inc()
		followUp := &store.FollowUp{}
		if r := cfg.Remediation(j.Remediation); r != nil && r.IsSequence() {
			followUp = nextInSequence(r, j)
		}
		if followUp != nil {
			followUp.After = orphan.RunsFor
		}
		const why = "its worker stopped renewing its lease between intent and outcome (selfheal stopped, or lost the database for longer than the lease)"
		return c.Finish(ctx, store.Outcome{
			State: store.JobInterrupted, Reason: "interrupted: " + why, Target: orphan.Target,
			ActionID: orphan.ActionID, ActionStatus: store.ActionInterrupted,
			ActionError: why + "; the effect is unknown",
			Failure:     &store.Failure{Type: orphan.Action, Status: string(store.ActionInterrupted)},
			FollowUp:    followUp,
			Events: []store.Event{{Severity: store.SeverityError, Type: "action_interrupted", Target: orphan.Target,
				Details: map[string]any{"action_id": orphan.ActionID, "owner": orphan.Owner, "next_step_after_seconds": orphan.RunsFor.Seconds()},
				Message: fmt.Sprintf("%s of %s was interrupted (%s); it is not repeated, and the remediation goes on once its timeout has passed (in %s)",
					orphan.Action, orphan.Target, why, orphan.RunsFor.Round(time.Second))}},
		})
	}

	r := cfg.Remediation(j.Remediation)
	if r == nil {
		// Claimed only after every replica left it for unknownRemediationAfter.
		return e.finish(ctx, c, "", Decision{Verdict: Refuse, Severity: store.SeverityError, Reason: fmt.Sprintf(
			"no replica's configuration has remediation %q (this one's fingerprint %s): nothing runs for this alert",
			j.Remediation, cfg.Fingerprint())}, nil)
	}
	// Jobs are queued only for this node's alerts; one queued by a replica
	// configured otherwise is still never acted on here.
	if why := cfg.Node.Foreign(j.Labels); why != "" {
		return e.finish(ctx, c, "", Decision{Verdict: Skip, Reason: why}, r)
	}
	target, err := renderTarget(r, j)
	if err != nil {
		return e.finish(ctx, c, "", Decision{Verdict: Refuse, Reason: err.Error()}, r)
	}
	switch canonical, err := e.canonical(ctx, r, target); {
	case action.IsTransient(err):
		// Bounded and told as an unreachable target is.
		d := limitsOf(cfg).unreachable(j.Waited, fmt.Errorf("cannot resolve %s now: %w", target, err))
		if d.Verdict == Refuse {
			return e.finish(ctx, c, target, d, r)
		}
		e.m.deferred.Inc()
		return c.Defer(ctx, d.RetryAfter, d.Reason, e.unreachableEvent(j, target, d)...)
	case err != nil:
		return e.finish(ctx, c, target, Decision{Verdict: Refuse, Reason: fmt.Sprintf("cannot resolve target %s: %v", target, err)}, r)
	case canonical != target:
		log.Debug("target resolved", "rendered", target, "canonical", canonical)
		target = canonical
	}
	locked, err := c.LockTarget(ctx, target)
	if err != nil {
		return err
	}
	if !locked {
		e.m.deferred.Inc()
		return c.Defer(ctx, 500*time.Millisecond, "another action on "+target+" is in progress")
	}
	// Alertmanager's delivery of an outage the fast path already opened
	// joins it: one outage, one ladder, one count.
	if r.FastPath != nil && j.Step == 1 && !policy.IsFastAlert(j.Labels) {
		if fast, joined, err := e.joinsFastPath(ctx, c, r, target); err != nil {
			return err
		} else if joined {
			return e.finish(ctx, c, target, Decision{Verdict: Skip, JoinedTo: fast.ID, Severity: store.SeverityInfo, Reason: fmt.Sprintf(
				"the fast path opened this outage of %s from Docker's events (occurrence %d): Alertmanager's alert joins it", target, fast.ID)}, r)
		}
	}
	if countsOutage(r, j) {
		if j.Step == 1 {
			d, own, err := e.ownOutage(ctx, c, r, target)
			if err != nil {
				return err
			}
			if own {
				log.Debug("decided", "target", target, "verdict", d.Verdict, "reason", d.Reason)
				if d.Verdict == Defer {
					e.m.deferred.Inc()
					return c.Defer(ctx, d.RetryAfter, d.Reason)
				}
				return e.finish(ctx, c, target, d, r)
			}
		}
		if err := c.RecordOutage(ctx, target); err != nil {
			return err
		}
	}
	st, err := c.LoadState(ctx, StateQueryOf(cfg, r, target))
	if err != nil {
		return err
	}
	// The cause, where the remediation chooses by it and it could matter:
	// what the target's evidence says picks the branch.
	r, cause := e.byCause(ctx, r, target, st, log)
	in := inputFor(cfg, r, j, st)
	d := Decide(in, st.Now)
	if d.Verdict.Acts() {
		step, _ := in.NextAction()
		exec := e.executors[step.Type]
		pctx, cancel := context.WithTimeout(ctx, permitTimeout)
		in.PermitErr = exec.Permit(pctx, stepRequest(r, step, j, target))
		if rc, ok := exec.(action.RecoveryChecker); ok && in.PermitErr == nil && r.Category == policy.CategoryA && !r.IsSequence() {
			if in.Recovery, err = rc.Recovered(pctx, target, j.StartsAt, r.Verify.StableFor.D()); action.IsTransient(err) {
				in.PermitErr, err = err, nil
			}
		}
		cancel()
		if err != nil {
			return err
		}
		d = Decide(in, st.Now)
	}
	if cause != "" {
		d.Reason = cause + ": " + d.Reason
	}
	return e.settle(ctx, c, r, target, in, d, log)
}

// byCause returns r as the cause its target's evidence shows makes it
// (policy.Remediation.ForCause), and which cause; r and "" when no cause
// could matter in state st, none applies or the evidence cannot be read
// (then the ladder runs as configured). The state a decision reads is the
// same under every cause: the remediation's name and window.
func (e *Engine) byCause(ctx context.Context, r *policy.Remediation, target string, st store.State, log *slog.Logger) (*policy.Remediation, string) {
	if !r.CauseMatters(st.FailuresInWindow) || len(r.Steps) == 0 {
		return r, ""
	}
	w, ok := e.executors[r.Steps[0].Type].(action.Witness)
	if !ok {
		return r, ""
	}
	wctx, cancel := context.WithTimeout(ctx, evidenceTimeout)
	defer cancel()
	ev, err := w.Evidence(wctx, action.Request{Target: target, Params: r.Steps[0].Params, Remediation: r.Name})
	if err != nil {
		log.Warn("cannot read the evidence the remediation's causes choose on; the ladder applies", "target", target, "err", err)
		return r, ""
	}
	return r.ForCause(ev.Facts)
}

// settle carries out decision d on input in: defer the job, run the
// action, or record a decision that runs nothing.
func (e *Engine) settle(ctx context.Context, c Claim, r *policy.Remediation, target string, in Input, d Decision, log *slog.Logger) error {
	log.Debug("decided", "target", target, "verdict", d.Verdict, "reason", d.Reason)
	if why := stormOf(in, d); why != "" && !e.storming.Swap(true) {
		log.Info(why+": deciding the queue in rounds", "round_size", roundSize)
	}
	switch d.Verdict {
	case Defer:
		e.m.deferred.Inc()
		var events []store.Event
		if action.IsTransient(in.PermitErr) {
			events = e.unreachableEvent(c.Job(), target, d)
		}
		return c.Defer(ctx, d.RetryAfter, d.Reason, events...)
	case Run:
		return e.run(ctx, c, r, target, in, d, log)
	default:
		return e.finish(ctx, c, target, d, r)
	}
}

// unreachableEvent is the event a job deferred for an unreachable target
// records: once per job, not at every retry.
func (e *Engine) unreachableEvent(j store.Job, target string, d Decision) []store.Event {
	if strings.HasPrefix(j.Reason, reasonUnreachable) {
		return nil
	}
	return []store.Event{{Severity: store.SeverityWarning, Type: "target_unreachable", Target: target, Message: d.Reason}}
}

// countsOutage reports whether the job's alert occurrence is itself a
// failure of its target: a category A alert (a service down or unhealthy)
// that started firing, matched by this remediation rather than handed to it
// by an escalation. A crash loop whose every restart "succeeds" is still
// three failures in ten minutes.
func countsOutage(r *policy.Remediation, j store.Job) bool {
	return r.Category == policy.CategoryA && !j.Escalated && j.AlertStatus == "firing"
}

// ownOutageSlack is how long before an alert began an action of selfheal's
// may have taken its target down: Prometheus sees a stop a scrape and an
// evaluation late.
const ownOutageSlack = 10 * time.Minute

// ownOutage reports whether the alert is selfheal's own doing: another
// job's action touched the target (a hard restart of every service, or a
// restart by another remediation), and the target runs now in a run that
// action started. Such an alert is no failure of the service: it is
// skipped, uncounted. While the action still runs, the job waits for it.
func (e *Engine) ownOutage(ctx context.Context, c Claim, r *policy.Remediation, target string) (Decision, bool, error) {
	touch, found, err := c.LastTouch(ctx, target, c.Job().StartsAt.Add(-ownOutageSlack))
	if err != nil || !found {
		return Decision{}, false, err
	}
	if touch.Running {
		return Decision{Verdict: Defer, RetryAfter: time.Second, Reason: fmt.Sprintf(
			"selfheal's %s (%s, action %d) is acting on %s: waiting for it to finish", touch.Action, touch.Remediation, touch.ActionID, target)}, true, nil
	}
	step, _ := LadderStep(r, 0)
	rc, ok := e.executors[step.Type].(action.RecoveryChecker)
	if !ok {
		return Decision{}, false, nil
	}
	cctx, cancel := context.WithTimeout(ctx, permitTimeout)
	defer cancel()
	rec, err := rc.Recovered(cctx, target, touch.Started.Add(-time.Second), 0)
	if err != nil || !rec.Recovered || rec.Since.After(touch.Completed.Add(2*time.Second)) {
		return Decision{}, false, err
	}
	return Decision{Verdict: Skip, Reason: fmt.Sprintf(
		"%s went down under selfheal's own %s (%s, action %d) and runs since %s in the run it started: not an outage",
		target, touch.Action, touch.Remediation, touch.ActionID, rec.Since.UTC().Format(time.RFC3339))}, true, nil
}

// nextInSequence queues the next action of a sequence once a step ended,
// whatever its outcome; nil when the job is not part of one or was the last.
func nextInSequence(r *policy.Remediation, j store.Job) *store.FollowUp {
	if r == nil || !r.IsSequence() || j.Position >= len(r.Steps) {
		return nil
	}
	return &store.FollowUp{Sequence: true, Position: j.Position + 1}
}

// renderTarget is the target r names for job j's alert.
func renderTarget(r *policy.Remediation, j store.Job) (string, error) {
	return r.RenderTarget(policy.TemplateData{Status: j.AlertStatus, Labels: j.Labels,
		Annotations: j.Annotations, StartsAt: j.StartsAt, Fingerprint: j.Fingerprint})
}

// canonical is the target's own name (action.Canonicalizer) as the
// executor of r's first step knows it; the target as given when that
// executor's targets have one name only.
func (e *Engine) canonical(ctx context.Context, r *policy.Remediation, target string) (string, error) {
	cz, ok := e.executors[r.Steps[0].Type].(action.Canonicalizer)
	if !ok {
		return target, nil
	}
	cctx, cancel := context.WithTimeout(ctx, permitTimeout)
	defer cancel()
	return cz.Canonical(cctx, target)
}

// stepRequest is the request for step of r on target, for job j.
func stepRequest(r *policy.Remediation, step policy.Action, j store.Job, target string) action.Request {
	return action.Request{Target: target, Params: step.Params, Verify: verification(r.Verify), Labels: j.Labels, Remediation: r.Name}
}

// inputFor is the input of a decision on job j under r, in state st.
func inputFor(cfg *policy.Config, r *policy.Remediation, j store.Job, st store.State) Input {
	if why := cfg.PausedByEnvironment; why != "" && !st.Paused {
		st.Paused, st.PauseReason = true, "this replica's environment says "+why
	}
	return Input{
		Remediation: r,
		Waited:      st.Now.Sub(j.CreatedAt),
		DryRun:      cfg.IsDryRun(r),
		Limits:      limitsOf(cfg),
		State:       st,
		// An escalation runs whether or not the alert has resolved since.
		AlertResolved: j.AlertStatus == "resolved" && !j.Escalated,
		Step:          j.Position,
	}
}

func limitsOf(cfg *policy.Config) Limits {
	return Limits{
		UnreachableFor:       cfg.Engine.UnreachableFor.D(),
		MaxConcurrentActions: cfg.Engine.MaxConcurrentActions,
		StormMaxActions:      cfg.Engine.StormBrake.MaxActions,
		StormWindow:          cfg.Engine.StormBrake.Window.D(),
		Chronic:              cfg.Engine.Chronic,
	}
}

// StateQueryOf is the state a decision of r on target reads under cfg.
func StateQueryOf(cfg *policy.Config, r *policy.Remediation, target string) store.StateQuery {
	q := store.StateQuery{Target: target, Remediation: r.Name, FailureWindow: r.FailureWindow.D(),
		StormWindow: cfg.Engine.StormBrake.Window.D()}
	if cfg.Engine.Chronic.MaxRemediations > 0 {
		q.ChronicWindow = cfg.Engine.Chronic.Window.D()
	}
	return q
}

// config is the policy in force now.
func (e *Engine) config() *policy.Config { return e.cfg.Load() }

// node is this engine's node's name, lower case, as the nodes table,
// its jobs' channel and its temporary changes know it.
func (e *Engine) node() string { return strings.ToLower(e.config().Node.Name) }

// Config is the policy in force now.
func (e *Engine) Config() *policy.Config { return e.config() }

// Reload puts cfg in force for the jobs decided from now on, queued ones
// included; jobs already being handled finish under the policy they
// started with. It refuses a configuration naming an action this build
// cannot run. (The server refuses a reload that changes a setting read
// only at start: policy.Config.StartOnlyChanges.)
func (e *Engine) Reload(cfg *policy.Config) error {
	if err := e.CheckReload(cfg); err != nil {
		return err
	}
	e.cfg.Store(cfg)
	e.m.configInfo.Reset()
	e.m.configInfo.WithLabelValues(cfg.Fingerprint()).Set(1)
	e.availMu.Lock()
	e.availAt = time.Time{} // the remediations changed: look again
	e.availMu.Unlock()
	return nil
}

// CheckReload says why cfg cannot be put in force by Reload, or nil.
func (e *Engine) CheckReload(cfg *policy.Config) error { return checkExecutors(cfg, e.executors) }

func checkExecutors(cfg *policy.Config, executors map[string]action.Executor) error {
	for _, r := range cfg.Remediations {
		for _, s := range r.Steps {
			if executors[s.Type] == nil {
				return fmt.Errorf("remediation %q: no executor for action %q", r.Name, s.Type)
			}
		}
	}
	return nil
}

// finish records a decision that runs nothing.
func (e *Engine) finish(ctx context.Context, c Claim, target string, d Decision, r *policy.Remediation) error {
	e.m.decisions.WithLabelValues(string(d.Verdict)).Inc()
	e.m.jobs.WithLabelValues(string(d.Verdict.Outcome())).Inc()
	o := store.Outcome{State: store.JobDone, Result: d.Verdict.Outcome(), Target: target, Reason: d.Reason,
		JoinedTo: d.JoinedTo, ResolveOccurrence: fastHealed(c.Job(), d.Verdict.Outcome())}
	ev := decisionEvent(c.Job(), target, d)
	switch d.Verdict {
	case DryRun:
		ev.Severity = store.SeverityInfo
		ev.Details["action"], ev.Details["attempt"] = d.Action.Type, d.Attempt
		o.DryRun = &store.Intent{Target: target, Action: d.Action.Type, Category: r.Category, Attempt: d.Attempt}
	case Escalate:
		ev.Severity, ev.Type = store.SeverityCritical, "escalation"
		ev.Details["escalate_to"] = r.EscalateTo
		o.Escalation = &store.Escalation{To: r.EscalateTo, Reason: d.Reason}
	case Refuse:
		o.FollowUp = nextInSequence(r, c.Job())
	}
	o.Events = []store.Event{ev}
	return c.Finish(ctx, o)
}

// decisionEvent is the audit trail's record of a decision that runs
// nothing: a warning, or the decision's own severity; a skip for an alert
// that resolved is news, not a warning.
func decisionEvent(j store.Job, target string, d Decision) store.Event {
	ev := store.Event{Severity: store.SeverityWarning, Type: "decision", Target: target, Message: d.Reason,
		Details: map[string]any{"verdict": string(d.Verdict)}}
	if d.Severity != "" {
		ev.Severity = d.Severity
	}
	if d.Verdict == Skip && j.AlertStatus == "resolved" {
		ev.Severity = store.SeverityInfo
	}
	return ev
}

// joinsFastPath finds the fast path's occurrence an Alertmanager alert is
// the same outage as: one still under way, or one healed shortly before
// the alert began while the target still runs in the run that healing (or
// a later one) started. A target down now after the fast path had healed
// it is a new outage the fast path missed: the alert acts.
func (e *Engine) joinsFastPath(ctx context.Context, c Claim, r *policy.Remediation, target string) (store.FastOccurrence, bool, error) {
	j := c.Job()
	fast, found, err := c.FastOccurrence(ctx, r.Name, target, j.StartsAt, r.FastPath.JoinWithin.D())
	if err != nil || !found || fast.Firing {
		return fast, found, err
	}
	rc, ok := e.executors[r.Steps[0].Type].(action.RecoveryChecker)
	if !ok {
		return fast, true, nil
	}
	pctx, cancel := context.WithTimeout(ctx, permitTimeout)
	defer cancel()
	rec, err := rc.Recovered(pctx, target, fast.StartsAt, 0)
	if err != nil {
		return fast, false, nil // cannot tell: the alert is decided as any other
	}
	return fast, rec.Recovered, nil
}

// fastHealed reports whether a job's end ends its occurrence: the fast
// path's occurrences have no Alertmanager resolution, so one ends when a
// job on it ends other than failed or escalated (the ladder goes on then).
func fastHealed(j store.Job, outcome store.JobOutcome) bool {
	return policy.IsFastAlert(j.Labels) && outcome != store.OutcomeFailed && outcome != store.OutcomeEscalated
}

// verification is what an action needs of a remediation's verify block.
func verification(v policy.Verify) action.Verify {
	return action.Verify{Timeout: v.Timeout.D(), StableFor: v.StableFor.D()}
}
