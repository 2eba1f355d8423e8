package actions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/containers"
)

func init() {
	register("hard_restart", newHardRestartParams, func(d Deps) action.Executor { return HardRestart{Fleet: d.Docker} })
	register("docker_prune", newDockerPruneParams, func(d Deps) action.Executor { return DockerPrune{Fleet: d.Docker} })
}

// HardRestartParams are hard_restart's parameters.
type HardRestartParams struct {
	// Services restart in this order; empty means every opted-in
	// container, by name.
	Services []string `yaml:"services"`
	// Concurrency is how many restart at once.
	Concurrency int `yaml:"concurrency"`
}

func newHardRestartParams() action.Params { return &HardRestartParams{Concurrency: 1} }

// Problems implements action.Params.
func (p *HardRestartParams) Problems() []string {
	if p.Concurrency < 1 {
		return []string{"concurrency: must be at least 1"}
	}
	return nil
}

// DefaultPruneStopped is how long docker_prune leaves a stopped container:
// one that just died is to be healed, not removed.
const DefaultPruneStopped = 24 * time.Hour

// DockerPruneParams are docker_prune's parameters.
type DockerPruneParams struct {
	// StoppedFor: opted-in containers are removed only once they have
	// been stopped this long.
	StoppedFor action.Duration `yaml:"stopped_for"`
}

func newDockerPruneParams() action.Params {
	return &DockerPruneParams{StoppedFor: action.Duration(DefaultPruneStopped)}
}

// Problems implements action.Params.
func (p *DockerPruneParams) Problems() []string {
	if p.StoppedFor < 0 {
		return []string{"stopped_for: must not be negative"}
	}
	return nil
}

// Fleet is what the actions over many containers need from Docker.
type Fleet interface {
	Containers
	OptedIn(ctx context.Context) ([]string, error)
	Prune(ctx context.Context, stoppedFor time.Duration) (containers.PruneReport, error)
}

var _ Fleet = (*containers.Client)(nil)

// HardRestart restarts the application services in order: the configured
// list, or every opted-in container by name. At most Concurrency restart at
// once, each is verified, and a service only starts its restart once all
// before it have started theirs.
type HardRestart struct{ Fleet Fleet }

// DockerPrune removes opted-in containers stopped for longer than the
// action's stopped_for and opted-in dangling images, and records the bytes
// reclaimed.
type DockerPrune struct{ Fleet Fleet }

var (
	_ action.Executor     = HardRestart{}
	_ action.Toucher      = HardRestart{}
	_ action.Availability = HardRestart{}
	_ action.Availability = DockerPrune{}
	_ action.Executor     = DockerPrune{}
)

// Available implements action.Availability: the Docker Engine answers.
func (a HardRestart) Available(ctx context.Context) error { return a.Fleet.Ping(ctx) }

// Available implements action.Availability: the Docker Engine answers.
func (a DockerPrune) Available(ctx context.Context) error { return a.Fleet.Ping(ctx) }

// Touches implements action.Toucher: every service it restarts.
func (a HardRestart) Touches(ctx context.Context, req action.Request) ([]string, error) {
	return a.services(ctx, req)
}

func (a HardRestart) services(ctx context.Context, req action.Request) ([]string, error) {
	if p := paramsOf[*HardRestartParams](req, newHardRestartParams); len(p.Services) > 0 {
		return p.Services, nil
	}
	return a.Fleet.OptedIn(ctx)
}

// Permit implements action.Executor: every service must be opted in; one
// that is not refuses the whole restart, before anything is touched.
func (a HardRestart) Permit(ctx context.Context, req action.Request) error {
	svcs, err := a.services(ctx, req)
	if err != nil {
		return err
	}
	if len(svcs) == 0 {
		return &action.Refusal{Severity: action.Warning, Reason: "hard restart: no opted-in services"}
	}
	var refused []string
	for _, s := range svcs {
		if err := a.Fleet.Permit(ctx, s); err != nil {
			refused = append(refused, err.Error())
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("%w: hard restart refused: %s", containers.ErrNotPermitted, strings.Join(refused, "; "))
	}
	return nil
}

// Execute implements action.Executor.
func (a HardRestart) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	svcs, err := a.services(ctx, req)
	if err != nil {
		return action.Result{}, err
	}
	type outcome struct {
		Service string  `json:"service"`
		Started string  `json:"started"`
		Seconds float64 `json:"seconds"`
		Error   string  `json:"error,omitempty"`
	}
	results := make([]outcome, len(svcs))
	sem := make(chan struct{}, max(1, paramsOf[*HardRestartParams](req, newHardRestartParams).Concurrency))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for i, svc := range svcs {
		sem <- struct{}{} // in order: the next starts only when a slot is free
		wg.Go(func() {
			defer func() { <-sem }()
			start := time.Now()
			results[i] = outcome{Service: svc, Started: start.UTC().Format(time.RFC3339Nano)}
			since, err := a.Fleet.Restart(ctx, svc)
			if err == nil {
				err = a.Fleet.Verify(ctx, svc, since, verification(req.Verify))
			}
			results[i].Seconds = time.Since(start).Seconds()
			if err != nil {
				results[i].Error = err.Error()
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	list := make([]any, len(results))
	for i, r := range results {
		list[i] = map[string]any{"service": r.Service, "started": r.Started, "seconds": r.Seconds, "error": r.Error}
	}
	res := action.Result{Details: map[string]any{"services": list}}
	if len(errs) > 0 {
		return res, fmt.Errorf("hard restart: %d of %d services failed: %w", len(errs), len(svcs), errors.Join(errs...))
	}
	return res, nil
}

// Permit implements action.Executor: prune only ever removes what is
// opted in or unreferenced.
func (DockerPrune) Permit(context.Context, action.Request) error { return nil }

// Execute implements action.Executor.
func (a DockerPrune) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	r, err := a.Fleet.Prune(ctx, paramsOf[*DockerPruneParams](req, newDockerPruneParams).StoppedFor.D())
	res := action.Result{Details: map[string]any{
		"containers_removed": r.Containers, "images_removed": r.Images, "bytes_reclaimed": r.BytesReclaimed,
	}}
	return res, err
}
