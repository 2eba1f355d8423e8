// Package server assembles `selfheal serve`: the webhook, the engine, the
// Docker adapter and the HTTP endpoints on one listener, with a lifecycle
// tests can start and stop.
package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/exporter-toolkit/web"

	"github.com/selfheal/selfheal/exporter"
	"github.com/selfheal/selfheal/exporter/gpu"
	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/actions"
	"github.com/selfheal/selfheal/remediator/gpuctl"
	"github.com/selfheal/selfheal/remediator/handoff"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
	"github.com/selfheal/selfheal/remediator/webhook"
)

// Options configures Run.
type Options struct {
	Config *policy.Config
	// Web holds the listen addresses and the TLS/auth web config file.
	Web *web.FlagConfig
	// Listener, if set, is served instead of Web's addresses (tests).
	Listener net.Listener
	Logger   *slog.Logger
	// ExporterFlags, when set, runs the built-in exporter in the process.
	ExporterFlags *exporter.Flags
	// MigrateRetry is how often a failed start-up migration is retried.
	MigrateRetry time.Duration
	// ShutdownTimeout bounds how long a stop waits for actions in flight;
	// past it selfheal exits and the actions are recorded as interrupted,
	// and followed up, by the next start or another replica. Zero waits for
	// each action's own timeout.
	ShutdownTimeout time.Duration
	// ProcPath is the host's /proc (default /proc).
	ProcPath string
	// BootID overrides the kernel's boot ID (tests of reboot validation).
	BootID func() (string, error)
	// GPUs overrides NVML for the GPU actions (tests use go-nvml's mock).
	GPUs actions.GPUs
	// Reload, when set, re-reads the configuration: on SIGHUP, and on
	// POST /-/reload when EnableLifecycle is set.
	Reload          func() (*policy.Config, error)
	EnableLifecycle bool
	// NVML, when set, replaces the driver's library for the gpu collector
	// and, unless GPUs is set, the GPU actions (go-nvml's mock).
	NVML NVML
	// WebhookOnly runs the webhook alone (a fleet's ingest replica): no
	// engine, no Docker, no exporter.
	WebhookOnly bool
}

// NVML is what the gpu collector and the GPU actions need of the NVIDIA
// management library; go-nvml's nvml.New() and its mocks have it.
type NVML interface {
	gpu.Library
	gpuctl.Library
}

