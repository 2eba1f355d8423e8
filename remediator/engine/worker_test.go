package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/model"
	"github.com/selfheal/selfheal/remediator/policy"
)

// runWorkers starts the engine's workers as Run does (and nothing else of
// Run) until the test ends.
func runWorkers(t *testing.T, e *Engine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	e.startWorkers(ctx, &wg)
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func withPoll(t *testing.T, e *Engine, workers int, poll time.Duration) {
	t.Helper()
	cfg := *e.config()
	cfg.Engine.Workers = workers
	cfg.Engine.PollInterval = policy.Duration(poll)
	e.cfg.Store(&cfg)
}

// countClaims makes every claim of e find no job (or fail with err) and
// counts them.
func countClaims(e *Engine, err error) *atomic.Int64 {
	var n atomic.Int64
	e.claim = func(context.Context, model.ClaimFilter) (Claim, error) {
		n.Add(1)
		return nil, err
	}
	return &n
}

// TestIdleWorkersPollOneAtATime: an idle replica asks for jobs once per
// poll interval, whatever its number of workers.
func TestIdleWorkersPollOneAtATime(t *testing.T) {
	const workers, poll = 4, 20 * time.Millisecond
	e := newTestEngine(t, map[string]*fakeExec{})
	withPoll(t, e, workers, poll)
	claims := countClaims(e, nil)
	start := time.Now()
	runWorkers(t, e)
	// Proof that the workers poll at all: a dozen polls.
	deadline := time.Now().Add(10 * time.Second)
	for claims.Load() < 12 && time.Now().Before(deadline) {
		time.Sleep(poll)
	}
	n, elapsed := claims.Load(), time.Since(start)
	if n < 12 {
		t.Fatalf("%d claims in %s: the idle workers stopped polling", n, elapsed)
	}
	// One look at the start, then one per interval; a timer never fires
	// early, so a loaded machine only makes fewer. A poll by every worker
	// would be about workers times as many.
	if limit := int64(2 + int(elapsed/poll)); n > limit {
		t.Fatalf("%d claims in %s with a poll interval of %s: more than one idle worker polls (at most %d)", n, elapsed, poll, limit)
	}
}

// blockedClaim is a job whose handling waits, at its target's lock, until
// the test lets it go on; then it finds the target busy and is deferred
// (the fake executors are not safe for concurrent use).
type blockedClaim struct {
	*fakeClaim
	holding *atomic.Int64
	gate    chan struct{}
}

func (c blockedClaim) LockTarget(context.Context, string) (bool, error) {
	c.holding.Add(1)
	<-c.gate
	return false, nil
}

// TestBurstDrawsInEveryWorker: one wake-up for a burst of jobs reaches
// every worker, each claiming woken by the one before; no worker waits
// for its poll interval (an hour here).
func TestBurstDrawsInEveryWorker(t *testing.T) {
	const workers = 4
	e := newTestEngine(t, map[string]*fakeExec{})
	withPoll(t, e, workers, time.Hour)
	var (
		mu      sync.Mutex
		queue   []Claim
		looks   atomic.Int64
		holding atomic.Int64
	)
	gate := make(chan struct{})
	defer close(gate)
	e.claim = func(context.Context, model.ClaimFilter) (Claim, error) {
		looks.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if len(queue) == 0 {
			return nil, nil
		}
		c := queue[0]
		queue = queue[1:]
		return c, nil
	}
	runWorkers(t, e)
	waitUntil(t, "the first look", func() bool { return looks.Load() >= 1 })
	time.Sleep(50 * time.Millisecond) // the workers are idle now: one polls (an hour), the others wait
	mu.Lock()
	for range workers {
		queue = append(queue, blockedClaim{fakeClaim: &fakeClaim{job: job("service-down", "llm", 1)}, holding: &holding, gate: gate})
	}
	mu.Unlock()
	e.Wake() // one delivery
	waitUntil(t, "every worker handling a job of the burst", func() bool { return holding.Load() == workers })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWorkersGoOnAfterErrors: a worker whose look failed (the database
// down, say) looks again at the next poll, and so does every other.
func TestWorkersGoOnAfterErrors(t *testing.T) {
	const workers, poll = 2, 10 * time.Millisecond
	e := newTestEngine(t, map[string]*fakeExec{})
	withPoll(t, e, workers, poll)
	looks := countClaims(e, errors.New("the database is down"))
	runWorkers(t, e)
	waitUntil(t, "a dozen looks, each failing", func() bool { return looks.Load() >= 12 })
}

// TestFastPathHandsItsJobToAnIdleWorker: the fast path's job, claimed in
// the transaction that stores its alert, goes straight to an idle worker,
// with no wake-up and no second claim. With no worker idle it is given
// back (its alert committed, the job queued) and a worker woken.
func TestFastPathHandsItsJobToAnIdleWorker(t *testing.T) {
	e := newTestEngine(t, map[string]*fakeExec{})
	var holding atomic.Int64
	gate := make(chan struct{})
	defer close(gate)
	var claimed []*fakeClaim
	e.ingestAndClaim = func(_ context.Context, alerts []model.Alert, _ time.Duration, _ model.ClaimFilter, checked func() error) (Claim, error) {
		if len(alerts) != 1 || alerts[0].Alertname != "ServiceDown" {
			t.Errorf("ingestAndClaim(%v)", alerts)
		}
		if err := checked(); err != nil {
			return nil, err
		}
		c := &fakeClaim{job: job("service-down", "llm", 1)}
		c.job.Fingerprint, c.job.StartsAt = alerts[0].Fingerprint, alerts[0].StartsAt
		claimed = append(claimed, c)
		return blockedClaim{fakeClaim: c, holding: &holding, gate: gate}, nil
	}
	looks := idleWorker(t, e)
	before := looks.Load()
	fast := fastAlert()
	if err := e.OpenFast(context.Background(), fast, allowed); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the idle worker handling the fast path's job", func() bool { return holding.Load() == 1 })
	if claimed[0].released {
		t.Fatal("the job handed over was given back")
	}
	if n := looks.Load() - before; n > 1 { // the one look handleClaimed's wake-up may make
		t.Errorf("%d more claims for a job handed over", n)
	}

	// A silence applies: nothing is stored, nothing handed over.
	silenced := errors.New("a silence may apply")
	if err := e.OpenFast(context.Background(), fast, func(context.Context) error { return silenced }); err != silenced {
		t.Fatalf("OpenFast with a check that refuses: %v, want the check's error", err)
	}
	if len(claimed) != 1 {
		t.Fatal("a claim came back from a transaction whose check refused")
	}

	// The only worker is busy: the second job is given back to the queue.
	if err := e.OpenFast(context.Background(), fast, allowed); err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 2 || !claimed[1].released {
		t.Fatal("with no worker idle, the fast path's job was not given back to the queue")
	}
	if holding.Load() != 1 {
		t.Fatal("a busy worker took a second job")
	}
}

// TestFastPathLeavesAnOlderJobToTheQueue: the claim in the fast path's
// transaction found an older due job rather than the alert's own. It is
// not handed over — its decision, perhaps its action, would come before
// the alert's job were visible to anyone — but committed back to the
// queue, and a worker woken, as for a delivery.
func TestFastPathLeavesAnOlderJobToTheQueue(t *testing.T) {
	e := newTestEngine(t, map[string]*fakeExec{})
	older := &fakeClaim{job: job("service-down", "gateway", 1)}
	older.job.Fingerprint = "01d"
	e.ingestAndClaim = func(context.Context, []model.Alert, time.Duration, model.ClaimFilter, func() error) (Claim, error) {
		return older, nil
	}
	looks := idleWorker(t, e)
	before := looks.Load()
	if err := e.OpenFast(context.Background(), fastAlert(), allowed); err != nil {
		t.Fatal(err)
	}
	if !older.released {
		t.Fatal("an older job was handed over in the fast path's transaction")
	}
	waitUntil(t, "a worker woken to look at the queue", func() bool { return looks.Load() > before })
}

// idleWorker starts e's one worker, polling every hour, and returns once
// it is idle, with the count of its claims (none finds a job).
func idleWorker(t *testing.T, e *Engine) *atomic.Int64 {
	t.Helper()
	withPoll(t, e, 1, time.Hour)
	looks := countClaims(e, nil)
	runWorkers(t, e)
	waitUntil(t, "the first look", func() bool { return looks.Load() >= 1 })
	time.Sleep(50 * time.Millisecond) // the worker is idle now
	return looks
}

// fastAlert is an alert the fast path raises.
func fastAlert() model.Alert {
	return model.Alert{Fingerprint: "f457", StartsAt: time.Now(), Alertname: "ServiceDown", Status: "firing", Remediation: "service-down"}
}

// allowed is a fast path's check that lets the alert through.
func allowed(context.Context) error { return nil }
