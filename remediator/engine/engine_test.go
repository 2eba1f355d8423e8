package engine

// The engine's control flow — claim, resolve, lock, count, decide, act,
// record — table-tested with a fake claim and fake executors, without
// PostgreSQL or Docker. The store's own tests and the end-to-end tests run
// the real ones.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/action"
	_ "github.com/selfheal/selfheal/remediator/actions" // registers the action types the configurations name
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
)

// fakeClaim records what the engine writes through a claim.
type fakeClaim struct {
	job      model.Job
	orphan   *model.Orphan
	busy     bool
	state    model.State
	touch    *model.Touch
	outages  []string
	intent   *model.Intent
	deferred string
	events   []model.Event
	outcome  *model.Outcome
	fast     *model.FastOccurrence // the fast path's occurrence an alert may join
	released bool
	refuse   *model.Admitted // admission refuses the intent with these counts
	renewals int
	retried  error
	lockErr  error // LockTarget fails so
	refuseAt bool  // Retry reports the job refused (its attempts used up)
}

func (c *fakeClaim) Job() model.Job { return c.job }
func (c *fakeClaim) OrphanedAction(context.Context, time.Duration) (model.Orphan, bool, error) {
	if c.orphan == nil {
		return model.Orphan{}, false, nil
	}
	return *c.orphan, true, nil
}
func (c *fakeClaim) LockTarget(context.Context, string) (bool, error) { return !c.busy, c.lockErr }
func (c *fakeClaim) LoadState(_ context.Context, q model.StateQuery) (model.State, error) {
	if q.CountOutage {
		c.outages = append(c.outages, q.Target)
		c.state.FailuresInWindow++
		c.state.OutageCounted = true
	}
	st := c.state
	if st.Now.IsZero() {
		st.Now = t0
	}
	return st, nil
}
func (c *fakeClaim) LastTouch(context.Context, string, time.Time, []string) (model.Touch, bool, error) {
	if c.touch == nil {
		return model.Touch{}, false, nil
	}
	return *c.touch, true, nil
}
func (c *fakeClaim) FastOccurrence(context.Context, string, string, time.Time, time.Duration) (model.FastOccurrence, bool, error) {
	if c.fast == nil {
		return model.FastOccurrence{}, false, nil
	}
	return *c.fast, true, nil
}
func (c *fakeClaim) RecordIntent(_ context.Context, in model.Intent) (model.Admitted, error) {
	if c.refuse != nil {
		return *c.refuse, nil
	}
	c.intent = &in
	return model.Admitted{ActionID: 7}, nil
}
func (c *fakeClaim) Renew(context.Context, time.Duration) (bool, error) {
	c.renewals++
	return false, nil
}
func (c *fakeClaim) Retry(_ context.Context, cause error, _ int) (bool, error) {
	c.retried = cause
	return c.refuseAt, nil
}
func (c *fakeClaim) Defer(_ context.Context, _ time.Duration, reason string, events ...model.Event) error {
	c.deferred, c.events = reason, events
	return nil
}
func (c *fakeClaim) Finish(_ context.Context, o model.Outcome) error {
	c.outcome = &o
	return nil
}
func (c *fakeClaim) Release() { c.released = true }

// fakeExec is every kind of executor the engine knows.
type fakeExec struct {
	permit    error
	execErr   error
	recovery  action.Recovery
	recErr    error
	canonical string
	canonErr  error
	touches   []string
	touched   []action.Touched
	ran       []action.Request
	permitFor map[string]error // by target; else permit
	permits   int              // Permit calls
	// reads, when set, counts the looks at the target: Permit and
	// Recovered read it through the decision's look (action.Looked), as
	// the containers client does.
	reads *atomic.Int32
	// revertPlan is what undoing the action will need (PlanRevert).
	revertPlan map[string]any
}

// read is a look at target, when x counts them.
func (x *fakeExec) read(ctx context.Context, target string) {
	if x.reads != nil {
		_, _ = action.Looked(ctx, "target/"+target, func() (bool, error) { x.reads.Add(1); return true, nil })
	}
}

func (x *fakeExec) Permit(ctx context.Context, r action.Request) error {
	x.read(ctx, r.Target)
	x.permits++
	if err, ok := x.permitFor[r.Target]; ok {
		return err
	}
	return x.permit
}
func (*fakeExec) PermitsByTarget() {}
func (x *fakeExec) Execute(_ context.Context, r action.Request) (action.Result, error) {
	x.ran = append(x.ran, r)
	return action.Result{Details: map[string]any{"ok": x.execErr == nil}, Touched: x.touched}, x.execErr
}
func (x *fakeExec) Recovered(ctx context.Context, target string, _ time.Time, _ time.Duration) (action.Recovery, error) {
	x.read(ctx, target)
	return x.recovery, x.recErr
}
func (x *fakeExec) Canonical(_ context.Context, t string) (string, error) {
	if x.canonical != "" || x.canonErr != nil {
		return x.canonical, x.canonErr
	}
	return t, nil
}
func (x *fakeExec) Touches(context.Context, action.Request) ([]string, error) { return x.touches, nil }
func (x *fakeExec) Available(context.Context) error                           { return nil }

