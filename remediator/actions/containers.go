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
	registerType(action.Type{Name: "restart", NewParams: func() action.Params { return &RestartParams{} }, TakesDown: true},
		func(d Deps) action.Executor { return Restart{Containers: d.Docker} })
	registerType(action.Type{Name: "stop_start", NewParams: newStopStartParams, TakesDown: true},
		func(d Deps) action.Executor { return StopStart{Containers: d.Docker} })
}

// RestartParams are restart's parameters.
type RestartParams struct {
	// Dependents: "restart" restarts, once the target is up again, the
	// containers that depend on it (see restartDependents).
	Dependents string `yaml:"dependents"`
}

// Problems implements action.Params.
func (p *RestartParams) Problems() []string { return dependentsProblems(p.Dependents) }

// DefaultStopStartWait is stop_start's pause between stop and start.
const DefaultStopStartWait = 2 * time.Second

// StopStartParams are stop_start's parameters.
type StopStartParams struct {
	// Wait is the pause between stop and start.
	Wait action.Duration `yaml:"wait"`
	// Dependents, as restart's.
	Dependents string `yaml:"dependents"`
}

func newStopStartParams() action.Params {
	return &StopStartParams{Wait: action.Duration(DefaultStopStartWait)}
}

// Problems implements action.Params.
func (p *StopStartParams) Problems() []string {
	probs := dependentsProblems(p.Dependents)
	if p.Wait < 0 {
		probs = append(probs, "wait: must not be negative")
	}
	return probs
}

// Containers is what the container actions need from Docker.
type Containers interface {
	Ping(ctx context.Context) error
	Canonical(ctx context.Context, name string) (string, error)
	Permit(ctx context.Context, name string) error
	Evidence(ctx context.Context, name string) (containers.Evidence, error)
	Restart(ctx context.Context, name string) (time.Time, error)
	StopStart(ctx context.Context, name string, wait time.Duration) (time.Time, error)
	Verify(ctx context.Context, name string, since time.Time, v containers.Verification) error
	Running(ctx context.Context, name string) (bool, time.Time, error)
	Graph(ctx context.Context) (*containers.Graph, error)
	Allows(n *containers.Node) bool
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
	_ action.Toucher         = Restart{}
	_ action.Toucher         = StopStart{}
	_ action.Witness         = Restart{}
	_ action.Witness         = StopStart{}
)

// Evidence implements action.Witness: the container's exit state and last
// log lines before it is restarted.
func (a Restart) Evidence(ctx context.Context, req action.Request) (action.Evidence, error) {
	return containerEvidence(ctx, a.Containers, req.Target)
}

// Evidence implements action.Witness, as Restart's.
func (a StopStart) Evidence(ctx context.Context, req action.Request) (action.Evidence, error) {
	return containerEvidence(ctx, a.Containers, req.Target)
}

func containerEvidence(ctx context.Context, c Containers, target string) (action.Evidence, error) {
	ev, err := c.Evidence(ctx, target)
	if err != nil {
		return action.Evidence{}, err
	}
	return action.Evidence{Record: ev, Facts: action.Facts{Stopped: ev.Status != "running" && ev.Status != "restarting",
		OOMKilled: ev.OOMKilled, ExitCode: ev.ExitCode, RanFor: time.Duration(ev.RanFor * float64(time.Second))}}, nil
}

// Touches implements action.Toucher: the target, and its dependents when
// the step restarts them.
func (a Restart) Touches(ctx context.Context, req action.Request) ([]string, error) {
	return touches(ctx, a.Containers, req.Target, paramsOf[*RestartParams](req, func() action.Params { return &RestartParams{} }).Dependents)
}

// Touches implements action.Toucher, as Restart's.
func (a StopStart) Touches(ctx context.Context, req action.Request) ([]string, error) {
	return touches(ctx, a.Containers, req.Target, paramsOf[*StopStartParams](req, newStopStartParams).Dependents)
}

func touches(ctx context.Context, c Containers, target, dependents string) ([]string, error) {
	if dependents != DependentsRestart {
		return []string{target}, nil
	}
	deps, err := dependentsOf(ctx, c, target)
	return append([]string{target}, deps...), err
}

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
	if err := a.Containers.Verify(ctx, req.Target, since, verification(req.Verify)); err != nil {
		return action.Result{}, err
	}
	if paramsOf[*RestartParams](req, func() action.Params { return &RestartParams{} }).Dependents != DependentsRestart {
		return action.Result{}, nil
	}
	touched, err := restartDependents(ctx, a.Containers, req.Target, req.Verify)
	return action.Result{Touched: touched}, err
}

// PermitsByTarget implements action.TargetPermit: a container's permit is
// whether it exists and is opted in.
func (Restart) PermitsByTarget() {}

// PermitsByTarget implements action.TargetPermit.
func (StopStart) PermitsByTarget() {}

// Permit implements action.Executor.
func (a StopStart) Permit(ctx context.Context, req action.Request) error {
	return a.Containers.Permit(ctx, req.Target)
}

// Execute implements action.Executor.
func (a StopStart) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	p := paramsOf[*StopStartParams](req, newStopStartParams)
	since, err := a.Containers.StopStart(ctx, req.Target, p.Wait.D())
	if err != nil {
		return action.Result{}, err
	}
	res := action.Result{Details: map[string]any{"wait_seconds": p.Wait.D().Seconds()}}
	if err := a.Containers.Verify(ctx, req.Target, since, verification(req.Verify)); err != nil || p.Dependents != DependentsRestart {
		return res, err
	}
	res.Touched, err = restartDependents(ctx, a.Containers, req.Target, req.Verify)
	return res, err
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
func recovered(ctx context.Context, c interface {
	Running(ctx context.Context, name string) (bool, time.Time, error)
}, target string, since time.Time, stableFor time.Duration, now time.Time) (action.Recovery, error) {
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
