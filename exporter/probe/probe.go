// Package probe checks configured endpoints on every scrape — an HTTP
// health URL (object storage, say), a TCP port, a PostgreSQL database — and
// reports each as selfheal_probe_success and selfheal_probe_duration_seconds.
// These feed the "database lost" and "object store unhealthy" alerts. A
// failing probe is a measurement, not a failure of the collector.
package probe

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Types of probe.
const (
	HTTP     = "http"
	TCP      = "tcp"
	Postgres = "postgres"
)

// DefaultTimeout bounds a probe that sets none.
const DefaultTimeout = 2 * time.Second

// Probe is one endpoint to check.
type Probe struct {
	Name string
	Type string
	// Target is a URL (http), host:port (tcp) or connection string (postgres).
	Target  string
	Timeout time.Duration
}

// Collector is the probe collector.
type Collector struct {
	probes   []Probe
	client   *http.Client
	success  *prometheus.Desc
	duration *prometheus.Desc
}

// New returns a probe collector.
func New(probes []Probe) (*Collector, error) {
	for _, p := range probes {
		switch p.Type {
		case HTTP, TCP, Postgres:
		default:
			return nil, fmt.Errorf("probe %q: unknown type %q (http, tcp or postgres)", p.Name, p.Type)
		}
	}
	return &Collector{
		probes: probes,
		client: &http.Client{
			// A health endpoint that redirects is followed a little way only.
			CheckRedirect: func(_ *http.Request, via []*http.Request) error {
				if len(via) >= 3 {
					return http.ErrUseLastResponse
				}
				return nil
			},
		},
		success: prometheus.NewDesc("selfheal_probe_success",
			"Whether the probe succeeded (1) or not (0) on this scrape.", []string{"probe", "type"}, nil),
		duration: prometheus.NewDesc("selfheal_probe_duration_seconds",
			"How long the probe took.", []string{"probe", "type"}, nil),
	}, nil
}

// Update implements exporter.Collector: every probe, concurrently.
func (c *Collector) Update(ch chan<- prometheus.Metric) error {
	var wg sync.WaitGroup
	for _, p := range c.probes {
		wg.Go(func() {
			timeout := p.Timeout
			if timeout <= 0 {
				timeout = DefaultTimeout
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			ok := c.check(ctx, p) == nil
			ch <- prometheus.MustNewConstMetric(c.duration, prometheus.GaugeValue, time.Since(start).Seconds(), p.Name, p.Type)
			ch <- prometheus.MustNewConstMetric(c.success, prometheus.GaugeValue, boolFloat(ok), p.Name, p.Type)
		})
	}
	wg.Wait()
	return nil
}

// Check runs one probe and says why it failed.
func (c *Collector) Check(ctx context.Context, p Probe) error { return c.check(ctx, p) }

func (c *Collector) check(ctx context.Context, p Probe) error {
	switch p.Type {
	case HTTP:
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.Target, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "selfheal-probe")
		resp, err := c.client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	case TCP:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", p.Target)
		if err != nil {
			return err
		}
		return conn.Close()
	case Postgres:
		conn, err := pgx.Connect(ctx, p.Target)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var one int
		return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	}
	return fmt.Errorf("unknown probe type %q", p.Type)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
