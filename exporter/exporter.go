// Package exporter is selfheal's built-in exporter: collectors for the host
// (system), NVIDIA GPUs (gpu), Docker containers (docker) and configured
// endpoints (probe), so a host needs no other exporter. Like node_exporter,
// every collector reports whether its last scrape worked and how long it
// took, and can be switched off with --no-collector.<name>.
package exporter

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector is one part of the exporter.
type Collector interface {
	// Update sends the collector's metrics. An error marks the scrape of
	// this collector failed; metrics already sent are still exposed.
	Update(ch chan<- prometheus.Metric) error
}

// Runner is a collector with background work (an event stream, say) that
// runs until ctx ends.
type Runner interface {
	Run(ctx context.Context)
}

var (
	successDesc = prometheus.NewDesc("selfheal_exporter_collector_success",
		"Whether the collector's last scrape succeeded (1) or failed (0).", []string{"collector"}, nil)
	durationDesc = prometheus.NewDesc("selfheal_exporter_collector_duration_seconds",
		"How long the collector's last scrape took.", []string{"collector"}, nil)
)

// Exporter runs its collectors concurrently on every scrape.
type Exporter struct {
	collectors map[string]Collector
	logger     *slog.Logger
}

// New returns an Exporter over the named collectors.
func New(collectors map[string]Collector, logger *slog.Logger) *Exporter {
	return &Exporter{collectors: collectors, logger: logger}
}

// Names returns the collectors' names, sorted.
func (e *Exporter) Names() []string {
	var n []string
	for name := range e.collectors {
		n = append(n, name)
	}
	sort.Strings(n)
	return n
}

// Run runs the background work of every collector that has some, until ctx
// ends.
func (e *Exporter) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, c := range e.collectors {
		if r, ok := c.(Runner); ok {
			wg.Go(func() { r.Run(ctx) })
		}
	}
	wg.Wait()
}

// Describe implements prometheus.Collector. It describes nothing, which
// makes the exporter an unchecked collector: what it sends depends on the
// host (how many GPUs, which containers, which sensors).
func (e *Exporter) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (e *Exporter) Collect(ch chan<- prometheus.Metric) {
	var wg sync.WaitGroup
	for name, c := range e.collectors {
		wg.Go(func() {
			start := time.Now()
			err := c.Update(ch)
			ok := 1.0
			if err != nil {
				ok = 0
				e.logger.Debug("collector failed", "collector", name, "err", err)
			}
			ch <- prometheus.MustNewConstMetric(durationDesc, prometheus.GaugeValue, time.Since(start).Seconds(), name)
			ch <- prometheus.MustNewConstMetric(successDesc, prometheus.GaugeValue, ok, name)
		})
	}
	wg.Wait()
}
