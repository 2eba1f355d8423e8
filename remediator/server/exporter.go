package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/docker/docker/client"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/selfheal/selfheal/exporter"
	"github.com/selfheal/selfheal/exporter/probe"
	"github.com/selfheal/selfheal/remediator/policy"
)

// buildExporter assembles the built-in exporter from the flags and the
// configuration (Docker host and opt-in label, probes).
func buildExporter(cfg *policy.Config, f *exporter.Flags, lib NVML, log *slog.Logger) (*exporter.Exporter, error) {
	var deps exporter.Deps
	if lib != nil {
		deps.NVML = lib
	}
	deps.Logger = log.With("component", "exporter")
	deps.RequireLabel = cfg.Targets.Docker.RequireLabel
	if cfg.Targets.Docker.Host != "" {
		api, err := client.NewClientWithOpts(client.WithHost(cfg.Targets.Docker.Host), client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("docker client for %s: %w", cfg.Targets.Docker.Host, err)
		}
		deps.DockerAPI = api
	}
	for _, p := range cfg.Exporter.Probes {
		deps.Probes = append(deps.Probes, probe.Probe{Name: p.Name, Type: p.Type, Target: p.Target, Timeout: p.Timeout.D()})
	}
	return exporter.Build(f, deps)
}

// ExporterOptions configures RunExporter.
type ExporterOptions struct {
	Config   *policy.Config
	Flags    *exporter.Flags
	Web      *web.FlagConfig
	Listener net.Listener // tests
	Logger   *slog.Logger
}

// RunExporter serves the exporter alone (`selfheal exporter`), for hosts
// that are watched but not remediated, until ctx ends.
func RunExporter(ctx context.Context, o ExporterOptions) error {
	exp, err := buildExporter(o.Config, o.Flags, nil, o.Logger)
	if err != nil {
		return err
	}
	reg := newRegistry()
	reg.MustRegister(exp)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() { exp.Run(ctx); close(done) }()
	o.Logger.Info("exporter started", "collectors", exp.Names())
	r := newRouter(reg, func(context.Context) error { return nil }, o.Logger)
	err = serveHTTP(ctx, r, o.Web, o.Listener, o.Logger)
	cancel()
	<-done
	return err
}
