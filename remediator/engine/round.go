package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
)

// roundSize bounds the jobs one round decides.
const roundSize = 500

// roundEvery spaces rounds that were not full: while a storm still
// arrives, a round every tenth of a second takes what came meanwhile,
// rather than a round per delivery competing with the webhook for the
// database.
const roundEvery = 100 * time.Millisecond

// Round is many jobs decided together in one transaction; the store's Round
// is one. Its jobs that Finish does not settle stay queued.
type Round interface {
	Jobs() []model.Job
	LockTargets(ctx context.Context, targets []string) (map[string]bool, error)
	TouchedTargets(ctx context.Context, targets []string, since time.Time, takingDown []string) (map[string]bool, error)
	LoadStates(ctx context.Context, qs []model.RoundQuery) ([]model.State, error)
	Finish(ctx context.Context, settled []model.Settled) error
	Release()
}

// backlogAfter is how long a job may wait for a worker before the queue
// counts as backed up: the workers do not keep up with what arrives.
const backlogAfter = time.Second

// stormOf says why the engine should decide in rounds after decision d on
// input in: the storm brake held it back, or it runs nothing and waited
// long for a worker. Empty when neither.
func stormOf(in Input, d Decision) string {
	switch {
	case d.Verdict == Skip && in.Limits.braked(in.State):
		return "the storm brake holds"
	case (d.Verdict == Skip || d.Verdict == Refuse) && in.Waited >= backlogAfter:
		return fmt.Sprintf("jobs wait %s for a worker", in.Waited.Round(time.Millisecond))
	}
	return ""
}

// roundRemediations are the remediations a round may decide: all but
// those with a fast path, whose alerts may join another occurrence.
func roundRemediations(cfg *policy.Config) []string {
	var names []string
	for _, r := range cfg.Remediations {
		if r.FastPath == nil {
			names = append(names, r.Name)
		}
	}
	return names
}

// processRound is how a worker works while the storm brake holds or the
// queue is backed up (stormOf): the queue's jobs are decided in rounds,
// each the same decisions handle makes, with what a storm repeats done
// once per round — one claim, one lock statement, one outage count, one
// state query, one write of every outcome, each target's name resolved and
// each target checked once. A round records only decisions that run
// nothing (the brake's skips, refusals); every job it cannot settle so —
// one that would act, escalate or wait, one whose target another worker
// holds or selfheal itself just touched — is then handled on its own, as
// before. It reports whether there were jobs; when a round settles none,
// the storm is over and the workers go back to one job at a time. The
// caller holds e.rounds.
func (e *Engine) processRound(ctx context.Context, f model.ClaimFilter) (bool, error) {
	if wait := time.Until(e.nextRound); wait > 0 {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(wait):
		}
	}
	cfg := e.config()
	r, err := e.claimRound(ctx, f, roundRemediations(cfg), roundSize)
	if err != nil || r == nil {
		e.storming.Store(false)
		return false, err
	}
	if len(r.Jobs()) < roundSize {
		e.nextRound = time.Now().Add(roundEvery)
	}
	settled, left, err := e.decideRound(ctx, cfg, r)
	r.Release()
	if err != nil {
		return true, err
	}
	if settled == 0 {
		e.storming.Store(false)
		e.logger.Info("the storm has passed: deciding one job at a time")
	}
	for _, id := range left {
		f.ID = id
		c, err := e.claim(ctx, f)
		if err != nil {
			return true, err
		}
		if c == nil {
			continue // another worker took it, or it was cancelled
		}
		err = e.handleOrRetry(ctx, c)
		c.Release()
		if err != nil {
			return true, err
		}
	}
	return true, nil
}

// decideRound decides r's jobs through the pipeline, as a batch
// (roundView), and records those that run nothing. It returns how many it
// recorded and the jobs left for a decision of their own.
func (e *Engine) decideRound(ctx context.Context, cfg *policy.Config, r Round) (int, []int64, error) {
	rv := &roundView{round: r}
	memo := &roundMemo{canonical: map[string]string{}, permits: map[permitKey]error{}}
	var passes []*pass
	for _, j := range r.Jobs() {
		p := &pass{cfg: cfg, job: j, seen: memo, log: e.logger}
		p.v = roundJob{rv, p}
		passes = append(passes, p)
	}
	if err := e.decideAll(ctx, rv, passes); err != nil {
		return 0, nil, err
	}
	var (
		settled  []model.Settled
		left     []int64
		verdicts = map[Verdict]int{}
	)
	for _, p := range passes {
		// Only skips and refusals are settled here: a refusal of a
		// sequence queues its next step, which handle does.
		d := p.d
		if !p.decided || !(d.Verdict == Skip || d.Verdict == Refuse && !p.r.IsSequence()) {
			left = append(left, p.job.ID)
			continue
		}
		settled = append(settled, model.Settled{Job: p.job, Result: d.Verdict.Outcome(), Target: p.target, Reason: d.Reason,
			Event: decisionEvent(p.job, p.target, d)})
		verdicts[d.Verdict]++
	}
	if len(settled) == 0 {
		return 0, left, nil
	}
	if err := r.Finish(ctx, settled); err != nil {
		return 0, nil, err
	}
	e.m.roundDecisions.Add(float64(len(settled)))
	for v, n := range verdicts {
		e.m.decisions.WithLabelValues(string(v)).Add(float64(n))
		e.m.jobs.WithLabelValues(string(v.Outcome())).Add(float64(n))
	}
	return len(settled), left, nil
}

