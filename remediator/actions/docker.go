package actions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/selfheal/selfheal/remediator/containers"
	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/store"
)

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
	_ engine.Executor     = HardRestart{}
	_ engine.Toucher      = HardRestart{}
	_ engine.Availability = HardRestart{}
	_ engine.Availability = DockerPrune{}
	_ engine.Executor     = DockerPrune{}
)

// Available implements engine.Availability: the Docker Engine answers.
func (a HardRestart) Available(ctx context.Context) error { return a.Fleet.Ping(ctx) }

// Available implements engine.Availability: the Docker Engine answers.
func (a DockerPrune) Available(ctx context.Context) error { return a.Fleet.Ping(ctx) }

// Touches implements engine.Toucher: every service it restarts.
func (a HardRestart) Touches(ctx context.Context, req engine.Request) ([]string, error) {
	return a.services(ctx, req)
}

func (a HardRestart) services(ctx context.Context, req engine.Request) ([]string, error) {
	if len(req.Action.Services) > 0 {
		return req.Action.Services, nil
	}
	return a.Fleet.OptedIn(ctx)
}

// Permit implements engine.Executor: every service must be opted in; one
// that is not refuses the whole restart, before anything is touched.
func (a HardRestart) Permit(ctx context.Context, req engine.Request) error {
	svcs, err := a.services(ctx, req)
	if err != nil {
		return err
	}
	if len(svcs) == 0 {
		return &engine.Refusal{Severity: store.SeverityWarning, Reason: "hard restart: no opted-in services"}
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

// Execute implements engine.Executor.
func (a HardRestart) Execute(ctx context.Context, req engine.Request) (engine.Result, error) {
	svcs, err := a.services(ctx, req)
	if err != nil {
		return engine.Result{}, err
	}
	type outcome struct {
		Service string  `json:"service"`
		Started string  `json:"started"`
		Seconds float64 `json:"seconds"`
		Error   string  `json:"error,omitempty"`
	}
	results := make([]outcome, len(svcs))
	sem := make(chan struct{}, max(1, req.Action.Concurrency))
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
	res := engine.Result{Details: map[string]any{"services": list}}
	if len(errs) > 0 {
		return res, fmt.Errorf("hard restart: %d of %d services failed: %w", len(errs), len(svcs), errors.Join(errs...))
	}
	return res, nil
}

// Permit implements engine.Executor: prune only ever removes what is
// opted in or unreferenced.
func (DockerPrune) Permit(context.Context, engine.Request) error { return nil }

// Execute implements engine.Executor.
func (a DockerPrune) Execute(ctx context.Context, req engine.Request) (engine.Result, error) {
	r, err := a.Fleet.Prune(ctx, req.Action.StoppedFor.D())
	res := engine.Result{Details: map[string]any{
		"containers_removed": r.Containers, "images_removed": r.Images, "bytes_reclaimed": r.BytesReclaimed,
	}}
	return res, err
}
