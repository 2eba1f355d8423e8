package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
)

// The pipeline is every check a job meets on its way to a decision, in
// order. Three paths decide, and all run these same stages: a job handled
// alone (handle), many decided together while storming (decideRound), and
// selfheal plan (Plan), so that what plan says is what the engine does.
// Each stage looks at what the stages before it found and either ends the
// job with a decision or passes it on; the last, Decide's, always ends it.
//
// The paths differ only in their view of the database: handle reads and
// writes through its claim, a round through batched statements (prepared
// once for all its jobs before each stage, see batch), plan only reads.
var pipeline = []stage{
	{"remediation", knownRemediation},
	{"node", ownNode},
	{"target", resolveTarget},
	{"lock", lockTarget},
	{"fast path", joinFastPath},
	{"own outage", ownOutageStage},
	{"state", loadState},
	{"cause", chooseCause},
	{"decide", decide},
}

// stage is one check. It returns the job's decision and true, or false to
// pass the job on; errLeave leaves the job to a decision of its own (a
// round's); any other error ends the path's attempt.
type stage struct {
	name string
	run  func(ctx context.Context, e *Engine, p *pass) (Decision, bool, error)
}

// errLeave means a round cannot decide the job: it needs a look of its
// own (a claim, an evidence read). The job is handled alone afterwards.
var errLeave = errors.New("left to a decision of its own")

// view is what one path lets the stages read and write. *store.Claim is
// one (handle's); a round and plan have their own.
type view interface {
	LockTarget(ctx context.Context, target string) (bool, error)
	FastOccurrence(ctx context.Context, remediation, target string, startsAt time.Time, within time.Duration) (model.FastOccurrence, bool, error)
	LastTouch(ctx context.Context, target string, since time.Time, takingDown []string) (model.Touch, bool, error)
	LoadState(ctx context.Context, q model.StateQuery) (model.State, error)
}

// batch is a path that reads for many jobs at once (a round): before each
// stage it is given the jobs still on their way, and may leave some
// (p.left).
type batch interface {
	prepare(ctx context.Context, stage string, passes []*pass) error
}

// pass is one job on its way: what the stages found so far, and at the end
// its decision.
type pass struct {
	cfg *policy.Config
	job model.Job
	// r is the job's remediation; from the cause stage on, as the cause
	// makes it.
	r      *policy.Remediation
	target string
	st     model.State
	in     Input
	// cause is the remediation's cause the evidence chose, and why.
	cause string
	// decided (with d) or left ends the pass.
	d       Decision
	decided bool
	left    bool
	// stage is the stage that decided or left the job.
	stage string
	// stateLoaded: the state stage ran (in and st hold it); permitChecked:
	// the target check ran (in.PermitErr holds it).
	stateLoaded, permitChecked bool
	// unreachable: d waits for a target that cannot be reached now, which
	// the job records once (unreachableEvent).
	unreachable bool
	// touch is selfheal's last action on the target, when it was read with
	// the lock (touchLocker); nil when the own outage stage reads it.
	touch *lookedTouch
	// seen, in a round, remembers each name's resolution and target check
	// across its jobs; nil on the other paths.
	seen *roundMemo
	// v is the path's view of the database for this job.
	v   view
	log *slog.Logger
}

func (p *pass) done() bool { return p.decided || p.left }

// decideAll takes every pass through the pipeline, stage by stage; b, when
// not nil, prepares each stage for all of them.
func (e *Engine) decideAll(ctx context.Context, b batch, passes []*pass) error {
	for _, s := range pipeline {
		var live []*pass
		for _, p := range passes {
			if !p.done() {
				live = append(live, p)
			}
		}
		if b != nil && len(live) > 0 {
			if err := b.prepare(ctx, s.name, live); err != nil {
				return err
			}
		}
		for _, p := range live {
			if p.left { // by prepare
				p.stage = s.name
				continue
			}
			d, ok, err := s.run(ctx, e, p)
			switch {
			case errors.Is(err, errLeave):
				p.left, p.stage = true, s.name
			case err != nil:
				return err
			case ok:
				p.d, p.decided, p.stage = d, true, s.name
			}
		}
	}
	return nil
}

