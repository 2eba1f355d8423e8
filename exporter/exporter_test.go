//go:build cgo

package exporter_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/selfheal/selfheal/exporter"
	"github.com/selfheal/selfheal/exporter/gpu"
	"github.com/selfheal/selfheal/exporter/gpu/gputest"
)

// TestMetricsAnswerWhileNVMLHangs: /metrics, served as selfheal serves
// it, answers while an NVML call of one GPU hangs, and says which GPU did
// not answer and that the gpu collector failed.
func TestMetricsAnswerWhileNVMLHangs(t *testing.T) {
	f, err := gputest.Load("gpu/testdata/h100-nvml_idle.json")
	if err != nil {
		t.Fatal(err)
	}
	s := gputest.NewServer(f, 2)
	blocked := make(chan struct{})
	defer close(blocked)
	s.Device(1).GetPowerUsageFunc = func() (uint32, nvml.Return) { <-blocked; return 0, nvml.SUCCESS }
	logger := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	reg.MustRegister(exporter.New(map[string]exporter.Collector{"gpu": gpu.New(s, logger, gpu.Options{Timeout: 300 * time.Millisecond})}, logger))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	client := &http.Client{Timeout: 10 * time.Second} // far beyond the collector's timeout
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatalf("/metrics while NVML hangs: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s, %v", resp.Status, err)
	}
	for _, want := range []string{
		`selfheal_gpu_up{gpu="0",uuid="GPU-00000000-0000-0000-0000-000000000000"} 1`,
		`selfheal_gpu_up{gpu="1",uuid="GPU-00000000-0000-0000-0000-000000000001"} 0`,
		`selfheal_exporter_collector_success{collector="gpu"} 0`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("no %s in:\n%s", want, body)
		}
	}
}