// Run serves until ctx ends. The database may be down at start: selfheal
// then answers the webhook with 503, reports not ready, runs nothing, and
// keeps trying to migrate; the engine starts once the schema is current.
func Run(ctx context.Context, o Options) error {
	cfg, log := o.Config, o.Logger
	creds, warnings, err := Credentials(cfg)
	if err != nil {
		return err
	}
	for _, w := range append(warnings, cfg.Advice(action.ThisHost())...) {
		log.Warn(w)
	}
	if creds == (webhook.Credentials{}) {
		log.Warn("the webhook accepts requests without credentials (webhook.allow_unauthenticated)")
	}
	if cfg.DatabaseURL == "" {
		return errors.New("no database: set database_url or SELFHEAL_DATABASE_URL")
	}
	// The listen addresses first, before anything else starts: a taken
	// port is the one error said, not one among the database's.
	listeners, err := listen(o.Web, o.Listener)
	if err != nil {
		log.Error("cannot serve HTTP; stopping", "err", err)
		return err
	}
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	// Two pools: the engine's workers hold connections while actions run, and
	// must never leave the webhook waiting for one.
	engineOpts := store.Options{MaxConns: int32(2*cfg.Engine.Workers + 2), ApplicationName: "selfheal-engine"}
	ingestOpts := store.Options{MaxConns: 12, MinConns: 2, ApplicationName: "selfheal-webhook"}
	switch {
	case o.WebhookOnly:
		// No engine: the pool only migrates (and applies retention).
		engineOpts = store.Options{MaxConns: 2, ApplicationName: "selfheal-migrate"}
	case cfg.Node.Fleet:
		// Every node's connections count on the central server: a small,
		// warm pool for the engine, none kept idle for the webhook.
		engineOpts = store.NodeOptions(cfg.Engine.Workers, "selfheal-engine")
		ingestOpts.MinConns = 0
	}
	st, err := store.Open(ctx, cfg.DatabaseURL, engineOpts)
	if err != nil {
		return err
	}
	// Past the shutdown timeout, workers still hold connections for their
	// actions: closing the pools would wait for them, so they are left to
	// the process's exit.
	abandoned := false
	defer func() {
		if !abandoned {
			st.Close()
		}
	}()
	silentAfter := time.Duration(0)
	if cfg.Node.Fleet {
		silentAfter = cfg.Node.SilentAfter.D()
	}
	ingestOpts.NodeSilentAfter = silentAfter
	ingest, err := store.Open(ctx, cfg.DatabaseURL, ingestOpts)
	if err != nil {
		return err
	}
	defer ingest.Close()

	reg := newRegistry()
	var waker *store.NodeWaker
	if cfg.Node.Fleet {
		waker = store.NewNodeWaker(ingest, store.WakeInterval, func(err error) {
			log.Debug("could not wake the nodes' engines; they poll", "err", err)
		})
	}
	// The configuration in force: a reload swaps it (and the engine's).
	var current atomic.Pointer[policy.Config]
	current.Store(cfg)
	config := current.Load
	var side *engineSide
	if !o.WebhookOnly {
		if side, err = startEngineSide(o, st, ingest, reg); err != nil {
			return err
		}
		defer side.docker.Close()
	}
	hook := webhook.New(webhook.Options{
		Credentials:    creds,
		MaxBodyBytes:   cfg.Webhook.MaxBodyBytes,
		PersistTimeout: cfg.Webhook.PersistTimeout.D(),
		ReopenAfter:    cfg.Engine.ReopenAfter.D(),
		// The policy in force now: a reload changes what new alerts match.
		Match: func(l map[string]string) string {
			if l["source"] == handoff.Source {
				return "" // selfheal's own hand-off alerts: for people, never acted on
			}
			if r := config().Match(l); r != nil {
				return r.Name
			}
			return ""
		},
		Critical: func(l map[string]string) bool { return config().IsCriticalAlert(l) },
		NotHere:  func(l map[string]string) string { return config().Node.NotQueued(l) },
		Node:     func(l map[string]string) string { return config().Node.Of(l) },
		Store:    ingest,
		Wake: func(nodes []string) {
			if side != nil {
				side.eng.Wake()
			}
			if waker != nil {
				waker.Wake(nodes) // other nodes' engines listen; a lost wake-up costs a poll
			}
		},
		Logger:     log.With("component", "webhook"),
		Registerer: reg,
	})
	if cfg.Node.Fleet {
		reg.MustRegister(nodesCollector{st: ingest, silentAfter: silentAfter, log: log.With("component", "nodes")})
	}

	// Ready: the database is reachable and migrated, and the Docker Engine
	// selfheal acts through answers (a webhook-only replica acts on none).
	ready := func(ctx context.Context) error {
		if err := ingest.Ready(ctx); err != nil {
			return err
		}
		if side == nil {
			return nil
		}
		return side.docker.Ping(ctx)
	}
	r := newRouter(reg, ready, log)
	r.Handle("POST /api/v1/webhook", hook)
	r.Handle("GET /{$}", statusPage{st: ingest, config: config, log: log.With("component", "status")})
	var reload *reloader
	if o.Reload != nil {
		reload = newReloader(o.Reload, func(c *policy.Config) error {
			if changed := config().StartOnlyChanges(c); len(changed) > 0 {
				return fmt.Errorf("%s take effect only at start: restart selfheal to change them (nothing of the file was put in force)",
					strings.Join(changed, ", "))
			}
			if side != nil {
				if err := side.eng.CheckReload(c); err != nil {
					return err
				}
				// What selfheal may touch first: from here on no call
				// touches what the new rule leaves out, queued jobs' too.
				side.docker.Reconfigure(dockerOptions(c))
				if err := side.eng.Reload(c); err != nil {
					return err
				}
			}
			current.Store(c)
			return nil
		}, log.With("component", "reload"), reg)
		if o.EnableLifecycle {
			r.Handle("POST /-/reload", reload)
			r.Handle("PUT /-/reload", reload)
		}
	}
	if reload == nil || !o.EnableLifecycle {
		// As Prometheus answers: the endpoint is there, switched off.
		off := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "Lifecycle API is not enabled: start selfheal with --web.enable-lifecycle, or send it SIGHUP", http.StatusForbidden)
		})
		r.Handle("POST /-/reload", off)
		r.Handle("PUT /-/reload", off)
	}

	var wg sync.WaitGroup
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	// A fault that must stop selfheal (a fleet node on credentials that are
	// not its own) ends serving, and Run returns it.
	httpCtx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	wg.Go(func() {
		if err := migrateUntilDone(runCtx, st, o.MigrateRetry, log); err != nil {
			return
		}
		if side == nil {
			log.Info("webhook-only replica: alerts are stored and queued for the nodes' engines; nothing is acted on here")
			retainUnowned(runCtx, ingest, cfg.Engine.RetentionInterval.D(), log)
			return
		}
		if err := side.run(runCtx, o, st, &wg, log); err != nil {
			fail(err)
		}
	})
	if side != nil && side.exp != nil {
		wg.Go(func() { side.exp.Run(runCtx) })
	}
	if reload != nil {
		wg.Go(func() { reload.run(runCtx) })
	}
	if waker != nil {
		wg.Go(func() { waker.Run(runCtx) })
	}
	err = serveHTTP(httpCtx, r, o.Web, listeners, log)
	if cause := context.Cause(httpCtx); err == nil && ctx.Err() == nil && cause != nil {
		err = cause
	}
	log.Info("shutting down; waiting for actions in flight", "timeout", o.ShutdownTimeout)
	stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	var bound <-chan time.Time
	if o.ShutdownTimeout > 0 {
		t := time.NewTimer(o.ShutdownTimeout)
		defer t.Stop()
		bound = t.C
	}
	select {
	case <-done:
	case <-bound:
		abandoned = true
		log.Warn("shutdown timeout: exiting with actions in flight; the next start (or another replica) records them as interrupted and goes on",
			"timeout", o.ShutdownTimeout)
		if side != nil {
			actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			side.eng.Abandon(actx)
			cancel()
		}
	}
	return err
}

