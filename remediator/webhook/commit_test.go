package webhook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/selfheal/selfheal/remediator/model"
)

// gatedStore records each commit's deliveries (by their alerts'
// fingerprints) and holds each commit until the test lets it go.
type gatedStore struct {
	started chan []string // one per commit, as it starts
	release chan error    // one per commit: its error, nil to store it
	mu      sync.Mutex
	commits [][]string
}

func newGatedStore() *gatedStore {
	return &gatedStore{started: make(chan []string, 100), release: make(chan error, 100)}
}

func (g *gatedStore) IngestDeliveries(_ context.Context, ds [][]model.Alert, _ time.Duration) ([]model.IngestResult, error) {
	var names []string
	for _, d := range ds {
		name := ""
		for _, a := range d {
			name += a.Fingerprint
		}
		names = append(names, name)
	}
	g.started <- names
	if err := <-g.release; err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.commits = append(g.commits, names)
	g.mu.Unlock()
	res := make([]model.IngestResult, len(ds))
	for i, d := range ds {
		res[i].JobsQueued = len(d) // each delivery's own count
	}
	return res, nil
}

func (g *gatedStore) RecordEvent(context.Context, model.Event) error { return nil }

// delivering runs ingest in the background; its result arrives on the
// returned channel.
type outcome struct {
	res model.IngestResult
	err error
}

func delivering(ctx context.Context, c *committer, alerts ...model.Alert) <-chan outcome {
	out := make(chan outcome, 1)
	go func() {
		res, err := c.ingest(ctx, alerts)
		out <- outcome{res, err}
	}()
	return out
}

func alertFP(fp string) model.Alert { return model.Alert{Fingerprint: fp, Status: "firing"} }

// waitPending waits until n deliveries wait for the next commit.
func waitPending(t *testing.T, c *committer, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.pending)
		c.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries pending, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// queued delivers alerts and waits until the delivery is the n-th waiting
// for the next commit.
func queued(t *testing.T, ctx context.Context, c *committer, n int, alerts ...model.Alert) <-chan outcome {
	t.Helper()
	out := delivering(ctx, c, alerts...)
	waitPending(t, c, n)
	return out
}

// busy returns a committer whose store holds its first commit, of one
// delivery (alert "h"), until the test releases it, and that delivery's
// answer.
func busy(t *testing.T) (*gatedStore, *committer, <-chan outcome) {
	t.Helper()
	g := newGatedStore()
	c := newCommitter(g, time.Minute)
	hold := delivering(context.Background(), c, alertFP("h"))
	started(t, g)
	return g, c, hold
}

func started(t *testing.T, g *gatedStore) []string {
	t.Helper()
	select {
	case names := <-g.started:
		return names
	case <-time.After(5 * time.Second):
		t.Fatal("no commit started")
		return nil
	}
}

func result(t *testing.T, ch <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
		return outcome{}
	}
}

// Deliveries that arrive while a commit is under way share the next one,
// and each is answered with what it changed, only once that commit is done.
func TestDeliveriesQueuedDuringACommitShareTheNext(t *testing.T) {
	t.Parallel()
	g := newGatedStore()
	c := newCommitter(g, time.Minute)
	ctx := context.Background()
	first := delivering(ctx, c, alertFP("a"))
	if got := started(t, g); fmt.Sprint(got) != "[a]" {
		t.Fatalf("first commit %v, want [a]", got)
	}
	second := queued(t, ctx, c, 1, alertFP("b"), alertFP("c"))
	third := queued(t, ctx, c, 2, alertFP("d"))
	select {
	case <-second:
		t.Fatal("answered before its commit")
	default:
	}
	g.release <- nil
	if o := result(t, first); o.err != nil || o.res.JobsQueued != 1 {
		t.Fatalf("first: %+v", o)
	}
	if got := started(t, g); fmt.Sprint(got) != "[bc d]" {
		t.Fatalf("second commit %v, want [bc d]: both deliveries that queued", got)
	}
	g.release <- nil
	if o := result(t, second); o.err != nil || o.res.JobsQueued != 2 {
		t.Fatalf("second: %+v", o)
	}
	if o := result(t, third); o.err != nil || o.res.JobsQueued != 1 {
		t.Fatalf("third: %+v", o)
	}
}

