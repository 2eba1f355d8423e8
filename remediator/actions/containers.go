// Package actions implements the remediation steps the engine runs. Each
// action type lives in its own file: its parameters (defaults, yaml keys,
// validation), its executor behind package action's Executor, and an init
// function registering both. Each depends only on the small interface it
// needs.
package actions

import (
	"context"
	"fmt"
	"time"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/containers"
)

func init() {
	register("restart", noParams, func(d Deps) action.Executor { return Restart{Containers: d.Docker} })
	register("stop_start", newStopStartParams, func(d Deps) action.Executor { return StopStart{Containers: d.Docker} })
}

// DefaultStopStartWait is stop_start's pause between stop and start.
const DefaultStopStartWait = 2 * time.Second

// StopStartParams are stop_start's parameters.
type StopStartParams struct {
	// Wait is the pause between stop and start.
	Wait action.Duration `yaml:"wait"`
}

func newStopStartParams() action.Params {
	return &StopStartParams{Wait: action.Duration(DefaultStopStartWait)}
}

// Problems implements action.Params.
func (p *StopStartParams) Problems() []string {
	if p.Wait < 0 {
		return []string{"wait: must not be negative"}
	}
	return nil
}

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
	_ action.Executor        = Restart{}
	_ action.Availability    = Restart{}
	_ action.Canonicalizer   = Restart{}
	_ action.Canonicalizer   = StopStart{}
	_ action.Availability    = StopStart{}
	_ action.Executor        = StopStart{}
	_ action.RecoveryChecker = Restart{}
	_ action.RecoveryChecker = StopStart{}
)

// Canonical implements action.Canonicalizer: the container's own name.
func (a Restart) Canonical(ctx context.Context, target string) (string, error) {
	return a.Containers.Canonical(ctx, target)
}

// Canonical implements action.Canonicalizer: the container's own name.
func (a StopStart) Canonical(ctx context.Context, target string) (string, error) {
	return a.Containers.Canonical(ctx, target)
}

// Available implements action.Availability: the Docker Engine answers.
func (a Restart) Available(ctx context.Context) error { return a.Containers.Ping(ctx) }

// Available implements action.Availability: the Docker Engine answers.
func (a StopStart) Available(ctx context.Context) error { return a.Containers.Ping(ctx) }

// Permit implements action.Executor.
func (a Restart) Permit(ctx context.Context, req action.Request) error {
	return a.Containers.Permit(ctx, req.Target)
}

// Execute implements action.Executor.
func (a Restart) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	since, err := a.Containers.Restart(ctx, req.Target)
	if err != nil {
		return action.Result{}, err
	}
	return action.Result{}, a.Containers.Verify(ctx, req.Target, since, verification(req.Verify))
}

// Permit implements action.Executor.
func (a StopStart) Permit(ctx context.Context, req action.Request) error {
	return a.Containers.Permit(ctx, req.Target)
}

// Execute implements action.Executor.
func (a StopStart) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	wait := paramsOf[*StopStartParams](req, newStopStartParams).Wait.D()
	since, err := a.Containers.StopStart(ctx, req.Target, wait)
	if err != nil {
		return action.Result{}, err
	}
	res := action.Result{Details: map[string]any{"wait_seconds": wait.Seconds()}}
	return res, a.Containers.Verify(ctx, req.Target, since, verification(req.Verify))
}

// Recovered implements action.RecoveryChecker.
func (a Restart) Recovered(ctx context.Context, target string, since time.Time, stableFor time.Duration) (action.Recovery, error) {
	return recovered(ctx, a.Containers, target, since, stableFor, time.Now())
}

// Recovered implements action.RecoveryChecker.
func (a StopStart) Recovered(ctx context.Context, target string, since time.Time, stableFor time.Duration) (action.Recovery, error) {
	return recovered(ctx, a.Containers, target, since, stableFor, time.Now())
}

// recovered: a container that is up in a run that started after the alert
// began has recovered once it has stayed up for stableFor; until then it
// is settling.
func recovered(ctx context.Context, c Containers, target string, since time.Time, stableFor time.Duration, now time.Time) (action.Recovery, error) {
	up, started, err := c.Running(ctx, target)
	if err != nil || !up || !started.After(since) {
		return action.Recovery{}, err
	}
	if uptime := now.Sub(started); uptime < stableFor {
		return action.Recovery{Since: started, Settling: stableFor - uptime, Reason: fmt.Sprintf(
			"%s started again by itself at %s, after the alert began; waiting %s to see it stay up",
			target, started.UTC().Format(time.RFC3339), (stableFor - uptime).Round(time.Millisecond))}, nil
	}
	return action.Recovery{Recovered: true, Since: started, Reason: fmt.Sprintf(
		"%s is running again since %s, after the alert began at %s: nothing to do",
		target, started.UTC().Format(time.RFC3339), since.UTC().Format(time.RFC3339))}, nil
}

func verification(v action.Verify) containers.Verification {
	return containers.Verification{Timeout: v.Timeout, StableFor: v.StableFor}
}
