package server

import (
	"context"
	"log/slog"

	"github.com/selfheal/selfheal/remediator/actions"
	"github.com/selfheal/selfheal/remediator/containers"
	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/gpuctl"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
)

// Planner answers `selfheal plan`: the engine's decision for an alert that
// started firing now, from the same policy, state and checks as a job
// meets, with nothing written and nothing touched.
type Planner struct {
	eng    *engine.Engine
	st     *store.Store
	docker *containers.Client
}

// NewPlanner opens what a plan reads: the database, the Docker Engine and
// NVML, read-only.
func NewPlanner(ctx context.Context, cfg *policy.Config, log *slog.Logger) (*Planner, error) {
	st, err := store.Open(ctx, cfg.DatabaseURL, store.Options{MaxConns: 2, ApplicationName: "selfheal-plan"})
	if err != nil {
		return nil, err
	}
	docker, err := dockerClient(cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	eng, err := engine.New(st, cfg, actions.Registry(actions.Deps{
		Docker: docker, GPUs: gpuctl.Open(), Store: st, RebootEnabled: cfg.RebootEnabled, ProcPath: "/proc",
	}), log, nil)
	if err != nil {
		docker.Close()
		st.Close()
		return nil, err
	}
	return &Planner{eng: eng, st: st, docker: docker}, nil
}

// Plan says what selfheal would do with an alert with these labels.
func (p *Planner) Plan(ctx context.Context, labels map[string]string) (engine.Plan, error) {
	return p.eng.Plan(ctx, p.st, labels)
}

// Close releases the planner's connections.
func (p *Planner) Close() {
	p.docker.Close()
	p.st.Close()
}
