package action

import (
	"context"
	"sync"
	"time"
)

// A look is one view of a target, shared by the checks made of it within
// a moment. While the engine decides on a job, every check it makes of
// the target — whether selfheal's own action explains the outage, whether
// the target may be touched, whether it came back by itself — reads what
// an executor read of it once (a container's inspection, say), so that the
// decision meets one view of the target and the target is asked once
// rather than at each check. The action has a look of its own, begun
// when its evidence is read (while its intent commits): the evidence and
// the action's own check before it changes anything are one view, read
// right before acting. A read is shared for LookFor at most: a later
// check (an action's step minutes on) reads afresh.
type look struct {
	mu    sync.Mutex
	reads map[string]*lookRead
}

// LookFor is how long a look shares what it read.
const LookFor = time.Second

// lookRead is one thing read in a look; done is closed once it is, at,
// or once the read was cut short by its context (dropped: not shared).
type lookRead struct {
	done    chan struct{}
	at      time.Time
	v       any
	err     error
	dropped bool
}

type lookKey struct{}

// WithLook returns ctx with a new look, for one decision.
func WithLook(ctx context.Context) context.Context {
	return context.WithValue(ctx, lookKey{}, &look{reads: map[string]*lookRead{}})
}

// Looked returns what read returns for key, read once in ctx's look: the
// first call reads, and the others (at the same time, or later within
// LookFor) share what it read, its error included. Without a look in ctx
// it just reads. A read whose context ended is not kept: a later check,
// or one that waited for it, reads again.
func Looked[T any](ctx context.Context, key string, read func() (T, error)) (T, error) {
	l, ok := ctx.Value(lookKey{}).(*look)
	if !ok {
		return read()
	}
	l.mu.Lock()
	r, seen := l.reads[key]
	if seen && isDone(r.done) && time.Since(r.at) > LookFor {
		seen = false
	}
	if !seen {
		r = &lookRead{done: make(chan struct{})}
		l.reads[key] = r
	}
	l.mu.Unlock()
	if seen {
		select {
		case <-r.done:
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
		if r.dropped {
			return Looked(ctx, key, read)
		}
		if v, ok := r.v.(T); ok || r.err != nil {
			return v, r.err
		}
		return read() // another type under the same key: not shared
	}
	v, err := read()
	r.v, r.err, r.at = v, err, time.Now()
	if ctx.Err() != nil {
		r.dropped = true
		l.mu.Lock()
		delete(l.reads, key)
		l.mu.Unlock()
	}
	close(r.done)
	return v, err
}

func isDone(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
