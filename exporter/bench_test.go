package exporter_test

// Collector costs for `make bench`: each collector alone and a full scrape
// (system on this host, 8 mock H100s, 100 real containers) gathered and
// encoded as /metrics does.

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/selfheal/selfheal/exporter"
	"github.com/selfheal/selfheal/exporter/docker"
	"github.com/selfheal/selfheal/exporter/gpu"
	"github.com/selfheal/selfheal/exporter/gpu/gputest"
	"github.com/selfheal/selfheal/exporter/system"
	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/remediator/optin"
)

func discard(c exporter.Collector, b *testing.B) {
	ch := make(chan prometheus.Metric, 8192)
	for b.Loop() {
		if err := c.Update(ch); err != nil {
			b.Fatal(err)
		}
		for len(ch) > 0 {
			<-ch
		}
	}
}

func gpuCollector(b *testing.B) *gpu.Collector {
	f, err := gputest.Load("gpu/testdata/h100-nvml_idle.json")
	if err != nil {
		b.Fatal(err)
	}
	return gpu.New(gputest.NewServer(f, 8), slog.New(slog.DiscardHandler), gpu.Options{})
}

// dockerCollector starts a docker collector over n stopped test containers
// of its own label and waits until it sees them all.
func dockerCollector(b *testing.B, n int) *docker.Collector {
	api, _ := dockertest.Client(b)
	key := dockertest.UniqueName("selfheal.bench")
	for range n {
		dockertest.Run(b, dockertest.Spec{Labels: map[string]string{key: "yes"}, Stopped: true})
	}
	c := docker.New(api, docker.Options{OptIn: optin.NewCurrent(optin.New(key+"=yes", nil))}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go c.Run(ctx)
	dockertest.WaitFor(b, 60*time.Second, "all containers seen", func() bool {
		ch := make(chan prometheus.Metric, 8192)
		if c.Update(ch) != nil {
			return false
		}
		return len(ch) >= 4*n
	})
	return c
}

func BenchmarkSystemCollector(b *testing.B) {
	c, err := system.New(system.Options{})
	if err != nil {
		b.Fatal(err)
	}
	discard(c, b)
}

func BenchmarkGPUCollector8(b *testing.B) { discard(gpuCollector(b), b) }

func BenchmarkDockerCollector100(b *testing.B) { discard(dockerCollector(b, 100), b) }

// BenchmarkFullScrape gathers and encodes everything, as a Prometheus
// scrape of /metrics would (without the HTTP round trip).
func BenchmarkFullScrape(b *testing.B) {
	sys, err := system.New(system.Options{})
	if err != nil {
		b.Fatal(err)
	}
	e := exporter.New(map[string]exporter.Collector{
		"system": sys, "gpu": gpuCollector(b), "docker": dockerCollector(b, 100),
	}, slog.New(slog.DiscardHandler))
	reg := prometheus.NewRegistry()
	reg.MustRegister(e)
	var buf bytes.Buffer
	series := 0
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		buf.Reset()
		enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
		series = 0
		for _, mf := range mfs {
			series += len(mf.Metric)
			if err := enc.Encode(mf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(series), "series")
	b.ReportMetric(float64(buf.Len()), "bytes")
}
