package engine

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
)

// fakeRound is a round's jobs and what the database would say of their
// targets.
type fakeRound struct {
	jobs     []model.Job
	states   map[string]model.State // by target
	busy     map[string]bool        // targets another worker holds
	touched  map[string]bool
	outages  []model.Outage
	settled  []model.Settled
	finished bool
}

func (r *fakeRound) Jobs() []model.Job { return r.jobs }
func (r *fakeRound) LockTargets(_ context.Context, targets []string) (map[string]bool, error) {
	held := map[string]bool{}
	for _, t := range targets {
		held[t] = !r.busy[t]
	}
	return held, nil
}
func (r *fakeRound) TouchedTargets(context.Context, []string, time.Time, []string) (map[string]bool, error) {
	return r.touched, nil
}
func (r *fakeRound) LoadStates(_ context.Context, qs []model.RoundQuery) ([]model.State, error) {
	var out []model.State
	for _, q := range qs {
		if q.CountOutage {
			r.outages = append(r.outages, model.Outage{Job: q.Job, Target: q.Target})
		}
		st := r.states[q.Target]
		st.Now = t0
		out = append(out, st)
	}
	return out, nil
}
func (r *fakeRound) Finish(_ context.Context, s []model.Settled) error {
	r.settled, r.finished = s, true
	return nil
}
func (r *fakeRound) Release() {}

const roundConfig = `
node: {name: edge-01}
engine: {storm_brake: {max_actions: 1}}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart]
    max_failures: 2
    escalate_to: recovery
  - name: recovery
    match: ['alertname="Never"']
    category: C
    target: application
    sequence: [hard_restart, docker_prune]
`

// errAbsent is the permit error of a container that does not exist.
var errAbsent = errors.New(`not permitted: no container named "svc-h"`)

