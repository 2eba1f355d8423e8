package server

import (
	"context"
	"log/slog"
	"net"

	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/selfheal/selfheal/exporter"
	dockercol "github.com/selfheal/selfheal/exporter/docker"
	"github.com/selfheal/selfheal/remediator/containers"
	"github.com/selfheal/selfheal/remediator/policy"
)

// buildExporter assembles the built-in exporter from the flags and the
// configuration (probes), sharing docker — selfheal's one Docker client and
// opt-in rule — with the actions.
func buildExporter(cfg *policy.Config, f *exporter.Flags, lib NVML, docker *containers.Client, onEvent func(dockercol.Event), log *slog.Logger) (*exporter.Exporter, error) {
	deps := exporter.Deps{Probes: cfg.Exporter.Probes, Logger: log.With("component", "exporter"), OnDockerEvent: onEvent}
	if lib != nil {
		deps.NVML = lib
	}
	if docker != nil {
		deps.DockerAPI, deps.OptedIn = docker.API(), docker.OptIn()
	}
	return exporter.Build(f, deps)
}

// dockerClient is selfheal's one way to open its Docker client.
func dockerClient(cfg *policy.Config) (*containers.Client, error) {
	return containers.New(dockerOptions(cfg))
}

// dockerOptions is what the configuration asks of the Docker client.
func dockerOptions(cfg *policy.Config) containers.Options {
	d := cfg.Targets.Docker
	return containers.Options{Host: d.Host, RequireLabel: d.RequireLabel, Allow: d.Containers, StopTimeout: d.StopTimeout.D(),
		Evidence: containers.EvidenceOptions{LogLines: d.Evidence.LogLines, LogBytes: d.Evidence.LogBytes, Redact: d.Evidence.Redactions()}}
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
	listeners, err := listen(o.Web, o.Listener)
	if err != nil {
		o.Logger.Error("cannot serve HTTP; stopping", "err", err)
		return err
	}
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	var docker *containers.Client
	if o.Config.Targets.Docker.Host != "" {
		d, err := dockerClient(o.Config)
		if err != nil {
			return err
		}
		defer d.Close()
		docker = d
	}
	exp, err := buildExporter(o.Config, o.Flags, nil, docker, nil, o.Logger)
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
	// The landing page every Prometheus exporter has.
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "selfheal exporter",
		Description: "System, NVIDIA GPU and Docker container metrics for selfheal's alert rules",
		Version:     version.Info(),
		Links:       []web.LandingLinks{{Address: "metrics", Text: "Metrics"}, {Address: "-/healthy", Text: "Health"}},
	})
	if err != nil {
		return err
	}
	r.Handle("GET /{$}", landing)
	err = serveHTTP(ctx, r, o.Web, listeners, o.Logger)
	cancel()
	<-done
	return err
}