// roundView is a round's view of the database: what the pipeline's
// stages read and write for each of its jobs, done once for all of them
// before the stage (prepare) — one lock statement, one look at selfheal's
// own recent actions, one outage count, one state query.
type roundView struct {
	round   Round
	locked  map[string]bool
	touched map[string]bool
	states  map[int64]model.State
}

func (rv *roundView) prepare(ctx context.Context, stage string, passes []*pass) error {
	switch stage {
	case "remediation":
		// A job of a remediation this configuration lacks, or an
		// escalation, is decided alone.
		for _, p := range passes {
			if p.cfg.Remediation(p.job.Remediation) == nil || p.job.Escalated {
				p.left = true
			}
		}
	case "lock":
		var targets []string
		since := time.Now()
		for _, p := range passes {
			targets = append(targets, p.target)
			if t := p.job.StartsAt.Add(-ownOutageSlack); t.Before(since) {
				since = t
			}
		}
		var err error
		if rv.locked, err = rv.round.LockTargets(ctx, targets); err != nil {
			return err
		}
		rv.touched, err = rv.round.TouchedTargets(ctx, targets, since, action.TakingDown())
		return err
	case "state":
		qs := make([]model.RoundQuery, len(passes))
		for i, p := range passes {
			qs[i] = model.RoundQuery{Job: p.job, StateQuery: StateQueryOf(p.cfg, p.r, p.target)}
			qs[i].CountOutage = countsOutage(p.r, p.job)
		}
		states, err := rv.round.LoadStates(ctx, qs)
		if err != nil {
			return err
		}
		rv.states = map[int64]model.State{}
		for i, p := range passes {
			rv.states[p.job.ID] = states[i]
		}
	case "cause":
		// Where a cause could decide otherwise, the target's evidence is
		// read first, which handle does.
		for _, p := range passes {
			if p.r.CauseMatters(p.st.FailuresInWindow) {
				p.left = true
			}
		}
	}
	return nil
}

// roundJob is one job's part of its round's view.
type roundJob struct {
	rv *roundView
	p  *pass
}

func (j roundJob) LockTarget(_ context.Context, target string) (bool, error) {
	return j.rv.locked[target], nil
}

// FastOccurrence: a round decides no remediation with a fast path
// (roundRemediations).
func (roundJob) FastOccurrence(context.Context, string, string, time.Time, time.Duration) (model.FastOccurrence, bool, error) {
	return model.FastOccurrence{}, false, errLeave
}

// LastTouch: selfheal's own action on the target may explain the alert;
// that takes a look at the container, which handle does.
func (j roundJob) LastTouch(_ context.Context, target string, _ time.Time, _ []string) (model.Touch, bool, error) {
	if j.rv.touched[target] {
		return model.Touch{}, false, errLeave
	}
	return model.Touch{}, false, nil
}

func (j roundJob) LoadState(context.Context, model.StateQuery) (model.State, error) {
	return j.rv.states[j.p.job.ID], nil
}

// permitKey is a target as one remediation's step would touch it.
type permitKey struct{ remediation, action, target string }

// permitOnce is handle's target check for the step the job would run,
// asked once per round for a target whose permit depends on it alone; a
// target whose permit may depend on more is reported as permitted, which
// leaves the job to a decision of its own.
func (e *Engine) permitOnce(ctx context.Context, r *policy.Remediation, in Input, j model.Job, target string, seen map[permitKey]error) error {
	step, _ := in.NextAction()
	exec := e.executors[step.Type]
	if _, ok := exec.(action.TargetPermit); !ok {
		return nil
	}
	k := permitKey{r.Name, step.Type, target}
	if err, ok := seen[k]; ok {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, permitTimeout)
	defer cancel()
	err := exec.Permit(pctx, stepRequest(r, step, j, target))
	seen[k] = err
	return err
}

// canonicalOnce is the target's canonical name (Engine.canonical), asked
// once per round for each name (seen; nil outside a round).
func (e *Engine) canonicalOnce(ctx context.Context, r *policy.Remediation, target string, seen *roundMemo) (string, error) {
	if seen == nil {
		return e.canonical(ctx, r, target)
	}
	if c, ok := seen.canonical[target]; ok {
		return c, nil
	}
	c, err := e.canonical(ctx, r, target)
	if err != nil {
		return "", err
	}
	seen.canonical[target] = c
	return c, nil
}
