//go:build !cgo

package gpu

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Library stands for NVML, which a build without cgo cannot load.
type Library interface{}

// Open returns nothing: this build cannot load NVML.
func Open(string) Library { return nil }

// Collector reports no GPU: this build has no GPU support.
type Collector struct{}

// New returns a collector that reports no GPU, and says why once.
func New(_ Library, logger *slog.Logger, _ Options) *Collector {
	logger.Info("this selfheal was built without GPU support (CGO_ENABLED=0): the gpu collector reports no GPUs")
	return &Collector{}
}

// Update implements exporter.Collector: no GPU series.
func (*Collector) Update(chan<- prometheus.Metric) error { return nil }
