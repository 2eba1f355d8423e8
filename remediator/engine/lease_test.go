package engine

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/selfheal/selfheal/remediator/action"
)

// scriptedClaim answers Renew and Finish from a script, one entry per
// call (the last entry repeats), and notes when each call came.
type scriptedClaim struct {
	fakeClaim
	renewals []renewal
	finishes []error
	at       []time.Duration
	start    time.Time
}

type renewal struct {
	gone bool
	err  error
}

func (c *scriptedClaim) Renew(context.Context, time.Duration) (bool, error) {
	c.at = append(c.at, time.Since(c.start))
	r := c.renewals[min(len(c.at), len(c.renewals))-1]
	return r.gone, r.err
}

func (c *scriptedClaim) Finish(_ context.Context, o model.Outcome) error {
	c.at = append(c.at, time.Since(c.start))
	err := c.finishes[min(len(c.at), len(c.finishes))-1]
	if err == nil {
		c.outcome = &o
	}
	return err
}

var errDatabaseAway = errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")

// TestRenewRidesOutADatabaseRestart: a failed renewal is tried again
// within half a second, a good one waits the full interval again, a
// resolved alert is passed on, and a lease taken over ends the renewing.
func TestRenewRidesOutADatabaseRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestEngine(t, map[string]*fakeExec{})
		c := &scriptedClaim{start: time.Now(), renewals: []renewal{
			{err: errDatabaseAway}, {err: errDatabaseAway}, {}, {gone: true}, {err: model.ErrTakenOver}}}
		resolved := 0
		e.renew(t.Context(), c, slog.New(slog.DiscardHandler), func() { resolved++ })
		want := []time.Duration{3 * time.Second, 3500 * time.Millisecond, 4 * time.Second, 7 * time.Second, 10 * time.Second}
		if !slices.Equal(c.at, want) {
			t.Errorf("renewed at %v, want %v", c.at, want)
		}
		if resolved != 1 {
			t.Errorf("resolved passed on %d times, want 1", resolved)
		}
	})
}

// TestRenewStopsWithItsContext: the renewing ends when the action does,
// and renews nothing once the engine abandoned its actions.
func TestRenewStopsWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestEngine(t, map[string]*fakeExec{})
		c := &scriptedClaim{start: time.Now(), renewals: []renewal{{}}}
		ctx, cancel := context.WithTimeout(t.Context(), 7*time.Second)
		defer cancel()
		e.renew(ctx, c, slog.New(slog.DiscardHandler), func() {})
		if len(c.at) != 2 || time.Since(c.start) != 7*time.Second {
			t.Errorf("renewed at %v, returned after %s; want twice, returned at 7s", c.at, time.Since(c.start))
		}
		e.abandoned.Store(true)
		c.at, c.start = nil, time.Now()
		e.renew(t.Context(), c, slog.New(slog.DiscardHandler), func() {})
		if len(c.at) != 0 {
			t.Errorf("renewed %d times after the engine abandoned its actions", len(c.at))
		}
	})
}

