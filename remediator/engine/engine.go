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

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
)

// Claim is a job held by one worker, and everything the engine reads and
// writes while it holds it; the store's Claim is one, backed by a transaction.
// Every write commits with Finish or Defer; Release gives the job back.
type Claim interface {
	Job() model.Job
	OrphanedAction(ctx context.Context, lease time.Duration) (model.Orphan, bool, error)
	LockTarget(ctx context.Context, target string) (bool, error)
	LoadState(ctx context.Context, q model.StateQuery) (model.State, error)
	LastTouch(ctx context.Context, target string, since time.Time, takingDown []string) (model.Touch, bool, error)
	FastOccurrence(ctx context.Context, remediation, target string, startsAt time.Time, within time.Duration) (model.FastOccurrence, bool, error)
	RecordIntent(ctx context.Context, in model.Intent) (model.Admitted, error)
	Renew(ctx context.Context, lease time.Duration) (resolved bool, err error)
	Defer(ctx context.Context, d time.Duration, reason string, events ...model.Event) error
	Retry(ctx context.Context, cause error, maxAttempts int) (bool, error)
	Finish(ctx context.Context, o model.Outcome) error
	Release()
}

// Engine runs the workers.
type Engine struct {
	host  string // this machine, as the replicas table shows it
	store Store
	claim func(ctx context.Context, f model.ClaimFilter) (Claim, error) // the Store's; tests give their own
	// ingestAndClaim stores alerts and claims a job in one transaction
	// (OpenFast; the Store's, tests give their own).
	ingestAndClaim func(ctx context.Context, alerts []model.Alert, reopenAfter time.Duration, f model.ClaimFilter, gate func() error) (Claim, error)
	// handed carries a job OpenFast claimed to an idle worker.
	handed chan Claim
	// claimRound claims a round (the Store's; tests give their own), which
	// workers do while storming: a decision met the storm brake, or waited
	// long for a worker (stormOf).
	claimRound func(ctx context.Context, f model.ClaimFilter, remediations []string, n int) (Round, error)
	storming   atomic.Bool
	abandoned  atomic.Bool                   // Abandon was called: renew no lease
	rounds     sync.Mutex                    // held by the worker deciding a round
	nextRound  time.Time                     // under rounds: when the next may start
	cfg        atomic.Pointer[policy.Config] // swapped by Reload
	executors  map[string]action.Executor
	logger     *slog.Logger
	wake       chan struct{}
	poller     sync.Mutex // held by the idle worker that polls (waitIdle)
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
		handed:    make(chan Claim),
		m:         newMetrics(st),
	}
	e.claim, e.claimRound, e.ingestAndClaim = e.claimFromStore, e.claimRoundFromStore, e.ingestAndClaimFromStore
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
	e.startWorkers(ctx, &wg)
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

// startWorkers starts the workers, idle, and wakes one for the first look.
func (e *Engine) startWorkers(ctx context.Context, wg *sync.WaitGroup) {
	for i := range e.config().Engine.Workers {
		wg.Go(func() { e.worker(ctx, i) })
	}
	e.Wake()
}

// worker handles jobs until ctx ends. It starts idle (startWorkers wakes
// one worker for the first look), and each claim wakes another
// (ProcessOne).
func (e *Engine) worker(ctx context.Context, id int) {
	var quiet errorLog
	var err error
	for {
		c, ok := e.waitIdle(ctx, err)
		if !ok {
			return
		}
		err = nil
		if c != nil { // handed by OpenFast
			err = e.handleClaimed(ctx, c)
		}
		// Look until nothing is due, or an error (the database is down,
		// say): then wait rather than spin on it.
		for worked := err == nil; worked; {
			if worked, err = e.ProcessOne(ctx); err != nil {
				break
			}
		}
		if err != nil && ctx.Err() == nil && quiet.due(err, time.Now()) {
			e.logger.Error("job processing failed; will retry", "worker", id, "err", err)
		}
	}
}