// fakeStore is the rest of the Store, recording what the background
// loops ask of it.
type fakeStore struct {
	critical  int
	firing    bool
	ingested  []model.Alert
	reverts   []model.PendingRevert
	reverted  []error
	other     int
	retention int
	leases    int   // ReleaseLeases gives up so many
	leasesErr error // ReleaseLeases fails so
	// Calls of the loops Run starts, each from a goroutine of its own.
	criticalAsked, beats int
}

func (*fakeStore) ClaimJob(context.Context, model.ClaimFilter) (*store.Claim, error) { return nil, nil }
func (*fakeStore) ClaimRound(context.Context, model.ClaimFilter, []string, int) (*store.Round, error) {
	return nil, nil
}
func (f *fakeStore) ApplyRetention(context.Context) (map[string]int64, error) {
	f.retention++
	return map[string]int64{}, nil
}
func (*fakeStore) JobCounts(context.Context) (map[string]int64, error) {
	return map[string]int64{}, nil
}
func (f *fakeStore) DueReverts(context.Context, string, string) ([]model.PendingRevert, error) {
	due := f.reverts
	f.reverts = nil
	return due, nil
}
func (f *fakeStore) MarkReverted(_ context.Context, _ model.PendingRevert, err error) error {
	f.reverted = append(f.reverted, err)
	return nil
}
func (f *fakeStore) CriticalEvents(context.Context, time.Duration) (int, error) {
	f.criticalAsked++
	return f.critical, nil
}
func (f *fakeStore) RaiseOwnAlert(ctx context.Context, _ string, reopen time.Duration, next func(time.Time, bool) *model.Alert) (model.IngestResult, error) {
	a := next(t0, f.firing)
	if a == nil {
		return model.IngestResult{}, nil
	}
	return f.IngestAlerts(ctx, []model.Alert{*a}, reopen)
}
func (f *fakeStore) IngestAlerts(_ context.Context, a []model.Alert, _ time.Duration) (model.IngestResult, error) {
	f.ingested = append(f.ingested, a...)
	return model.IngestResult{JobsQueued: len(a)}, nil
}
func (*fakeStore) IngestAndClaim(context.Context, []model.Alert, time.Duration, model.ClaimFilter, func() error) (*store.Claim, model.IngestResult, error) {
	return nil, model.IngestResult{}, nil
}
func (f *fakeStore) NodeHeartbeat(context.Context, model.NodeBeat) ([]string, error) { return nil, nil }
func (f *fakeStore) NodeStopped(context.Context, string, string) error               { return nil }
func (f *fakeStore) NextDue(context.Context, []string) (time.Time, bool, error) {
	return time.Time{}, false, nil
}
func (f *fakeStore) ListenForJobs(context.Context, string, func()) error { return nil }
func (f *fakeStore) ReleaseLeases(context.Context, string) (int, error)  { return f.leases, f.leasesErr }
func (f *fakeStore) Heartbeat(context.Context, model.Replica, time.Duration) (int, int, error) {
	f.beats++
	return 1, f.other, nil
}

const engineConfig = `
node: {name: edge-01}
alertmanager: {url: 'http://alertmanager:9093'}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart, stop_start]
    escalate_to: recovery
    fast_path: {on: die}
  - name: recovery
    match: ['alertname="Never"']
    category: C
    target: application
    sequence: [hard_restart, docker_prune]
  - name: cpu
    match: ['alertname="HostCPUHigh"']
    category: B
    target: llm
    action: {type: http, url: 'http://x/clear'}
    dry_run: true
`

