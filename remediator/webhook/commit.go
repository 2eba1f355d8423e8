package webhook

// Group commit: deliveries that arrive while a commit is under way share
// the next one — one statement, one transaction, one flush of the WAL —
// and each is answered once that commit is durable. Under light load a
// delivery is stored alone at once; under heavy load the commits grow, and
// the database's cost per delivery falls, instead of every delivery paying
// for a transaction and a flush of its own and queueing behind the others.

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/model"
	"github.com/selfheal/selfheal/remediator/store"
)

// maxCommitAlerts bounds the alerts one shared commit carries, so that a
// commit's time (and its locks) stay short; a delivery bigger than this
// is committed alone.
const maxCommitAlerts = 2000

// committer stores deliveries through one writer at a time, each commit
// taking every delivery that queued meanwhile.
type committer struct {
	st          Ingester
	reopenAfter time.Duration
	size        prometheus.Histogram

	mu      sync.Mutex
	pending []*delivery
	writing bool // a writer goroutine is running
}

// delivery is one delivery's alerts waiting to be stored, and then what
// storing them changed.
type delivery struct {
	ctx    context.Context
	alerts []model.Alert
	done   chan struct{} // closed once res and err are set
	res    model.IngestResult
	err    error
}

// alertKey is what identifies an alert occurrence in the database.
type alertKey struct {
	fingerprint string
	startsAt    time.Time
}

func newCommitter(st Ingester, reopenAfter time.Duration) *committer {
	return &committer{
		st:          st,
		reopenAfter: reopenAfter,
		size: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "selfheal_webhook_commit_deliveries",
			Help:    "Webhook deliveries stored by one commit (group commit: deliveries that arrive while a commit is under way share the next).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
	}
}

// ingest stores alerts as one delivery and returns what that changed, once
// the commit that holds them is durable. When ctx ends first it returns
// ctx's error; the delivery may still be stored by a commit under way, as
// a delivery Alertmanager retries may be stored twice (idempotently).
func (c *committer) ingest(ctx context.Context, alerts []model.Alert) (model.IngestResult, error) {
	d := &delivery{ctx: ctx, alerts: alerts, done: make(chan struct{})}
	c.mu.Lock()
	c.pending = append(c.pending, d)
	if !c.writing {
		c.writing = true
		go c.write()
	}
	c.mu.Unlock()
	select {
	case <-d.done:
		return d.res, d.err
	case <-ctx.Done():
		return model.IngestResult{}, ctx.Err()
	}
}

// write commits what is pending until nothing is, then ends: no goroutine
// waits while the webhook is idle.
func (c *committer) write() {
	for {
		c.mu.Lock()
		batch := c.next()
		if len(batch) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.commit(batch)
	}
}

// next takes the deliveries the next commit stores, in the order they
// came, and leaves the rest pending: those past maxCommitAlerts, and those
// sharing an alert with a delivery before them that is in this commit or
// left for a later one — each alert's deliveries are stored in the order
// they came, one commit after the other, as if each had its own. A
// delivery whose request has ended is answered with its error and
// dropped. The caller holds c.mu.
func (c *committer) next() []*delivery {
	var (
		batch []*delivery
		rest  = c.pending[:0]
		seen  = map[alertKey]bool{}
		n     int
	)
	for _, d := range c.pending {
		if err := d.ctx.Err(); err != nil {
			d.err = err
			close(d.done)
			continue
		}
		shares := false
		for _, a := range d.alerts {
			if seen[alertKey{a.Fingerprint, a.StartsAt}] {
				shares = true
				break
			}
		}
		for _, a := range d.alerts {
			seen[alertKey{a.Fingerprint, a.StartsAt}] = true
		}
		if len(batch) > 0 && (shares || n+len(d.alerts) > maxCommitAlerts) {
			rest = append(rest, d)
			continue
		}
		batch = append(batch, d)
		n += len(d.alerts)
	}
	clear(c.pending[len(rest):])
	c.pending = rest
	return batch
}

// commit stores batch in one statement and answers each delivery. When the
// database refuses the data itself (store.Unstorable), the deliveries are
// stored one by one, so that only the one holding that data fails (and
// the handler then finds its unstorable alerts).
func (c *committer) commit(batch []*delivery) {
	ctx, cancel := commitContext(batch)
	defer cancel()
	c.size.Observe(float64(len(batch)))
	all := make([][]model.Alert, len(batch))
	for i, d := range batch {
		all[i] = d.alerts
	}
	res, err := c.st.IngestDeliveries(ctx, all, c.reopenAfter)
	if err != nil && len(batch) > 1 && store.Unstorable(err) {
		for _, d := range batch {
			c.commit([]*delivery{d})
		}
		return
	}
	for i, d := range batch {
		if err == nil {
			d.res = res[i]
		}
		d.err = err
		close(d.done)
	}
}

// commitContext bounds a commit by the latest deadline among its
// deliveries (each is answered at its own, whatever the commit's): one
// whose request has a short deadline must not fail the others. It is not
// cancelled with any one request.
func commitContext(batch []*delivery) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, d := range batch {
		dl, ok := d.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return context.WithDeadline(context.Background(), latest)
}