// waitIdle waits until an idle worker should look for jobs again, or is
// handed a claimed job (OpenFast), and reports false when ctx ended first.
// One idle worker at a time polls, every poll interval; the others wait to
// be woken: by a delivery, or by a worker that claimed a job (ProcessOne),
// so that a burst draws in as many workers as it has jobs. An idle engine
// asks the database once per interval, not once per worker, and keeps one
// connection busy doing so.
func (e *Engine) waitIdle(ctx context.Context, lastErr error) (Claim, bool) {
	if !e.poller.TryLock() {
		select {
		case <-ctx.Done():
			return nil, false
		case <-e.wake:
			return nil, true
		case c := <-e.handed:
			return c, true
		}
	}
	defer e.poller.Unlock()
	poll := time.NewTimer(e.idleWait(ctx, lastErr))
	defer poll.Stop()
	select {
	case <-ctx.Done():
		return nil, false
	case <-e.wake:
	case <-poll.C:
	case c := <-e.handed:
		return c, true
	}
	return nil, true
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

// ProcessOne claims one due job and handles it. It reports whether there
// was a job.
func (e *Engine) ProcessOne(ctx context.Context) (bool, error) {
	f := e.claimFilter(ctx)
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
	return true, e.handleClaimed(ctx, c)
}

// claimFilter is which jobs this replica may claim now.
func (e *Engine) claimFilter(ctx context.Context) model.ClaimFilter {
	cfg := e.config()
	f := model.ClaimFilter{Known: cfg.Names(), UnknownAfter: unknownRemediationAfter, Skip: e.unavailable(ctx)}
	if cfg.Node.Fleet {
		f.Nodes = e.nodeNames(cfg)
	}
	return f
}

// handleClaimed handles a job the worker holds.
func (e *Engine) handleClaimed(ctx context.Context, c Claim) error {
	defer c.Release()
	// Another job may be waiting: let an idle worker look while this one
	// handles its own.
	e.Wake()
	return e.handleOrRetry(ctx, c)
}

// OpenFast opens the occurrence of an alert the fast path raised, once
// check (its silence check) says it may. When a worker is idle it decides
// the job at once: the alert is stored and its job claimed in one
// transaction, which the decision commits (store.Store.IngestAndClaim) —
// one commit on the way from Docker's event to the action, where storing,
// waking a worker and claiming cost two and a hand-over. check runs
// meanwhile, and nothing commits or is decided before it returns nil; its
// error is returned as it is, with nothing stored. While storming (the
// rounds decide), or when no worker is idle, the alert is stored and its
// job queued as a delivery's is.
func (e *Engine) OpenFast(ctx context.Context, a model.Alert, check func(context.Context) error) error {
	reopen := e.config().Engine.ReopenAfter.D()
	if e.storming.Load() {
		if err := check(ctx); err != nil {
			return err
		}
		_, err := e.store.IngestAlerts(ctx, []model.Alert{a}, reopen)
		e.Wake()
		return err
	}
	checked := make(chan error, 1)
	go func() { checked <- check(ctx) }()
	c, err := e.ingestAndClaim(ctx, []model.Alert{a}, reopen, e.claimFilter(ctx), func() error { return <-checked })
	switch {
	case err != nil:
		return err
	case c == nil: // stored and committed, no job to hand over
		e.Wake()
		return nil
	}
	if j := c.Job(); j.Fingerprint == a.Fingerprint && j.StartsAt.Equal(a.StartsAt) {
		select {
		case e.handed <- c:
			return nil
		default:
		}
	}
	// No worker is idle, or an older job came first (whose decision
	// would be the first to make this one visible, perhaps only after its
	// action): commit the alert, its job in the queue, and wake a worker.
	c.Release()
	e.Wake()
	return nil
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
	err = fmt.Errorf("job %d: %s", c.Job().ID, model.Truncate(err.Error(), 1024))
	if rerr != nil {
		return fmt.Errorf("%w (%v)", err, rerr)
	}
	if refused {
		e.m.jobs.WithLabelValues(string(model.OutcomeRefused)).Inc()
		e.logger.Error("job refused after repeated failures", "job", c.Job().ID, "attempts", maxJobAttempts, "err", err)
		return nil
	}
	return err
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
