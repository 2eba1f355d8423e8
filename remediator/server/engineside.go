package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/exporter"
	dockercol "github.com/selfheal/selfheal/exporter/docker"
	"github.com/selfheal/selfheal/remediator/actions"
	"github.com/selfheal/selfheal/remediator/containers"
	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/fastpath"
	"github.com/selfheal/selfheal/remediator/gpuctl"
	"github.com/selfheal/selfheal/remediator/handoff"
	"github.com/selfheal/selfheal/remediator/store"
)

// engineSide is what a replica that acts has and a webhook-only one does
// not: the Docker client, the exporter, the engine and the fast path.
type engineSide struct {
	docker *containers.Client
	exp    *exporter.Exporter // nil when the exporter is off
	eng    *engine.Engine
	fast   *fastpath.FastPath
	reg    prometheus.Registerer
	// amClient reaches Alertmanager as alertmanager.http_config says.
	amClient *http.Client
}

func startEngineSide(o Options, st, ingest *store.Store, reg prometheus.Registerer) (*engineSide, error) {
	cfg, log := o.Config, o.Logger
	docker, err := dockerClient(cfg)
	if err != nil {
		return nil, err
	}
	s := &engineSide{docker: docker, reg: reg}
	if o.ExporterFlags != nil {
		if s.exp, err = buildExporter(cfg, o.ExporterFlags, o.NVML, docker, func(ev dockercol.Event) {
			if s.fast != nil { // set below, before the exporter runs
				go s.fast.Handle(context.Background(), fastpath.Event{Container: ev.Container, Kind: ev.Action, Time: ev.Time,
					RestartPolicy: ev.RestartPolicy, ExitCode: ev.ExitCode})
			}
		}, log); err != nil {
			docker.Close()
			return nil, err
		}
		reg.MustRegister(s.exp)
	}
	procPath := o.ProcPath
	if procPath == "" {
		procPath = "/proc"
	}
	if !gpuctl.Supported {
		log.Warn("this selfheal was built without GPU support (CGO_ENABLED=0): GPU metrics are absent and GPU actions refuse")
	}
	gpus := o.GPUs
	switch {
	case gpus != nil:
	case o.NVML != nil:
		gpus = gpuctl.New(o.NVML)
	default:
		gpus = gpuctl.Open()
	}
	s.eng, err = engine.New(st, cfg, actions.Registry(actions.Deps{
		Docker: docker, GPUs: gpus, Store: st,
		RebootEnabled: cfg.RebootEnabled, ProcPath: procPath, BootID: o.BootID,
	}), log.With("component", "engine"), reg)
	if err != nil {
		docker.Close()
		return nil, err
	}
	// Alertmanager's client: its timeouts are each caller's (the fast path
	// waits a second for the silences, the hand-off ten for a post).
	amClient, err := cfg.Alertmanager.Client()
	if err != nil {
		docker.Close()
		return nil, fmt.Errorf("alertmanager.http_config: %w", err)
	}
	s.amClient = amClient
	s.fast = fastpath.New(s.eng.Config, ingest, s.eng.OpenFast, amClient, log.With("component", "fastpath"), reg)
	if s.exp == nil && fastPathConfigured(cfg) {
		log.Warn("a remediation has a fast path, but the exporter is off: the fast path follows the docker collector's events; only the slow path runs")
	}
	return s, nil
}

// run settles a reboot selfheal asked for, starts the hand-off to people,
// and runs the engine until ctx ends. The schema is current. In a fleet
// it first checks that the database knows this engine as its node.
func (s *engineSide) run(ctx context.Context, o Options, st *store.Store, wg *sync.WaitGroup, log *slog.Logger) error {
	cfg := o.Config
	if cfg.Node.Fleet {
		if err := checkFleetRole(ctx, st, cfg.Node.Name); err != nil {
			return err
		}
	}
	settleReboots(ctx, actions.RebootValidator{Store: st, Services: s.docker, BootID: o.BootID,
		Delay: cfg.Engine.RebootValidationDelay.D()}, wg, log)
	if cfg.Alertmanager.URL != "" {
		h := handoff.New(cfg.Alertmanager.URL, s.amClient, s.eng.Config, st, log.With("component", "handoff"), s.reg)
		wg.Go(func() { h.Run(ctx) })
	}
	log.Info("engine started", "node", cfg.Node.Name, "fleet", cfg.Node.Fleet, "workers", cfg.Engine.Workers,
		"dry_run", cfg.DryRun, "remediations", len(cfg.Remediations))
	s.eng.Run(ctx)
	return nil
}

// checkFleetRole: in a fleet each node reaches the database with its own
// role, whose row-level security keeps it to its own node's jobs, counts,
// locks and audit rows. An engine on any other credentials would count
// other nodes' failures and actions as its own, so it does not start.
func checkFleetRole(ctx context.Context, st *store.Store, name string) error {
	node, err := st.SessionNode(ctx)
	switch {
	case err != nil:
		return err
	case node == "":
		return fmt.Errorf("node.fleet is set, but the database role is not a node's: in a fleet each node's engine connects with its own role (run `selfheal node add %s` and give this node the URL it prints); webhook-only replicas run with --webhook-only", name)
	case !strings.EqualFold(node, name):
		return fmt.Errorf("the database role is node %s's, but this is node %s (node.name, SELFHEAL_NODE_NAME): use the URL `selfheal node add %s` prints", node, name, name)
	}
	return nil
}