// knownRemediation: a job of a remediation no configuration has (claimed
// only once every replica left it for unknownRemediationAfter) is refused.
func knownRemediation(_ context.Context, _ *Engine, p *pass) (Decision, bool, error) {
	if p.r = p.cfg.Remediation(p.job.Remediation); p.r != nil {
		return Decision{}, false, nil
	}
	return Decision{Verdict: Refuse, Severity: model.SeverityError, Reason: fmt.Sprintf(
		"no replica's configuration has remediation %q (this one's fingerprint %s): nothing runs for this alert",
		p.job.Remediation, p.cfg.Fingerprint())}, true, nil
}

// ownNode: jobs are queued only for this node's alerts; one queued by a
// replica configured otherwise is still never acted on here.
func ownNode(_ context.Context, _ *Engine, p *pass) (Decision, bool, error) {
	if why := p.cfg.Node.Foreign(p.job.Labels); why != "" {
		return Decision{Verdict: Skip, Reason: why}, true, nil
	}
	return Decision{}, false, nil
}

// resolveTarget renders the target the remediation names and resolves it
// to its own name; one that cannot be reached now waits, bounded as an
// unreachable target is.
func resolveTarget(ctx context.Context, e *Engine, p *pass) (Decision, bool, error) {
	target, err := renderTarget(p.r, p.job)
	if err != nil {
		return Decision{Verdict: Refuse, Reason: err.Error()}, true, nil
	}
	p.target = target
	canonical, err := e.canonicalOnce(ctx, p.r, target, p.seen)
	switch {
	case action.IsTransient(err):
		p.unreachable = true
		return limitsOf(p.cfg).unreachable(p.job.Waited, fmt.Errorf("cannot resolve %s now: %w", target, err)), true, nil
	case err != nil:
		return Decision{Verdict: Refuse, Reason: fmt.Sprintf("cannot resolve target %s: %v", target, err)}, true, nil
	case canonical != target:
		p.log.Debug("target resolved", "rendered", target, "canonical", canonical)
		p.target = canonical
	}
	return Decision{}, false, nil
}

// touchLocker is a view that can look at selfheal's own actions on the
// target in the lock's round trip (store.Claim.LockTargetAndLastTouch): a
// job handled alone, where each round trip is the decision's time.
type touchLocker interface {
	LockTargetAndLastTouch(ctx context.Context, target string, since time.Time, takingDown []string) (bool, model.Touch, bool, error)
}

// lockTarget serialises the decisions on one target, across replicas.
// Where the own outage stage will look at selfheal's own actions on the
// target and the view can, that look comes back with the lock (p.touch).
func lockTarget(ctx context.Context, _ *Engine, p *pass) (Decision, bool, error) {
	var locked bool
	var err error
	if tl, ok := p.v.(touchLocker); ok && looksAtOwnOutage(p.r, p.job) {
		var t lookedTouch
		locked, t.touch, t.found, err = tl.LockTargetAndLastTouch(ctx, p.target, ownOutageSince(p.job), action.TakingDown())
		p.touch = &t
	} else {
		locked, err = p.v.LockTarget(ctx, p.target)
	}
	if err != nil || locked {
		return Decision{}, false, err
	}
	return Decision{Verdict: Defer, RetryAfter: 500 * time.Millisecond, Reason: "another action on " + p.target + " is in progress"}, true, nil
}

// joinFastPath: Alertmanager's delivery of an outage the fast path already
// opened joins it — one outage, one ladder, one count.
func joinFastPath(ctx context.Context, e *Engine, p *pass) (Decision, bool, error) {
	if p.r.FastPath == nil || p.job.Step != 1 || policy.IsFastAlert(p.job.Labels) {
		return Decision{}, false, nil
	}
	fast, joined, err := e.joinsFastPath(ctx, p.v, p.r, p.job, p.target)
	if err != nil || !joined {
		return Decision{}, false, err
	}
	return Decision{Verdict: Skip, JoinedTo: fast.ID, Severity: model.SeverityInfo, Reason: fmt.Sprintf(
		"the fast path opened this outage of %s from Docker's events (occurrence %d): Alertmanager's alert joins it", p.target, fast.ID)}, true, nil
}

