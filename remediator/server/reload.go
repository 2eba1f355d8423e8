package server

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/policy"
)

// reloader re-reads the configuration on SIGHUP and, with
// --web.enable-lifecycle, on POST /-/reload, as Prometheus and Alertmanager
// do. A file that does not load keeps the running configuration, and says
// why; a good one is put in force for the jobs decided from then on.
type reloader struct {
	load    func() (*policy.Config, error)
	apply   func(*policy.Config) error
	log     *slog.Logger
	success prometheus.Gauge
	when    prometheus.Gauge
	reqs    chan chan error
}

func newReloader(load func() (*policy.Config, error), apply func(*policy.Config) error, log *slog.Logger, reg prometheus.Registerer) *reloader {
	r := &reloader{load: load, apply: apply, log: log, reqs: make(chan chan error),
		success: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "selfheal_config_last_reload_successful",
			Help: "Whether the last configuration reload succeeded (1) or kept the running configuration (0).",
		}),
		when: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "selfheal_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully (at start, or by a reload).",
		}),
	}
	r.success.Set(1)
	r.when.SetToCurrentTime()
	reg.MustRegister(r.success, r.when)
	return r
}

// run serves reload requests, and SIGHUP, until ctx ends.
func (r *reloader) run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_ = r.reload()
		case done := <-r.reqs:
			done <- r.reload()
		}
	}
}

func (r *reloader) reload() error {
	cfg, err := r.load()
	if err == nil {
		err = r.apply(cfg)
	}
	if err != nil {
		r.success.Set(0)
		r.log.Error("configuration not reloaded; the running one stays in force", "err", err)
		return err
	}
	r.success.Set(1)
	r.when.SetToCurrentTime()
	r.log.Info("configuration reloaded", "remediations", len(cfg.Remediations), "fingerprint", cfg.Fingerprint())
	return nil
}

// ServeHTTP serves POST /-/reload: 200 once reloaded, 500 with the reason
// when the file did not load (the running configuration stays).
func (r *reloader) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost && req.Method != http.MethodPut {
		w.Header().Set("Allow", "POST, PUT")
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	done := make(chan error, 1)
	select {
	case r.reqs <- done:
	case <-req.Context().Done():
		return
	case <-time.After(10 * time.Second):
		http.Error(w, "reload busy", http.StatusServiceUnavailable)
		return
	}
	if err := <-done; err != nil {
		http.Error(w, "configuration not reloaded: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Write([]byte("OK\n")) //nolint:errcheck
}
