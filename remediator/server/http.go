package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
)

// newRegistry returns a registry with the process, Go and build metrics.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		versioncollector.NewCollector("selfheal"),
	)
	return reg
}

// newRouter returns the endpoints every selfheal process has: /metrics,
// /-/healthy, /-/ready (asking ready) and /debug/pprof/. Routes carry their
// methods; another method is answered 405 with an Allow header.
func newRouter(reg *prometheus.Registry, ready func(context.Context) error, log *slog.Logger) *http.ServeMux {
	r := http.NewServeMux()
	// /metrics is served uncompressed. A page is tens of kilobytes, scraped by
	// a Prometheus on the same host or network; gzip would save little there,
	// while each compressed scrape allocates a ~1 MB compressor that the heap
	// then keeps room for: about 2 MB of RSS in a process meant to stay under 30.
	r.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError), ErrorHandling: promhttp.ContinueOnError,
		DisableCompression: true}))
	r.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("OK\n")) }) //nolint:errcheck
	r.HandleFunc("GET /-/ready", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("OK\n")) //nolint:errcheck
	})
	// Profiling, as Prometheus and Alertmanager offer it.
	r.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	r.HandleFunc("/debug/pprof/profile", pprof.Profile)
	r.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	r.HandleFunc("/debug/pprof/trace", pprof.Trace)
	r.HandleFunc("/debug/pprof/", pprof.Index)
	return r
}

// webConfig is webCfg, or the defaults when there is none (tests).
func webConfig(webCfg *web.FlagConfig) *web.FlagConfig {
	if webCfg == nil {
		noFile, noSocket := "", false
		webCfg = &web.FlagConfig{WebListenAddresses: &[]string{":9595"}, WebConfigFile: &noFile, WebSystemdSocket: &noSocket}
	}
	return webCfg
}

// listen binds webCfg's TCP addresses, or returns l when set (tests). It
// returns none where exporter-toolkit must listen itself (systemd socket
// activation, vsock): serveHTTP then does.
func listen(webCfg *web.FlagConfig, l net.Listener) ([]net.Listener, error) {
	if l != nil {
		return []net.Listener{l}, nil
	}
	webCfg = webConfig(webCfg)
	if webCfg.WebSystemdSocket != nil && *webCfg.WebSystemdSocket {
		return nil, nil
	}
	var ls []net.Listener
	for _, addr := range *webCfg.WebListenAddresses {
		if strings.HasPrefix(addr, "vsock://") {
			for _, l := range ls {
				l.Close()
			}
			return nil, nil
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// serveHTTP serves h until ctx ends, on listeners if any, else on webCfg's
// addresses (with its TLS and auth settings), then shuts down gracefully.
func serveHTTP(ctx context.Context, h http.Handler, webCfg *web.FlagConfig, listeners []net.Listener, log *slog.Logger) error {
	webCfg = webConfig(webCfg)
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	serveErr := make(chan error, 1)
	go func() {
		if len(listeners) > 0 {
			serveErr <- web.ServeMultiple(listeners, srv, webCfg, log)
			return
		}
		serveErr <- web.ListenAndServe(srv, webCfg, log)
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else if err != nil {
			// First, before the shutdown it causes: a taken port, say.
			log.Error("cannot serve HTTP; stopping", "err", err)
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutdownCtx)
	return err
}