func migrateUntilDone(ctx context.Context, st *store.Store, retry time.Duration, log *slog.Logger) error {
	if retry <= 0 {
		retry = 5 * time.Second
	}
	for {
		n, err := st.Migrate(ctx)
		if err == nil {
			log.Info("database schema is current", "migrations_applied", n)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err() // stopping: not a database problem
		}
		log.Error("cannot migrate the database; nothing will run until it can", "err", err, "retry_in", retry)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retry):
		}
	}
}

// Credentials returns what the webhook requires: the token from
// SELFHEAL_WEBHOOK_TOKEN (already in cfg.Webhook.Token) or the token file,
// else basic auth, and warnings about how the secret is kept. A webhook
// with none is an error unless allow_unauthenticated is set.
func Credentials(cfg *policy.Config) (webhook.Credentials, []string, error) {
	w := cfg.Webhook
	var warnings []string
	switch {
	case w.Token != "":
		tok, err := webhook.Secret(policy.EnvWebhookToken, w.Token)
		return webhook.Credentials{BearerToken: tok}, nil, err
	case w.BearerTokenFile != "":
		tok, warn, err := webhook.ReadSecretFile(w.BearerTokenFile)
		if errors.Is(err, fs.ErrNotExist) {
			return webhook.Credentials{}, nil, fmt.Errorf("webhook.bearer_token_file: %w: write the token Alertmanager sends there, or set %s",
				err, policy.EnvWebhookToken)
		}
		if err != nil {
			return webhook.Credentials{}, nil, fmt.Errorf("webhook.bearer_token_file: %w", err)
		}
		if warn != "" {
			warnings = append(warnings, "webhook.bearer_token_file: "+warn)
		}
		return webhook.Credentials{BearerToken: tok}, warnings, nil
	case w.BasicAuth != nil:
		pw, warn, err := webhook.ReadSecretFile(w.BasicAuth.PasswordFile)
		if err != nil {
			return webhook.Credentials{}, nil, fmt.Errorf("webhook.basic_auth.password_file: %w", err)
		}
		if warn != "" {
			warnings = append(warnings, "webhook.basic_auth.password_file: "+warn)
		}
		return webhook.Credentials{Username: w.BasicAuth.Username, Password: pw}, warnings, nil
	case w.AllowUnauthenticated:
		return webhook.Credentials{}, nil, nil
	}
	return webhook.Credentials{}, nil, errors.New("webhook: no credentials configured: set bearer_token_file, basic_auth or SELFHEAL_WEBHOOK_TOKEN (or allow_unauthenticated: true)")
}

// settleReboots completes a reboot selfheal asked for before the engine
// could call it interrupted, and checks the services in the background once
// they had time to start.
func settleReboots(ctx context.Context, v actions.RebootValidator, wg *sync.WaitGroup, log *slog.Logger) {
	rebooted, err := v.Settle(ctx)
	if err != nil {
		log.Error("cannot check for a finished reboot", "err", err)
	}
	if len(rebooted) == 0 {
		return
	}
	log.Info("selfheal rebooted this host; validating services soon", "delay", v.Delay)
	wg.Go(func() {
		if err := v.Validate(ctx, rebooted); err != nil && ctx.Err() == nil {
			log.Error("reboot validation failed", "err", err)
		}
	})
}

// retainUnowned applies retention from a webhook-only replica, for the
// rows no node's engine deletes (alerts that named no node). On the
// webhook's own role it may delete nothing: it says so once and stops.
func retainUnowned(ctx context.Context, st *store.Store, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := st.ApplyRetention(ctx); err != nil {
			if store.PermissionDenied(err) {
				log.Info("retention is left to a replica on the owner's credentials: this role may not delete", "err", err)
				return
			}
			log.Warn("retention failed", "err", err)
		}
	}
}

// fastPathConfigured reports whether any remediation has a fast path.
func fastPathConfigured(cfg *policy.Config) bool {
	for _, r := range cfg.Remediations {
		if r.FastPath != nil {
			return true
		}
	}
	return false
}
