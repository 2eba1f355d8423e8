package engine

// What an engine does beside deciding jobs: its heartbeat, its look at
// what it can act on now, listening for a fleet node's jobs, retention, and
// undoing temporary changes whose alert resolved.

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/prometheus/common/version"

	"github.com/selfheal/selfheal/remediator/action"
)

// replicaAlive is how long a replica counts as alive after its last
// heartbeat (node.heartbeat_interval apart).
const replicaAlive = time.Minute

// heartbeat records this replica and its node, with its configuration
// fingerprint, and counts the live replicas that run the same
// configuration and another.
func (e *Engine) heartbeat(ctx context.Context) {
	cfg := e.config()
	refused, err := e.store.NodeHeartbeat(ctx, model.NodeBeat{Name: e.node(), Names: cfg.Node.Names(),
		Engine: e.replica, Version: version.Version, ConfigFingerprint: cfg.Fingerprint()})
	e.namesMu.Lock()
	switch {
	case err != nil && ctx.Err() == nil:
		e.logger.Debug("node heartbeat failed", "err", err)
	case err == nil && len(refused) > 0 && !slices.Equal(refused, e.refusedNames):
		e.logger.Warn("node.aliases: these names are another node's name or alias; alerts naming them are not this node's",
			"names", refused)
	}
	if err == nil {
		e.refusedNames = refused
	}
	e.namesMu.Unlock()
	// Counting the replicas reads every live one: in a fleet (hundreds of
	// them) once a minute, not at every beat.
	e.beats++
	onlyAlive := cfg.Node.Fleet && (e.beats-1)%max(1, int(time.Minute/cfg.Node.HeartbeatInterval.D())) != 0
	same, other, err := e.store.Heartbeat(ctx, model.Replica{ID: e.replica, Host: e.host, Version: version.Version,
		ConfigFingerprint: cfg.Fingerprint(), Remediations: cfg.Names(), OnlyAlive: onlyAlive}, replicaAlive)
	if err != nil {
		if ctx.Err() == nil {
			e.logger.Debug("heartbeat failed", "err", err)
		}
		return
	}
	if onlyAlive {
		return
	}
	e.m.replicas.WithLabelValues("same").Set(float64(same))
	e.m.replicas.WithLabelValues("other").Set(float64(other))
	if other > 0 && e.mismatch == 0 {
		e.logger.Warn("replicas on this database run another configuration: each leaves the others' remediations alone",
			"this_fingerprint", e.config().Fingerprint(), "other_replicas", other)
	}
	e.mismatch = other
}

// availabilityTTL is how long the engine trusts its last look at what it
// can act on.
const availabilityTTL = time.Second

// unavailable returns the remediations one of whose actions cannot run now
// on this replica, looking again at most once per availabilityTTL.
func (e *Engine) unavailable(ctx context.Context) []string {
	e.availMu.Lock()
	defer e.availMu.Unlock()
	if time.Since(e.availAt) < availabilityTTL {
		return e.skip
	}
	// One bound for all the checks: a Docker Engine that hangs holds the
	// workers back a second, not a second per action type.
	actx, cancel := context.WithTimeout(ctx, availabilityTTL)
	defer cancel()
	errs := map[string]error{}
	for t, ex := range e.executors {
		if a, ok := ex.(action.Availability); ok {
			errs[t] = a.Available(actx)
		}
	}
	if ctx.Err() != nil {
		return e.skip // stopping: what was seen last stands
	}
	var skip []string
	var why string
	for _, r := range e.config().Remediations {
		for _, s := range r.Steps {
			if err := errs[s.Type]; err != nil {
				skip, why = append(skip, r.Name), err.Error()
				break
			}
		}
	}
	switch {
	case why != "" && e.skipError == "":
		e.logger.Warn("cannot act now: leaving these remediations' jobs to other replicas or later", "remediations", skip, "err", why)
	case why == "" && e.skipError != "":
		e.logger.Info("can act again on every remediation")
	}
	e.m.unavailable.Set(float64(len(skip)))
	e.skip, e.skipError, e.availAt = skip, why, time.Now()
	return skip
}

// listen wakes a worker whenever a webhook replica queues a job for this
// node (fleet mode), listening again after a lost connection; the
// workers' polling covers the gaps.
func (e *Engine) listen(ctx context.Context) {
	node := e.node()
	var quiet errorLog
	for ctx.Err() == nil {
		err := e.store.ListenForJobs(ctx, node, e.Wake)
		if err != nil && ctx.Err() == nil && quiet.due(err, time.Now()) {
			e.logger.Warn("cannot listen for this node's jobs; polling meanwhile", "err", err,
				"poll_interval", e.config().Engine.PollInterval.D())
		}
		select {
		case <-ctx.Done():
		case <-time.After(e.config().Engine.PollInterval.D()):
		}
	}
}

// every runs f at each interval until ctx ends.
func (e *Engine) every(ctx context.Context, interval time.Duration, f func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

func (e *Engine) applyRetention(ctx context.Context) {
	deleted, err := e.store.ApplyRetention(ctx)
	if err != nil {
		e.logger.Warn("retention failed", "err", err)
		return
	}
	e.logger.Debug("retention applied", "deleted", deleted)
}

// revertRecheck is how often the engine looks for temporary changes to
// undo when it knows of none in place (another replica on this host may
// have made one).
const revertRecheck = 30 * time.Second

// revertWhenDue undoes the temporary changes whose alert resolved, at each
// revert_interval while some are in place, and otherwise only every
// revertRecheck: an idle engine (a fleet of them) does not ask the
// database every two seconds about changes that do not exist.
func (e *Engine) revertWhenDue(ctx context.Context) {
	gen := e.revertGen.Load()
	if gen == e.revertSeen && time.Since(e.revertChecked) < revertRecheck {
		return
	}
	e.revert(ctx, false)
	inPlace, err := e.store.DueReverts(ctx, e.node(), e.replica)
	if err != nil {
		return
	}
	e.revertChecked = time.Now()
	if len(inPlace) == 0 {
		e.revertSeen = gen
	}
}

// revert undoes the temporary changes on this node whose alert resolved,
// whoever made them; with stopping, also every one this replica made.
func (e *Engine) revert(ctx context.Context, stopping bool) {
	owner := ""
	if stopping {
		owner = e.replica
	}
	due, err := e.store.DueReverts(ctx, e.node(), owner)
	if err != nil {
		if ctx.Err() == nil {
			e.logger.Warn("cannot read pending reverts", "err", err)
		}
		return
	}
	for _, p := range due {
		var err error
		if rv, ok := e.executors[p.ActionType].(action.Reverter); ok {
			err = rv.Revert(ctx, p.Target, p.Data)
		} else {
			err = fmt.Errorf("action %s cannot be undone by this build", p.ActionType)
		}
		if err != nil {
			e.logger.Error("could not undo a temporary change", "action", p.ActionType, "target", p.Target, "err", err)
		} else {
			e.logger.Info("temporary change undone", "action", p.ActionType, "target", p.Target, "why", p.Why)
		}
		if err := e.store.MarkReverted(ctx, p, err); err != nil {
			e.logger.Error("could not record a revert", "err", err)
		}
	}
}

// errorLog keeps a failing loop (say, while the database is down) from
// logging the same error every poll: a new error logs at once, a repeated
// one once a minute.
type errorLog struct {
	last string
	at   time.Time
}

func (l *errorLog) due(err error, now time.Time) bool {
	if msg := err.Error(); msg != l.last || now.Sub(l.at) >= time.Minute {
		l.last, l.at = msg, now
		return true
	}
	return false
}