// A delivery that shares an alert with one before it is stored in a later
// commit, after it; deliveries after it that share nothing go ahead.
func TestAnAlertsDeliveriesAreCommittedInOrder(t *testing.T) {
	t.Parallel()
	g, c, hold := busy(t)
	ctx := context.Background()
	firing := queued(t, ctx, c, 1, alertFP("x"))
	resolved := queued(t, ctx, c, 2, alertFP("x"), alertFP("y"))
	again := queued(t, ctx, c, 3, alertFP("y"))
	other := queued(t, ctx, c, 4, alertFP("z"))
	g.release <- nil
	if got := started(t, g); fmt.Sprint(got) != "[x z]" {
		t.Fatalf("second commit %v, want [x z]", got)
	}
	g.release <- nil
	if got := started(t, g); fmt.Sprint(got) != "[xy]" {
		t.Fatalf("third commit %v, want [xy]: y's later delivery waits behind it", got)
	}
	g.release <- nil
	if got := started(t, g); fmt.Sprint(got) != "[y]" {
		t.Fatalf("fourth commit %v, want [y]", got)
	}
	g.release <- nil
	for _, ch := range []<-chan outcome{hold, firing, resolved, again, other} {
		if o := result(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
}

// Data the database can never store fails only its own delivery: the
// others of its commit are stored one by one. A database that is down
// fails every delivery of the commit.
func TestUnstorableDataFailsOnlyItsDelivery(t *testing.T) {
	t.Parallel()
	g, c, hold := busy(t)
	ctx := context.Background()
	good := queued(t, ctx, c, 1, alertFP("good"))
	bad := queued(t, ctx, c, 2, alertFP("bad"))
	g.release <- nil
	result(t, hold)
	started(t, g)
	g.release <- &pgconn.PgError{Code: "22P05", Message: "unsupported Unicode escape sequence"}
	if got := started(t, g); fmt.Sprint(got) != "[good]" {
		t.Fatalf("retry %v, want [good] alone", got)
	}
	g.release <- nil
	if got := started(t, g); fmt.Sprint(got) != "[bad]" {
		t.Fatalf("retry %v, want [bad] alone", got)
	}
	g.release <- &pgconn.PgError{Code: "22P05", Message: "unsupported Unicode escape sequence"}
	if o := result(t, good); o.err != nil {
		t.Fatalf("good: %v", o.err)
	}
	if o := result(t, bad); o.err == nil {
		t.Fatal("bad: stored")
	}

	down := errors.New("dial tcp: connection refused")
	hold = delivering(ctx, c, alertFP("h2"))
	started(t, g)
	one := delivering(ctx, c, alertFP("one"))
	two := queued(t, ctx, c, 2, alertFP("two"))
	g.release <- nil
	result(t, hold)
	started(t, g)
	g.release <- down
	for _, ch := range []<-chan outcome{one, two} {
		if o := result(t, ch); !errors.Is(o.err, down) {
			t.Fatalf("database down: %v", o.err)
		}
	}
}

// A delivery whose request ends while it waits is answered with that and
// never stored; one whose request ends during its commit is answered at
// once, and the commit goes on for the others.
func TestADeliveryEndsOnItsOwn(t *testing.T) {
	t.Parallel()
	g, c, hold := busy(t)
	gone, cancel := context.WithCancel(context.Background())
	cancelled := queued(t, gone, c, 1, alertFP("gone"))
	cancel()
	if o := result(t, cancelled); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("cancelled: %v", o.err)
	}
	leaving, leave := context.WithCancel(context.Background())
	quick := queued(t, leaving, c, 2, alertFP("quick"))
	patient := queued(t, context.Background(), c, 3, alertFP("patient"))
	g.release <- nil
	result(t, hold)
	if names := started(t, g); fmt.Sprint(names) != "[quick patient]" {
		t.Fatalf("commit %v, want [quick patient]: the cancelled delivery dropped", names)
	}
	leave()
	if o := result(t, quick); !errors.Is(o.err, context.Canceled) {
		t.Fatalf("quick: %v, want its request's end while the commit runs", o.err)
	}
	g.release <- nil
	if o := result(t, patient); o.err != nil {
		t.Fatalf("patient: %v", o.err)
	}
	if fmt.Sprint(g.commits) != "[[h] [quick patient]]" {
		t.Fatalf("commits %v", g.commits)
	}
}

// A commit is bounded by the latest deadline of its deliveries, or none
// if one has none.
func TestCommitContextTakesTheLatestDeadline(t *testing.T) {
	t.Parallel()
	now := time.Now()
	soon, c1 := context.WithDeadline(context.Background(), now.Add(time.Second))
	defer c1()
	later, c2 := context.WithDeadline(context.Background(), now.Add(time.Minute))
	defer c2()
	ctx, cancel := commitContext([]*delivery{{ctx: soon}, {ctx: later}, {ctx: soon}})
	defer cancel()
	if dl, ok := ctx.Deadline(); !ok || !dl.Equal(now.Add(time.Minute)) {
		t.Errorf("deadline %v %v, want the later one", dl, ok)
	}
	ctx, cancel = commitContext([]*delivery{{ctx: soon}, {ctx: context.Background()}})
	defer cancel()
	if dl, ok := ctx.Deadline(); ok {
		t.Errorf("deadline %v, want none", dl)
	}
}

// A commit carries at most maxCommitAlerts alerts; a bigger delivery is
// committed alone.
func TestCommitsAreBounded(t *testing.T) {
	t.Parallel()
	g, c, hold := busy(t)
	ctx := context.Background()
	big := make([]model.Alert, maxCommitAlerts)
	for i := range big {
		big[i] = alertFP(fmt.Sprintf("b%d.", i))
	}
	first := queued(t, ctx, c, 1, alertFP("s1"))
	bigger := queued(t, ctx, c, 2, big...)
	last := queued(t, ctx, c, 3, alertFP("s2"))
	g.release <- nil
	result(t, hold)
	if got := started(t, g); fmt.Sprint(got) != "[s1 s2]" {
		t.Fatalf("commit %v, want [s1 s2]: the big delivery would pass the bound", got)
	}
	g.release <- nil
	if got := started(t, g); len(got) != 1 {
		t.Fatalf("commit of %d deliveries, want the big one alone", len(got))
	}
	g.release <- nil
	for _, ch := range []<-chan outcome{first, bigger, last} {
		if o := result(t, ch); o.err != nil {
			t.Fatal(o.err)
		}
	}
}