func newTestEngine(t *testing.T, execs map[string]*fakeExec) *Engine {
	t.Helper()
	cfg, err := policy.Parse([]byte(engineConfig))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node.Name = "edge-01"
	m := map[string]action.Executor{}
	for _, typ := range []string{"restart", "stop_start", "hard_restart", "docker_prune", "http"} {
		if execs[typ] == nil {
			execs[typ] = &fakeExec{}
		}
		m[typ] = execs[typ]
	}
	e, err := New(&fakeStore{}, cfg, m, slog.New(slog.DiscardHandler), prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func job(remediation, service string, step int) model.Job {
	return model.Job{ID: 1, OccurrenceID: 1, Remediation: remediation, Step: step, Position: step, StartsAt: t0.Add(-time.Minute),
		CreatedAt: t0.Add(-time.Second), AlertStatus: "firing", Alertname: "ServiceDown",
		Labels: map[string]string{"alertname": "ServiceDown", "service": service, "instance": "edge-01:9595"}}
}

// fastJob is the job the fast path queues for a container that died.
func fastJob(service string) model.Job {
	j := job("service-down", service, 1)
	j.Labels = map[string]string{"alertname": "ServiceDown", "service": service, "node": "edge-01",
		policy.LabelPath: "fast", policy.LabelTarget: service}
	return j
}

// TestHandle walks the engine's paths through one job each.
func TestHandle(t *testing.T) {
	transient := transientErr{errors.New("Docker away")}
	for _, tc := range []struct {
		name    string
		claim   *fakeClaim
		execs   map[string]*fakeExec
		check   func(t *testing.T, c *fakeClaim, x map[string]*fakeExec)
		wantErr bool
	}{
		{name: "a restart that works",
			claim: &fakeClaim{job: job("service-down", "llm", 1)},
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				o := c.outcome
				if o == nil || o.Result != "succeeded" || o.ActionID != 7 || o.FollowUp != nil || len(x["restart"].ran) != 1 {
					t.Fatalf("outcome %+v", o)
				}
				if len(c.outages) != 1 || c.intent == nil || c.intent.Action != "restart" || c.intent.Attempt != 1 {
					t.Fatalf("outages %v intent %+v", c.outages, c.intent)
				}
			}},
		{name: "dependents: a row for each restarted, an event for each",
			claim: &fakeClaim{job: job("service-down", "gateway", 1)},
			execs: map[string]*fakeExec{"restart": {touched: []action.Touched{
				{Target: "proxy", Action: "restart", Role: "dependent of gateway", Started: t0, Ended: t0.Add(time.Second)},
				{Target: "vpn-ui", Action: "restart", Role: "dependent of gateway", Skipped: "not opted in"},
				{Target: "sidecar", Action: "restart", Role: "dependent of gateway", Started: t0, Ended: t0.Add(time.Second), Err: errors.New("exited")},
			}}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				o := c.outcome
				if len(o.Touched) != 2 || o.Touched[0].Target != "proxy" || o.Touched[0].Status != model.ActionSucceeded ||
					o.Touched[1].Target != "sidecar" || o.Touched[1].Status != model.ActionFailed || o.Touched[1].Error != "exited" {
					t.Fatalf("touched %+v", o.Touched)
				}
				var kinds []string
				for _, e := range o.Events {
					kinds = append(kinds, fmt.Sprintf("%s %s %s", e.Severity, e.Type, e.Target))
				}
				want := "INFO touched proxy,WARNING left_alone vpn-ui,ERROR touched sidecar,INFO action_succeeded gateway"
				if strings.Join(kinds, ",") != want {
					t.Fatalf("events %v, want %s", kinds, want)
				}
			}},
		{name: "Alertmanager's alert for an outage the fast path is healing joins it",
			claim: &fakeClaim{job: job("service-down", "llm", 1), fast: &model.FastOccurrence{ID: 41, Firing: true}},
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				o := c.outcome
				if o.Result != "skipped" || o.JoinedTo != 41 || o.ResolveOccurrence || len(c.outages) != 0 || len(x["restart"].ran) != 0 ||
					!strings.Contains(o.Reason, "fast path opened this outage") {
					t.Fatalf("outcome %+v outages %v", o, c.outages)
				}
			}},
		{name: "one the fast path healed, the target still up since: joins it",
			claim: &fakeClaim{job: job("service-down", "llm", 1), fast: &model.FastOccurrence{ID: 41, StartsAt: t0.Add(-time.Minute)}},
			execs: map[string]*fakeExec{"restart": {recovery: action.Recovery{Recovered: true}}},
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				if o := c.outcome; o.Result != "skipped" || o.JoinedTo != 41 || len(x["restart"].ran) != 0 {
					t.Fatalf("outcome %+v", o)
				}
			}},
		{name: "one the fast path healed, but the target is down again: a new outage, acted on",
			claim: &fakeClaim{job: job("service-down", "llm", 1), fast: &model.FastOccurrence{ID: 41, StartsAt: t0.Add(-time.Minute)}},
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				if o := c.outcome; o.Result != "succeeded" || o.JoinedTo != 0 || len(x["restart"].ran) != 1 || len(c.outages) != 1 {
					t.Fatalf("outcome %+v outages %v", o, c.outages)
				}
			}},
		{name: "the fast path's own occurrence: healed, it is resolved",
			claim: &fakeClaim{job: fastJob("llm")},
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				o := c.outcome
				if o.Result != "succeeded" || !o.ResolveOccurrence || o.JoinedTo != 0 || len(c.outages) != 1 || len(x["restart"].ran) != 1 {
					t.Fatalf("outcome %+v outages %v", o, c.outages)
				}
			}},
		{name: "the fast path's restart fails: the occurrence stays open for the ladder",
			claim: &fakeClaim{job: fastJob("llm")},
			execs: map[string]*fakeExec{"restart": {execErr: errors.New("boom")}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if o := c.outcome; o.Result != "failed" || o.ResolveOccurrence || o.FollowUp == nil {
					t.Fatalf("outcome %+v", o)
				}
			}},
		{name: "a restart that fails: counted, the ladder goes on",
			claim: &fakeClaim{job: job("service-down", "llm", 1)},
			execs: map[string]*fakeExec{"restart": {execErr: errors.New("boom")}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				o := c.outcome
				if o.Result != "failed" || o.Failure == nil || o.FollowUp == nil || o.FollowUp.Sequence || !strings.Contains(o.ActionError, "boom") {
					t.Fatalf("outcome %+v", o)
				}
			}},
		{name: "the second failure stops and starts",
			claim: &fakeClaim{job: job("service-down", "llm", 2), state: model.State{FailuresInWindow: 1, OutageCounted: true}},
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				if c.intent.Action != "stop_start" || len(x["stop_start"].ran) != 1 {
					t.Fatalf("intent %+v", c.intent)
				}
			}},
		{name: "the third failure escalates",
			claim: &fakeClaim{job: job("service-down", "llm", 1), state: model.State{FailuresInWindow: 2}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				o := c.outcome
				if o.Result != "escalated" || o.Escalation == nil || o.Escalation.To != "recovery" || o.Events[0].Severity != "CRITICAL" {
					t.Fatalf("outcome %+v", o)
				}
			}},
		{name: "not opted in: refused, nothing runs",
			claim: &fakeClaim{job: job("service-down", "db", 1)},
			execs: map[string]*fakeExec{"restart": {permit: errors.New("not opted in")}},
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				if c.outcome.Result != "refused" || len(x["restart"].ran) != 0 || c.intent != nil {
					t.Fatalf("outcome %+v", c.outcome)
				}
			}},
		{name: "Docker away: deferred with one event",
			claim: &fakeClaim{job: job("service-down", "llm", 1)},
			execs: map[string]*fakeExec{"restart": {permit: transient}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.outcome != nil || !strings.HasPrefix(c.deferred, reasonUnreachable) || len(c.events) != 1 || c.events[0].Type != "target_unreachable" {
					t.Fatalf("deferred %q events %+v outcome %+v", c.deferred, c.events, c.outcome)
				}
			}},
		{name: "Docker still away: deferred without a second event",
			claim: func() *fakeClaim {
				j := job("service-down", "llm", 1)
				j.Reason = reasonUnreachable + ", trying again"
				return &fakeClaim{job: j}
			}(),
			execs: map[string]*fakeExec{"restart": {permit: transient}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.deferred == "" || len(c.events) != 0 {
					t.Fatalf("deferred %q events %+v", c.deferred, c.events)
				}
			}},
		{name: "Docker away while checking recovery: deferred",
			claim: &fakeClaim{job: job("service-down", "llm", 1)},
			execs: map[string]*fakeExec{"restart": {recErr: transient}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.outcome != nil || c.deferred == "" {
					t.Fatalf("outcome %+v deferred %q", c.outcome, c.deferred)
				}
			}},
		{name: "came back by itself: skipped",
			claim: &fakeClaim{job: job("service-down", "llm", 1)},
			execs: map[string]*fakeExec{"restart": {recovery: action.Recovery{Recovered: true, Reason: "up again"}}},
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				if c.outcome.Result != "skipped" || c.outcome.Reason != "up again" || len(x["restart"].ran) != 0 {
					t.Fatalf("outcome %+v", c.outcome)
				}
			}},
		{name: "target busy: deferred",
			claim: &fakeClaim{job: job("service-down", "llm", 1), busy: true},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.deferred != "another action on llm is in progress" || len(c.outages) != 0 {
					t.Fatalf("deferred %q outages %v", c.deferred, c.outages)
				}
			}},
		{name: "every spelling is one target",
			claim: &fakeClaim{job: job("service-down", "/llm", 1)},
			execs: map[string]*fakeExec{"restart": {canonical: "llm"}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.outcome.Target != "llm" || c.outages[0] != "llm" {
					t.Fatalf("target %q outages %v", c.outcome.Target, c.outages)
				}
			}},
		{name: "name not resolvable now: deferred, once with an event",
			claim: &fakeClaim{job: job("service-down", "llm", 1)},
			execs: map[string]*fakeExec{"restart": {canonErr: transient}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if !strings.HasPrefix(c.deferred, reasonUnreachable) || !strings.Contains(c.deferred, "cannot resolve llm now: Docker away") {
					t.Fatalf("deferred %q", c.deferred)
				}
				if len(c.events) != 1 || c.events[0].Type != "target_unreachable" {
					t.Fatalf("events %+v, want one target_unreachable", c.events)
				}
			}},
		{name: "name not resolvable for unreachable_for: refused, critical",
			claim: func() *fakeClaim {
				j := job("service-down", "llm", 1)
				j.Waited, j.Reason = 6*time.Minute, reasonUnreachable+", trying again in 30s: cannot resolve llm now"
				return &fakeClaim{job: j}
			}(),
			execs: map[string]*fakeExec{"restart": {canonErr: transient}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.outcome == nil || c.outcome.Result != model.OutcomeRefused || !strings.Contains(c.outcome.Reason, "stayed unreachable for 6m0s") ||
					c.outcome.Events[0].Severity != model.SeverityCritical {
					t.Fatalf("outcome %+v", c.outcome)
				}
			}},
		{name: "name that can never resolve (an ambiguous ID prefix): refused at once",
			claim: &fakeClaim{job: job("service-down", "ab12", 1)},
			execs: map[string]*fakeExec{"restart": {canonErr: errors.New("multiple IDs found with provided prefix: ab12")}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.outcome == nil || c.outcome.Result != model.OutcomeRefused || !strings.Contains(c.outcome.Reason, "cannot resolve target ab12: multiple IDs") {
					t.Fatalf("outcome %+v", c.outcome)
				}
			}},
		{name: "another node's alert: skipped",
			claim: func() *fakeClaim {
				j := job("service-down", "llm", 1)
				j.Labels["instance"] = "edge-02:9595"
				return &fakeClaim{job: j}
			}(),
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.outcome.Result != "skipped" || !strings.Contains(c.outcome.Reason, "for node edge-02") {
					t.Fatalf("outcome %+v", c.outcome)
				}
			}},
		{name: "no replica knows the remediation: refused loudly",
			claim: &fakeClaim{job: job("gone", "llm", 1)},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.outcome.Result != "refused" || c.outcome.Events[0].Severity != "ERROR" {
					t.Fatalf("outcome %+v", c.outcome)
				}
			}},
		{name: "empty target: refused",
			claim: &fakeClaim{job: job("service-down", "", 1)},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.outcome.Result != "refused" {
					t.Fatalf("outcome %+v", c.outcome)
				}
			}},
		{name: "an interrupted action: counted, the ladder goes on",
			claim: &fakeClaim{job: job("service-down", "llm", 1), orphan: &model.Orphan{ActionID: 3, Target: "llm", Action: "restart"}},
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				o := c.outcome
				if o.State != "interrupted" || o.ActionStatus != "interrupted" || o.Failure == nil || o.FollowUp == nil || len(x["restart"].ran) != 0 {
					t.Fatalf("outcome %+v", o)
				}
			}},
		{name: "selfheal's own outage, action still running: deferred",
			claim: &fakeClaim{job: job("service-down", "llm", 1), touch: &model.Touch{ActionID: 9, Action: "hard_restart", Running: true}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if !strings.HasPrefix(c.deferred, "selfheal's hard_restart") || len(c.outages) != 0 {
					t.Fatalf("deferred %q outages %v", c.deferred, c.outages)
				}
			}},
		{name: "selfheal's own outage, over: skipped, not counted",
			claim: &fakeClaim{job: job("service-down", "llm", 1), touch: &model.Touch{ActionID: 9, Action: "hard_restart",
				Started: t0.Add(-time.Minute), Completed: t0.Add(-50 * time.Second)}},
			execs: map[string]*fakeExec{"restart": {recovery: action.Recovery{Recovered: true, Since: t0.Add(-55 * time.Second)}}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.outcome.Result != "skipped" || !strings.Contains(c.outcome.Reason, "not an outage") || len(c.outages) != 0 {
					t.Fatalf("outcome %+v outages %v", c.outcome, c.outages)
				}
			}},
		{name: "a sequence's step queues the next, whatever its outcome",
			claim: &fakeClaim{job: job("recovery", "x", 1)},
			execs: map[string]*fakeExec{"hard_restart": {execErr: errors.New("one service failed"), touches: []string{"a", "b"}}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				o := c.outcome
				if o.Result != "failed" || o.FollowUp == nil || !o.FollowUp.Sequence || o.FollowUp.Position != 2 {
					t.Fatalf("outcome %+v", o)
				}
				if touches, _ := c.intent.Details["touches"].([]string); len(touches) != 2 {
					t.Fatalf("intent details %+v", c.intent.Details)
				}
			}},
		{name: "a refused step of a sequence queues the next",
			claim: &fakeClaim{job: job("recovery", "x", 1)},
			execs: map[string]*fakeExec{"hard_restart": {permit: errors.New("not opted in")}},
			check: func(t *testing.T, c *fakeClaim, _ map[string]*fakeExec) {
				if c.outcome.Result != "refused" || c.outcome.FollowUp == nil || c.outcome.FollowUp.Position != 2 {
					t.Fatalf("outcome %+v", c.outcome)
				}
			}},
		{name: "a sequence's last step ends it",
			claim: &fakeClaim{job: job("recovery", "x", 2)},
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				if c.outcome.Result != "succeeded" || c.outcome.FollowUp != nil || len(x["docker_prune"].ran) != 1 {
					t.Fatalf("outcome %+v", c.outcome)
				}
			}},
		{name: "dry-run records what would run",
			claim: func() *fakeClaim {
				j := job("cpu", "", 1)
				j.Labels = map[string]string{"alertname": "HostCPUHigh"}
				return &fakeClaim{job: j}
			}(),
			check: func(t *testing.T, c *fakeClaim, x map[string]*fakeExec) {
				if c.outcome.Result != "dry_run" || c.outcome.DryRun == nil || len(x["http"].ran) != 0 {
					t.Fatalf("outcome %+v", c.outcome)
				}
			}},
	} {
		// Each case twice: with a claim that reads selfheal's own actions
		// on the target on its own, and with one that reads them with the
		// lock, as the store's does (touchLocker).
		for _, withLock := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/looked with the lock %v", tc.name, withLock), func(t *testing.T) {
				execs := map[string]*fakeExec{}
				for k, x := range tc.execs {
					copied := *x
					execs[k] = &copied
				}
				fake := *tc.claim
				var c Claim = &fake
				if withLock {
					c = &lockLookingClaim{fakeClaim: &fake, t: t}
				}
				e := newTestEngine(t, execs)
				e.claim = func(context.Context, model.ClaimFilter) (Claim, error) { return c, nil }
				worked, err := e.ProcessOne(context.Background())
				if (err != nil) != tc.wantErr || !worked || !fake.released {
					t.Fatalf("ProcessOne = %v, %v; released %v", worked, err, fake.released)
				}
				tc.check(t, &fake, execs)
			})
		}
	}
}