func newRoundEngine(t *testing.T) *Engine {
	t.Helper()
	cfg, err := policy.Parse([]byte(roundConfig))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]action.Executor{}
	for _, typ := range []string{"restart", "hard_restart", "docker_prune"} {
		m[typ] = &fakeExec{permitFor: map[string]error{"svc-h": errAbsent}}
	}
	e, err := New(&fakeStore{}, cfg, m, slog.New(slog.DiscardHandler), prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestDecideRound: a round records the decisions that run nothing — the
// storm brake's skips, another node's alert — exactly as one job's
// handling would, and leaves to a decision of its own every job that
// would act, escalate, or whose target is held or was just touched by
// selfheal; each counted outage is counted once per job.
func TestDecideRound(t *testing.T) {
	braked := model.State{ActionsInStormWindow: 1}
	jobOn := func(id int64, service string) model.Job {
		j := job("service-down", service, 1)
		j.ID, j.OccurrenceID = id, id
		return j
	}
	foreign := jobOn(5, "svc-e")
	foreign.Labels["node"] = "edge-02"
	escalated := jobOn(7, "svc-g")
	escalated.Escalated = true
	r := &fakeRound{
		jobs: []model.Job{jobOn(1, "svc-a"), jobOn(2, "svc-b"), jobOn(3, "svc-c"), jobOn(4, "svc-d"), foreign, jobOn(6, "svc-f"), escalated,
			jobOn(8, "svc-h"), jobOn(9, "svc-h")},
		states: map[string]model.State{
			"svc-a": braked,
			"svc-b": {ActionsInStormWindow: 1, FailuresInWindow: 2}, // escalates
			"svc-c": braked,
			"svc-d": braked,
			"svc-f": {}, // the brake does not hold for it: it would act
		},
		busy:    map[string]bool{"svc-d": true},
		touched: map[string]bool{"svc-c": true},
	}
	e := newRoundEngine(t)
	n, left, err := e.decideRound(context.Background(), e.config(), r)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 || len(r.settled) != 4 {
		t.Fatalf("settled %d (%+v), want 4", n, r.settled)
	}
	// svc-f (would act) and svc-h (twice, absent) asked once each.
	if p := e.executors["restart"].(*fakeExec).permits; p != 2 {
		t.Errorf("%d permit checks, want 2: one per target", p)
	}
	slices.Sort(left)
	if want := []int64{2, 3, 4, 6, 7}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
	var counted []string
	for _, o := range r.outages {
		counted = append(counted, o.Target)
	}
	if want := []string{"svc-a", "svc-b", "svc-f", "svc-h", "svc-h"}; !slices.Equal(counted, want) {
		t.Errorf("outages counted for %v, want %v", counted, want)
	}

	// Each settled job is recorded as handle records it.
	for i, s := range r.settled {
		c := &fakeClaim{job: s.Job, state: r.states[s.Target]}
		if s.Target != "" {
			c.state.FailuresInWindow-- // handle counts its outage again
		}
		if err := newRoundEngine(t).handle(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		o := c.outcome
		if o == nil {
			t.Fatalf("settled job %d: handle recorded no outcome", i)
		}
		if s.Result != o.Result || s.Target != o.Target || s.Reason != o.Reason || len(o.Events) != 1 || !reflect.DeepEqual(s.Event, o.Events[0]) {
			t.Errorf("round recorded %+v\nhandle recorded %+v", s, *o)
		}
	}
	var ids []int64
	for _, s := range r.settled {
		ids = append(ids, s.Job.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []int64{1, 5, 8, 9}) {
		t.Errorf("settled jobs %v: want 1 (svc-a, the brake), 5 (the other node's alert), 8 and 9 (absent: refused)", ids)
	}
}

// TestRoundsWhileTheBrakeHolds: a decision that meets the storm brake
// sets the engine storming (its workers decide in rounds); a round that
// settles nothing ends it.
func TestRoundsWhileTheBrakeHolds(t *testing.T) {
	e := newRoundEngine(t)
	c := &fakeClaim{job: job("service-down", "svc-a", 1), state: model.State{ActionsInStormWindow: 1}}
	if err := e.handle(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if !e.storming.Load() {
		t.Fatal("the brake held a decision back, but the engine is not storming")
	}
	claims := 0
	r := &fakeRound{jobs: []model.Job{job("service-down", "svc-f", 1)}, states: map[string]model.State{"svc-f": {}}}
	e.claimRound = func(context.Context, model.ClaimFilter, []string, int) (Round, error) { return r, nil }
	e.claim = func(_ context.Context, f model.ClaimFilter) (Claim, error) {
		claims++
		if f.ID != 1 {
			t.Errorf("claimed job %d, want the round's job 1 by its ID", f.ID)
		}
		return nil, nil
	}
	if worked, err := e.processRound(context.Background(), model.ClaimFilter{}); !worked || err != nil {
		t.Fatalf("processRound = %v, %v", worked, err)
	}
	if e.storming.Load() || r.finished || claims != 1 {
		t.Fatalf("after a round that settled nothing: storming %v, finished %v, %d claims; want false, false, 1", e.storming.Load(), r.finished, claims)
	}
}

// TestStormOf: rounds start when the brake holds a decision back, or when a
// decision that runs nothing waited a second or more for a worker — never
// for a job that acts.
func TestStormOf(t *testing.T) {
	limits := Limits{StormMaxActions: 1}
	for _, tc := range []struct {
		in   Input
		d    Verdict
		want bool
	}{
		{Input{Limits: limits, State: model.State{ActionsInStormWindow: 1}}, Skip, true},
		{Input{Limits: limits}, Skip, false},
		{Input{Limits: limits, Waited: 2 * time.Second}, Refuse, true},
		{Input{Limits: limits, Waited: 2 * time.Second}, Skip, true},
		{Input{Limits: limits, Waited: 2 * time.Second}, Run, false},
		{Input{Limits: limits, Waited: 100 * time.Millisecond}, Refuse, false},
	} {
		if got := stormOf(tc.in, Decision{Verdict: tc.d}) != ""; got != tc.want {
			t.Errorf("stormOf(waited %s, %d actions, %s) = %v, want %v", tc.in.Waited, tc.in.State.ActionsInStormWindow, tc.d, got, tc.want)
		}
	}
}