// TestRecordOutcomeWaitsForTheDatabase: the outcome is written once the
// database is back, after backing off 250 ms, 500 ms, 1 s…; an action taken
// over records no outcome and no error; a database away for longer than
// outcomeRetryFor gives up with an error that says so.
func TestRecordOutcomeWaitsForTheDatabase(t *testing.T) {
	o := model.Outcome{Result: model.OutcomeSucceeded, Target: "llm"}
	log := slog.New(slog.DiscardHandler)
	t.Run("back after three failures", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newTestEngine(t, map[string]*fakeExec{})
			c := &scriptedClaim{start: time.Now(), finishes: []error{errDatabaseAway, errDatabaseAway, errDatabaseAway, nil}}
			if err := e.recordOutcome(t.Context(), c, o, log); err != nil {
				t.Fatal(err)
			}
			want := []time.Duration{0, 250 * time.Millisecond, 750 * time.Millisecond, 1750 * time.Millisecond}
			if !slices.Equal(c.at, want) || c.outcome == nil {
				t.Errorf("finished at %v (outcome %v), want %v", c.at, c.outcome, want)
			}
		})
	})
	t.Run("taken over", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newTestEngine(t, map[string]*fakeExec{})
			c := &scriptedClaim{start: time.Now(), finishes: []error{errDatabaseAway, model.ErrTakenOver}}
			if err := e.recordOutcome(t.Context(), c, o, log); err != nil || c.outcome != nil || len(c.at) != 2 {
				t.Errorf("err %v, outcome %v after %d calls; want nil, none, 2", err, c.outcome, len(c.at))
			}
		})
	})
	t.Run("away for good", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newTestEngine(t, map[string]*fakeExec{})
			c := &scriptedClaim{start: time.Now(), finishes: []error{errDatabaseAway}}
			err := e.recordOutcome(t.Context(), c, o, log)
			if err == nil || !errors.Is(err, errDatabaseAway) || !strings.Contains(err.Error(), "recorded as interrupted") {
				t.Fatalf("err %v, want the database's error, saying the action will be recorded as interrupted", err)
			}
			if took := time.Since(c.start); took < outcomeRetryFor || took > outcomeRetryFor+5*time.Second {
				t.Errorf("gave up after %s, want %s", took, outcomeRetryFor)
			}
		})
	})
	t.Run("stopping", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := newTestEngine(t, map[string]*fakeExec{})
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			c := &scriptedClaim{start: time.Now(), finishes: []error{errDatabaseAway}}
			if err := e.recordOutcome(ctx, c, o, log); err == nil {
				t.Fatal("no error")
			}
			if took := time.Since(c.start); took < 30*time.Second || took > 35*time.Second {
				t.Errorf("stopping, gave up after %s, want 30s", took)
			}
		})
	})
}

// witnessExec keeps evidence, or fails to.
type witnessExec struct {
	fakeExec
	record any
	err    error
}

func (x *witnessExec) Evidence(context.Context, action.Request) (action.Evidence, error) {
	return action.Evidence{Record: x.record}, x.err
}

// TestWitness: the evidence an executor keeps is recorded with the action;
// when it cannot be read, the action runs all the same and the record says
// why; an executor that keeps none records nothing.
func TestWitness(t *testing.T) {
	e := newTestEngine(t, map[string]*fakeExec{})
	log := slog.New(slog.DiscardHandler)
	req := action.Request{Target: "llm"}
	if got := e.witness(t.Context(), &witnessExec{record: map[string]any{"exit_code": 137}}, req, log); got.(map[string]any)["exit_code"] != 137 {
		t.Errorf("kept %v, want the executor's record", got)
	}
	got := e.witness(t.Context(), &witnessExec{err: errDatabaseAway}, req, log)
	if m, ok := got.(map[string]any); !ok || m["not_kept"] != errDatabaseAway.Error() {
		t.Errorf("kept %v, want not_kept with the error", got)
	}
	if got := e.witness(t.Context(), &fakeExec{}, req, log); got != nil {
		t.Errorf("an executor without evidence kept %v", got)
	}
}

// TestAbandon: the engine stops renewing its actions' leases whether the
// database gave up some of them, none, or could not be reached.
func TestAbandon(t *testing.T) {
	for _, fs := range []*fakeStore{{leases: 2}, {}, {leasesErr: errDatabaseAway}} {
		e := newTestEngine(t, map[string]*fakeExec{})
		e.store = fs
		e.Abandon(t.Context())
		if !e.abandoned.Load() {
			t.Errorf("%+v: not abandoned", fs)
		}
	}
}

// TestNodeNamesLeaveOutTheRefused: a name the database refused this node
// (another node holds it) is not claimed for.
func TestNodeNamesLeaveOutTheRefused(t *testing.T) {
	e := newTestEngine(t, map[string]*fakeExec{})
	cfg := e.cfg.Load()
	cfg.Node.Aliases = []string{"gpu-01"}
	if got := e.nodeNames(cfg); !slices.Contains(got, "edge-01") || !slices.Contains(got, "gpu-01") {
		t.Errorf("names %v, want edge-01 and gpu-01 among them", got)
	}
	e.refusedNames = []string{"gpu-01"}
	if got := e.nodeNames(cfg); !slices.Contains(got, "edge-01") || slices.Contains(got, "gpu-01") {
		t.Errorf("with gpu-01 refused: names %v, want edge-01 and not gpu-01", got)
	}
}