// lockLookingClaim reads selfheal's last action on the target in the
// lock's round trip, as the store's claim does (touchLocker): a decision
// then never reads it again.
type lockLookingClaim struct {
	*fakeClaim
	t *testing.T
}

func (c *lockLookingClaim) LockTargetAndLastTouch(ctx context.Context, target string, since time.Time, takingDown []string) (bool, model.Touch, bool, error) {
	locked, err := c.fakeClaim.LockTarget(ctx, target)
	touch, found, _ := c.fakeClaim.LastTouch(ctx, target, since, takingDown)
	return locked, touch, found, err
}

func (c *lockLookingClaim) LastTouch(ctx context.Context, target string, since time.Time, takingDown []string) (model.Touch, bool, error) {
	c.t.Error("selfheal's own actions read again after the lock's look")
	return c.fakeClaim.LastTouch(ctx, target, since, takingDown)
}

// A decision looks at its target once: whether selfheal's own action
// explains the outage, whether the target may be touched and whether it
// came back by itself are read from one look (action.WithLook).
func TestADecisionLooksAtItsTargetOnce(t *testing.T) {
	var reads atomic.Int32
	x := map[string]*fakeExec{"restart": {reads: &reads}}
	e := newTestEngine(t, x)
	c := &fakeClaim{job: job("service-down", "llm", 1), touch: &model.Touch{ActionID: 9, Action: "restart",
		Started: t0.Add(-time.Minute), Completed: t0.Add(-50 * time.Second)}}
	if err := e.handle(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if c.outcome == nil || c.outcome.Result != "succeeded" || len(x["restart"].ran) != 1 {
		t.Fatalf("outcome %+v", c.outcome)
	}
	if n := reads.Load(); n != 1 {
		t.Errorf("the decision looked at its target %d times, want once", n)
	}
}

func TestPausedByEnvironment(t *testing.T) {
	e := newTestEngine(t, map[string]*fakeExec{})
	cfg := *e.Config()
	cfg.PausedByEnvironment = "SELF_HEALING_ENABLED=false"
	if err := e.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	c := &fakeClaim{job: job("service-down", "llm", 1)}
	e.claim = func(context.Context, model.ClaimFilter) (Claim, error) { return c, nil }
	if _, err := e.ProcessOne(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c.outcome.Result != "skipped" || !strings.Contains(c.outcome.Reason, "SELF_HEALING_ENABLED=false") {
		t.Fatalf("outcome %+v", c.outcome)
	}
}

func TestReloadRefusesUnknownActions(t *testing.T) {
	e := newTestEngine(t, map[string]*fakeExec{})
	cfg, err := policy.Parse([]byte("remediations:\n  - {name: r, match: ['a=\"b\"'], category: D, target: h, action: reboot}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Reload(cfg); err == nil || !strings.Contains(err.Error(), `no executor for action "reboot"`) {
		t.Fatalf("Reload = %v", err)
	}
	if e.Config().Remediation("service-down") == nil {
		t.Fatal("a refused reload replaced the configuration")
	}
}

func TestNoJob(t *testing.T) {
	e := newTestEngine(t, map[string]*fakeExec{})
	if worked, err := e.ProcessOne(context.Background()); worked || err != nil {
		t.Fatalf("ProcessOne with no job = %v, %v", worked, err)
	}
}

func (x *fakeExec) Revert(context.Context, string, map[string]any) error { return x.execErr }
func (x *fakeExec) PlanRevert(context.Context, action.Request) (map[string]any, error) {
	return x.revertPlan, nil
}

// TestCriticalEventsRaiseAndResolve: the engine raises its own alert at
// the threshold, with the node's label, and resolves it below.
func TestCriticalEventsRaiseAndResolve(t *testing.T) {
	e := newTestEngine(t, map[string]*fakeExec{})
	st := e.store.(*fakeStore)
	st.critical = 3
	e.watchCriticalEvents(context.Background())
	if len(st.ingested) != 1 || st.ingested[0].Status != "firing" || st.ingested[0].Labels["node"] != "edge-01" {
		t.Fatalf("ingested %+v", st.ingested)
	}
	st.critical, st.firing = 1, true
	e.watchCriticalEvents(context.Background())
	if len(st.ingested) != 2 || st.ingested[1].Status != "resolved" {
		t.Fatalf("ingested %+v", st.ingested)
	}
	st.firing = false
	e.watchCriticalEvents(context.Background())
	if len(st.ingested) != 2 {
		t.Fatal("below the threshold and not firing: nothing to say")
	}
}

// TestRevertsAndBackgroundLoops: a due revert goes to its executor and is
// marked; Run starts the loops and stops with its context.
func TestRevertsAndBackgroundLoops(t *testing.T) {
	execs := map[string]*fakeExec{}
	e := newTestEngine(t, execs)
	st := e.store.(*fakeStore)
	st.reverts = []model.PendingRevert{{ActionType: "restart", Target: "llm"}, {ActionType: "reboot", Target: "host"}}
	e.revert(context.Background(), false)
	if len(st.reverted) != 2 || st.reverted[0] != nil || st.reverted[1] == nil {
		t.Fatalf("reverted %v: want the restart undone, the unknown type reported", st.reverted)
	}
	st.other = 1
	e.heartbeat(context.Background())
	if e.mismatch != 1 {
		t.Fatal("a replica with another configuration went unnoticed")
	}

	cfg := *e.Config()
	cfg.Engine.RetentionInterval = policy.Duration(10 * time.Millisecond)
	cfg.Engine.RevertInterval = policy.Duration(10 * time.Millisecond)
	cfg.Engine.CriticalEvents.Interval = policy.Duration(10 * time.Millisecond)
	cfg.Engine.PollInterval = policy.Duration(10 * time.Millisecond)
	if err := e.Reload(&cfg); err != nil {
		t.Fatal(err)
	}
	// Run's loops: a change whose alert resolved is undone while it runs,
	// retention and the critical-events count run at their intervals, the
	// heartbeat at its own (here once, at the start).
	st.reverts = []model.PendingRevert{{ActionType: "restart", Target: "api"}}
	beatsBefore := st.beats
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	e.Run(ctx)
	if st.retention == 0 || st.criticalAsked == 0 || st.beats == beatsBefore {
		t.Fatalf("retention ran %d times, critical events were counted %d times, %d heartbeats: want each at least once",
			st.retention, st.criticalAsked, st.beats-beatsBefore)
	}
	if len(st.reverted) != 3 || st.reverted[2] != nil {
		t.Fatalf("reverted %v: want the resolved change undone by Run's loop", st.reverted)
	}
}

type unavailableExec struct{ fakeExec }

func (unavailableExec) Available(context.Context) error {
	return errors.New("the Docker Engine does not answer")
}

// TestUnavailableRemediationsAreLeft: a remediation one of whose actions
// cannot run now is skipped when claiming.
func TestUnavailableRemediationsAreLeft(t *testing.T) {
	e := newTestEngine(t, map[string]*fakeExec{})
	e.executors["stop_start"] = &unavailableExec{}
	var got model.ClaimFilter
	e.claim = func(_ context.Context, f model.ClaimFilter) (Claim, error) { got = f; return nil, nil }
	if _, err := e.ProcessOne(context.Background()); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Skip, ",") != "service-down" || len(got.Known) != 3 {
		t.Fatalf("claim filter %+v", got)
	}
}

type fakeStates struct {
	st    model.State
	touch *model.Touch
	fast  *model.FastOccurrence
}

func (f fakeStates) ReadState(context.Context, model.StateQuery) (model.State, error) {
	st := f.st
	st.Now = t0
	return st, nil
}

func (f fakeStates) ReadLastTouch(context.Context, string, time.Time, []string) (model.Touch, bool, error) {
	if f.touch == nil {
		return model.Touch{}, false, nil
	}
	return *f.touch, true, nil
}

func (f fakeStates) ReadFastOccurrence(context.Context, string, string, time.Time, time.Duration) (model.FastOccurrence, bool, error) {
	if f.fast == nil {
		return model.FastOccurrence{}, false, nil
	}
	return *f.fast, true, nil
}

// TestPlan: the plan for an alert that would start now.
func TestPlan(t *testing.T) {
	execs := map[string]*fakeExec{}
	e := newTestEngine(t, execs)
	labels := map[string]string{"alertname": "ServiceDown", "service": "llm", "instance": "edge-01:9595"}
	p, err := e.Plan(context.Background(), fakeStates{}, labels)
	if err != nil || p.Verdict != Run || p.Action != "restart" || p.Failures != 1 || p.IfItFails != "2 failures within 10m: stop_start (attempt 2)" || !p.Acts() {
		t.Fatalf("plan %+v, %v", p, err)
	}
	p, _ = e.Plan(context.Background(), fakeStates{st: model.State{FailuresInWindow: 1}}, labels)
	if p.Verdict != Run || p.IfItFails != "3 failures within 10m: escalate to recovery" {
		t.Fatalf("plan %+v", p)
	}
	execs["restart"].permit = errors.New("not opted in")
	if p, _ = e.Plan(context.Background(), fakeStates{}, labels); p.Verdict != Refuse || p.Permit != "not opted in" || p.Acts() {
		t.Fatalf("plan %+v", p)
	}
	if p, _ = e.Plan(context.Background(), fakeStates{}, map[string]string{"alertname": "Nothing"}); p.Verdict != Skip || p.Remediation != "" {
		t.Fatalf("plan %+v", p)
	}
	other := map[string]string{"alertname": "ServiceDown", "service": "llm", "node": "edge-02"}
	if p, _ = e.Plan(context.Background(), fakeStates{}, other); p.Verdict != Skip || !strings.Contains(p.Reason, "edge-02") {
		t.Fatalf("plan %+v", p)
	}
	seq := map[string]string{"alertname": "Never"}
	p, _ = e.Plan(context.Background(), fakeStates{st: model.State{LastActionAt: t0.Add(-time.Hour)}}, seq)
	if p.Verdict != Run || p.Action != "hard_restart" || p.IfItFails != "the failure is counted; the sequence goes on: docker_prune" {
		t.Fatalf("plan %+v", p)
	}
}

// TestHandleOrRetry: a job whose handling fails (an error, not a decision)
// is given back to be tried again, the error bounded and naming the job;
// once its attempts are used up it is refused, and that is no error of the
// worker's.
func TestHandleOrRetry(t *testing.T) {
	e := newTestEngine(t, map[string]*fakeExec{})
	failure := errors.New("the database refused: " + strings.Repeat("x", 4000))
	c := &fakeClaim{job: job("service-down", "llm", 1), lockErr: failure}
	err := e.handleOrRetry(context.Background(), c)
	if err == nil || !strings.HasPrefix(err.Error(), "job 1: the database refused") || len(err.Error()) > 1100 || c.retried != failure {
		t.Fatalf("handleOrRetry = %v (%d bytes), retried %v", err, len(err.Error()), c.retried != nil)
	}
	if c.outcome != nil || c.deferred != "" {
		t.Fatalf("a failed handling recorded %+v / deferred %q", c.outcome, c.deferred)
	}
	c = &fakeClaim{job: job("service-down", "llm", 1), lockErr: failure, refuseAt: true}
	if err := e.handleOrRetry(context.Background(), c); err != nil {
		t.Fatalf("a job refused after its attempts: %v", err)
	}
}
