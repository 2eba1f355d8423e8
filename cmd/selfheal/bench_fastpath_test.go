package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/internal/dockertest"
)

// isCollectorInspect: the docker collector inspects a container by its ID
// after each event, beside the fast path rather than on its way.
func isCollectorInspect(line, id string) bool {
	path := strings.Fields(line + " ")[1]
	return strings.HasSuffix(path, "/containers/"+id+"/json")
}

// BenchmarkFastPathOwnCost measures selfheal's own share of a fast-path
// heal: from the Docker Engine's die event (its own timestamp) to
// selfheal's restart request reaching the Engine, seen on a socket proxy
// between them, over SELFHEAL_BENCH_KILLS (20) crashes of one opted-in
// container, each a new outage. selfheal runs on a durable PostgreSQL with
// Alertmanager beside it (the fast path asks it for silences first). The
// parts: die → the occurrence stored (alert_occurrences.first_received_at),
// the occurrence → the restart request; and, for the median crash, every
// request selfheal sent the Engine in between.
func BenchmarkFastPathOwnCost(b *testing.B) {
	kills := envInt("SELFHEAL_BENCH_KILLS", 20)
	proxy := newDockerProxy(b)
	proxy.requests = make(chan proxied, 4096)
	var restartPosts atomic.Int64
	proxy.restarts = make(chan time.Time, 1)
	go func() {
		for range proxy.restarts {
			restartPosts.Add(1)
		}
	}()
	s := newStack(b, dockertest.UniqueName("selfheal.fastpath"), true)
	raw, err := os.ReadFile("../../deploy/local/alertmanager.yml")
	if err != nil {
		b.Fatal(err)
	}
	tokenFile := filepath.Join(b.TempDir(), "token")
	s.launch(b, files{
		Selfheal: fmt.Sprintf(`
targets:
  docker:
    require_label: %s=true
alertmanager: {url: 'http://%s'}
engine: {storm_brake: {max_actions: %d}}
remediations:
  - name: crash
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart]
    max_failures: 0   # crashes on purpose: not a crash loop to escalate
    verify: {timeout: 10s, stable_for: 0s}
    fast_path: {on: die}
`, s.labelKey(), s.AM, 2*kills+5),
		Alertmanager: strings.NewReplacer("http://localhost:9595/api/v1/webhook", "http://"+s.Selfheal+"/api/v1/webhook",
			"../../.run/token", tokenFile).Replace(string(raw)),
		Env:  []string{"DOCKER_HOST=unix://" + proxy.path},
		Args: []string{"--log.level=warn", "--no-collector.gpu"},
	}, tokenFile)
	name := dockertest.Run(b, dockertest.Spec{Name: dockertest.UniqueName("fastpath"), Labels: s.Label})
	c, _ := dockertest.Client(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dies := make(chan time.Time, 1)
	stream := c.Events(ctx, client.EventsListOptions{Filters: make(client.Filters).Add("container", name).Add("event", "die")})
	go func() {
		for m := range stream.Messages {
			if m.Action == events.ActionDie {
				dies <- time.Unix(0, m.TimeNano)
			}
		}
	}()

	type crash struct {
		total, stored, waited time.Duration
		requests              []string
	}
	var crashes []crash
	host := readHostCPU(b)
	for i := range kills {
		info, err := inspect(c, name)
		if err != nil || info.State == nil || !info.State.Running {
			b.Fatalf("%s is not running: %v", name, err)
		}
		for len(proxy.requests) > 0 {
			<-proxy.requests
		}
		if err := syscall.Kill(info.State.Pid, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		var died time.Time
		select {
		case died = <-dies:
		case <-time.After(10 * time.Second):
			b.Fatalf("crash %d: no die event", i)
		}
		var cr crash
		for cr.total == 0 {
			select {
			case r := <-proxy.requests:
				if r.answered.IsZero() { // the restart, as it was sent
					cr.total = r.at.Sub(died)
					cr.requests = append(cr.requests, fmt.Sprintf("%+7.1f ms %s", ms(r.at.Sub(died)), r.line))
					break
				}
				cr.requests = append(cr.requests, fmt.Sprintf("%+7.1f ms %s (answered after %.1f ms)", ms(r.at.Sub(died)), r.line, ms(r.answered.Sub(r.at))))
				// The engine's requests before its restart (not the docker
				// collector's own inspect by ID, made beside them) are
				// waited for one after the other: that time is the Engine's.
				if !isCollectorInspect(r.line, info.ID) {
					cr.waited += r.answered.Sub(r.at)
				}
			case <-time.After(10 * time.Second):
				b.Fatalf("crash %d: no restart request within 10s; requests: %v", i, cr.requests)
			}
		}
		dockertest.WaitFor(b, 20*time.Second, "the action finished", func() bool {
			return queryInt(b, s.DB, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 0 &&
				queryInt(b, s.DB, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued'`) == 0 &&
				running(b, name)
		})
		var stored time.Time
		if err := s.DB.QueryRow(context.Background(), `SELECT first_received_at FROM alert_occurrences
			WHERE labels->>'selfheal_target' = $1 ORDER BY id DESC LIMIT 1`, name).Scan(&stored); err != nil {
			b.Fatal(err)
		}
		cr.stored = stored.Sub(died)
		crashes = append(crashes, cr)
	}
	if n := queryInt(b, s.DB, `SELECT count(*) FROM recovery_actions WHERE service_name = $1 AND status = 'succeeded'`, name); n != kills {
		b.Fatalf("%d restarts succeeded for %d crashes", n, kills)
	}
	if n := restartPosts.Load(); n != int64(kills) {
		b.Fatalf("%d restart requests reached the Docker Engine for %d crashes", n, kills)
	}
	sort.Slice(crashes, func(i, j int) bool { return crashes[i].total < crashes[j].total })
	q := func(p float64, f func(crash) time.Duration) float64 {
		v := make([]time.Duration, len(crashes))
		for i, cr := range crashes {
			v[i] = f(cr)
		}
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		return ms(v[int(float64(len(v)-1)*p)])
	}
	total := func(cr crash) time.Duration { return cr.total }
	stored := func(cr crash) time.Duration { return cr.stored }
	decided := func(cr crash) time.Duration { return cr.total - cr.stored }
	own := func(cr crash) time.Duration { return cr.total - cr.waited }
	host.reportSince(b)
	b.ReportMetric(q(0.5, total), "die-to-restart-p50-ms")
	b.ReportMetric(q(0.95, total), "die-to-restart-p95-ms")
	b.ReportMetric(q(0.5, own), "own-p50-ms")
	b.ReportMetric(q(0.95, own), "own-p95-ms")
	b.ReportMetric(q(0.5, stored), "die-to-stored-p50-ms")
	b.ReportMetric(q(0.5, decided), "stored-to-restart-p50-ms")
	fmt.Printf("FastPathOwnCost: the median crash's requests to the Docker Engine, from the die event:\n%s\n", strings.Join(crashes[len(crashes)/2].requests, "\n"))
}