// ownOutageStage: an outage selfheal's own action caused is no failure of
// the target (Engine.ownOutage).
func ownOutageStage(ctx context.Context, e *Engine, p *pass) (Decision, bool, error) {
	if !looksAtOwnOutage(p.r, p.job) {
		return Decision{}, false, nil
	}
	touch := p.touch
	if touch == nil {
		var t lookedTouch
		var err error
		if t.touch, t.found, err = p.v.LastTouch(ctx, p.target, ownOutageSince(p.job), action.TakingDown()); err != nil {
			return Decision{}, false, err
		}
		touch = &t
	}
	return e.ownOutage(ctx, p.r, p.target, *touch)
}

// looksAtOwnOutage: whether the own outage stage looks at selfheal's own
// actions for job j — an outage's first step, where outages count.
func looksAtOwnOutage(r *policy.Remediation, j model.Job) bool {
	return countsOutage(r, j) && j.Step == 1
}

// loadState counts the alert's occurrence as a failure of its target,
// where it is one (countsOutage), and reads the state the decision meets:
// one round trip to the database.
func loadState(ctx context.Context, _ *Engine, p *pass) (Decision, bool, error) {
	q := StateQueryOf(p.cfg, p.r, p.target)
	q.CountOutage = countsOutage(p.r, p.job)
	st, err := p.v.LoadState(ctx, q)
	if err != nil {
		return Decision{}, false, err
	}
	p.st, p.stateLoaded = st, true
	return Decision{}, false, nil
}

// chooseCause: where the remediation chooses by the cause and it could
// matter, what the target's evidence says picks the branch.
func chooseCause(ctx context.Context, e *Engine, p *pass) (Decision, bool, error) {
	p.r, p.cause = e.byCause(ctx, p.r, p.target, p.st, p.log)
	return Decision{}, false, nil
}

// decide is Decide's: the limits and the state first, then, only for a
// verdict that would act, the target check (and, for category A, whether
// the target came back by itself), and Decide again with it.
func decide(ctx context.Context, e *Engine, p *pass) (Decision, bool, error) {
	p.in = inputFor(p.cfg, p.r, p.job, p.st)
	d := Decide(p.in, p.st.Now)
	if d.Verdict.NeedsTargetCheck() {
		if p.seen != nil && p.r.IsSequence() {
			return Decision{}, false, errLeave // a round runs no step of a sequence
		}
		if err := e.check(ctx, p); err != nil {
			return Decision{}, false, err
		}
		d = Decide(p.in, p.st.Now)
	}
	if action.IsTransient(p.in.PermitErr) {
		p.unreachable = true
	}
	if p.cause != "" {
		d.Reason = p.cause + ": " + d.Reason
	}
	return d, true, nil
}

// check runs the target check of the step the job would run, and, for a
// category A ladder, looks whether the target came back by itself. A round
// checks each target once, and only the target: a job it finds permitted
// would act, and is left to a decision of its own.
func (e *Engine) check(ctx context.Context, p *pass) error {
	p.permitChecked = true
	if p.seen != nil {
		p.in.PermitErr = e.permitOnce(ctx, p.r, p.in, p.job, p.target, p.seen.permits)
		return nil
	}
	step, _ := p.in.NextAction()
	exec := e.executors[step.Type]
	pctx, cancel := context.WithTimeout(ctx, permitTimeout)
	defer cancel()
	p.in.PermitErr = exec.Permit(pctx, stepRequest(p.r, step, p.job, p.target))
	rc, ok := exec.(action.RecoveryChecker)
	if !ok || p.in.PermitErr != nil || p.r.Category != policy.CategoryA || p.r.IsSequence() {
		return nil
	}
	var err error
	if p.in.Recovery, err = rc.Recovered(pctx, p.target, p.job.StartsAt, p.r.Verify.StableFor.D()); action.IsTransient(err) {
		p.in.PermitErr, err = err, nil
	}
	return err
}

// roundMemo is what a round remembers across its jobs: each name resolved
// and each target checked once.
type roundMemo struct {
	canonical map[string]string
	permits   map[permitKey]error
}
