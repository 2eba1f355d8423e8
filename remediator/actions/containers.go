// Package actions implements the remediation steps the engine runs, each
// behind the engine's Executor interface and each depending only on the
// small interface it needs.
package actions

import (
	"context"
	"fmt"
	"time"

	"github.com/selfheal/selfheal/remediator/containers"
	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/policy"
)

// Containers is what the container actions need from Docker.
type Containers interface {
	Ping(ctx context.Context) error
	Canonical(ctx context.Context, name string) (string, error)
	Permit(ctx context.Context, name string) error
	Restart(ctx context.Context, name string) (time.Time, error)
	StopStart(ctx context.Context, name string, wait time.Duration) (time.Time, error)
	Verify(ctx context.Context, name string, since time.Time, v containers.Verification) error
	Running(ctx context.Context, name string) (bool, time.Time, error)
}

var _ Containers = (*containers.Client)(nil)

// Restart restarts a container and verifies it comes back.
type Restart struct{ Containers Containers }

// StopStart stops a container, waits, starts it and verifies it comes back.
type StopStart struct{ Containers Containers }

var (
	_ engine.Executor        = Restart{}
	_ engine.Availability    = Restart{}
	_ engine.Canonicalizer   = Restart{}
	_ engine.Canonicalizer   = StopStart{}
	_ engine.Availability    = StopStart{}
	_ engine.Executor        = StopStart{}
	_ engine.RecoveryChecker = Restart{}
	_ engine.RecoveryChecker = StopStart{}
)

// Canonical implements engine.Canonicalizer: the container's own name.
func (a Restart) Canonical(ctx context.Context, target string) (string, error) {
	return a.Containers.Canonical(ctx, target)
}

// Canonical implements engine.Canonicalizer: the container's own name.
func (a StopStart) Canonical(ctx context.Context, target string) (string, error) {
	return a.Containers.Canonical(ctx, target)
}

// Available implements engine.Availability: the Docker Engine answers.
func (a Restart) Available(ctx context.Context) error { return a.Containers.Ping(ctx) }

// Available implements engine.Availability: the Docker Engine answers.
func (a StopStart) Available(ctx context.Context) error { return a.Containers.Ping(ctx) }

// Permit implements engine.Executor.
func (a Restart) Permit(ctx context.Context, req engine.Request) error {
	return a.Containers.Permit(ctx, req.Target)
}

// Execute implements engine.Executor.
func (a Restart) Execute(ctx context.Context, req engine.Request) (engine.Result, error) {
	since, err := a.Containers.Restart(ctx, req.Target)
	if err != nil {
		return engine.Result{}, err
	}
	return engine.Result{}, a.Containers.Verify(ctx, req.Target, since, verification(req.Verify))
}

// Permit implements engine.Executor.
func (a StopStart) Permit(ctx context.Context, req engine.Request) error {
	return a.Containers.Permit(ctx, req.Target)
}

// Execute implements engine.Executor.
func (a StopStart) Execute(ctx context.Context, req engine.Request) (engine.Result, error) {
	since, err := a.Containers.StopStart(ctx, req.Target, req.Action.Wait.D())
	if err != nil {
		return engine.Result{}, err
	}
	res := engine.Result{Details: map[string]any{"wait_seconds": req.Action.Wait.D().Seconds()}}
	return res, a.Containers.Verify(ctx, req.Target, since, verification(req.Verify))
}

// Recovered implements engine.RecoveryChecker.
func (a Restart) Recovered(ctx context.Context, target string, since time.Time, stableFor time.Duration) (engine.Recovery, error) {
	return recovered(ctx, a.Containers, target, since, stableFor, time.Now())
}

// Recovered implements engine.RecoveryChecker.
func (a StopStart) Recovered(ctx context.Context, target string, since time.Time, stableFor time.Duration) (engine.Recovery, error) {
	return recovered(ctx, a.Containers, target, since, stableFor, time.Now())
}

// recovered: a container that is up in a run that started after the alert
// began has recovered once it has stayed up for stableFor; until then it
// is settling.
func recovered(ctx context.Context, c Containers, target string, since time.Time, stableFor time.Duration, now time.Time) (engine.Recovery, error) {
	up, started, err := c.Running(ctx, target)
	if err != nil || !up || !started.After(since) {
		return engine.Recovery{}, err
	}
	if uptime := now.Sub(started); uptime < stableFor {
		return engine.Recovery{Since: started, Settling: stableFor - uptime, Reason: fmt.Sprintf(
			"%s started again by itself at %s, after the alert began; waiting %s to see it stay up",
			target, started.UTC().Format(time.RFC3339), (stableFor - uptime).Round(time.Millisecond))}, nil
	}
	return engine.Recovery{Recovered: true, Since: started, Reason: fmt.Sprintf(
		"%s is running again since %s, after the alert began at %s: nothing to do",
		target, started.UTC().Format(time.RFC3339), since.UTC().Format(time.RFC3339))}, nil
}

func verification(v policy.Verify) containers.Verification {
	return containers.Verification{Timeout: v.Timeout.D(), StableFor: v.StableFor.D()}
}
