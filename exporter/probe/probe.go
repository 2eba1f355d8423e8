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
	"sort"
	"strings"
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

// probers is every probe type and how it checks its target. A new probe
// type is one row here.
var probers = map[string]func(c *Collector, ctx context.Context, target string) error{
	HTTP:     (*Collector).checkHTTP,
	TCP:      func(_ *Collector, ctx context.Context, target string) error { return checkTCP(ctx, target) },
	Postgres: func(_ *Collector, ctx context.Context, target string) error { return checkPostgres(ctx, target) },
}

// Types returns the probe types, sorted.
func Types() []string {
	t := make([]string, 0, len(probers))
	for k := range probers {
		t = append(t, k)
	}
	sort.Strings(t)
	return t
}

// DefaultTimeout bounds a probe that sets none.
const DefaultTimeout = 2 * time.Second

// Probe is one endpoint to check, as the configuration's exporter.probes
// lists it.
type Probe struct {
	Name string `yaml:"name"`
	// Type is one of Types.
	Type string `yaml:"type"`
	// Target is a URL (http), host:port (tcp) or connection string (postgres).
	Target string `yaml:"target"`
	// Timeout bounds one check; zero means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
}

// Problems returns what is wrong with the probe, one message each,
// beginning with the key it is about.
func (p Probe) Problems() []string {
	var probs []string
	if p.Name == "" {
		probs = append(probs, "name: must be set")
	}
	if _, ok := probers[p.Type]; !ok {
		probs = append(probs, fmt.Sprintf("type: %q is not one of %s", p.Type, strings.Join(Types(), ", ")))
	}
	if p.Target == "" {
		probs = append(probs, "target: must be set")
	}
	if p.Timeout < 0 {
		probs = append(probs, "timeout: must not be negative")
	}
	return probs
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
		if probs := p.Problems(); len(probs) > 0 {
			return nil, fmt.Errorf("probe %q: %s", p.Name, strings.Join(probs, "; "))
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
	check, ok := probers[p.Type]
	if !ok {
		return fmt.Errorf("unknown probe type %q", p.Type)
	}
	return check(c, ctx, p.Target)
}

func (c *Collector) checkHTTP(ctx context.Context, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
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
}

func checkTCP(ctx context.Context, target string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return err
	}
	return conn.Close()
}

func checkPostgres(ctx context.Context, target string) error {
	conn, err := pgx.Connect(ctx, target)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
