package main

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
)

// EnvAutoheal names docker-autoheal's docker-entrypoint script (from the
// public repository willfarrell/docker-autoheal; run with bash, curl and
// jq). It is not part of this repository: without it the benchmark
// measures selfheal alone and says so.
const EnvAutoheal = "SELFHEAL_BENCH_AUTOHEAL"

// BenchmarkUnhealthyToRunning measures a container turning unhealthy →
// running again (a new run started), SELFHEAL_BENCH_KILLS times (default
// 20) for each healer, alternating: selfheal with the shipped rules,
// routing and configuration at 1 s intervals (the game-day stack), and
// docker-autoheal polling every 5 s and every 1 s. Each run uses a fresh
// container (health check every second, one retry), so no run counts
// toward another's failures; the shipped storm brake (20 actions in 10
// minutes) is raised to 100 for the same reason. The clock starts when the
// health check's marker is removed, so Docker's own detection is in every
// figure alike. For selfheal it also reports detection (sick → the alert
// reaching selfheal: Docker's check, a scrape, an evaluation, Alertmanager)
// and its own part (alert received → the container's new run started).
func BenchmarkUnhealthyToRunning(b *testing.B) {
	runs := envInt("SELFHEAL_BENCH_KILLS", 20)
	g := startGameDay(b, gameDayOptions{Extra: []string{
		"storm_brake: {max_actions: 20, window: 10m}", "storm_brake: {max_actions: 100, window: 10m}"}})
	type healer struct {
		name   string
		labels map[string]string
		lat    []time.Duration
	}
	healers := []*healer{{name: "selfheal", labels: g.Label}}
	if script := os.Getenv(EnvAutoheal); script != "" {
		for _, interval := range []int{5, 1} {
			key := dockertest.UniqueName("autoheal")
			cmd := exec.Command("bash", script, "autoheal")
			cmd.Env = append(os.Environ(), "AUTOHEAL_CONTAINER_LABEL="+key, fmt.Sprintf("AUTOHEAL_INTERVAL=%d", interval),
				"DOCKER_SOCK=/var/run/docker.sock")
			if err := cmd.Start(); err != nil {
				b.Fatalf("docker-autoheal: %v", err)
			}
			b.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
			healers = append(healers, &healer{name: fmt.Sprintf("autoheal-%ds", interval), labels: map[string]string{key: "true"}})
		}
	} else {
		b.Logf("%s is not set: docker-autoheal is not measured beside selfheal", EnvAutoheal)
	}
	var detect, own []time.Duration // selfheal: sick → alert received, alert → new run started
	for i := range runs {
		for _, h := range healers {
			name := dockertest.Run(b, dockertest.Spec{Labels: h.labels, Health: time.Second})
			dockertest.WaitFor(b, 30*time.Second, name+" healthy", func() bool {
				st := dockertest.State(b, name)
				return st.Health != nil && st.Health.Status == "healthy"
			})
			if h.name == "selfheal" {
				g.seesContainer(name)
			}
			time.Sleep(time.Duration(i%4) * 250 * time.Millisecond) // spread over the poll and scrape cycles
			started := dockertest.State(b, name).StartedAt
			sick := time.Now()
			dockertest.Exec(b, name, "/testctr", "sick")
			dockertest.WaitFor(b, 60*time.Second, h.name+" restarting "+name, func() bool {
				st := dockertest.State(b, name)
				return st.Running && st.StartedAt != started
			})
			h.lat = append(h.lat, time.Since(sick))
			if h.name == "selfheal" {
				var received time.Time
				if err := g.DB.QueryRow(b.Context(), `SELECT first_received_at FROM alert_occurrences
					WHERE alertname = 'ContainerUnhealthy' AND labels->>'service' = $1`, name).Scan(&received); err != nil {
					b.Fatal(err)
				}
				at, err := time.Parse(time.RFC3339Nano, dockertest.State(b, name).StartedAt)
				if err != nil {
					b.Fatal(err)
				}
				detect, own = append(detect, received.Sub(sick)), append(own, at.Sub(received))
			}
		}
	}
	sort.Slice(detect, func(i, j int) bool { return detect[i] < detect[j] })
	sort.Slice(own, func(i, j int) bool { return own[i] < own[j] })
	b.ReportMetric(ms(detect[len(detect)/2]), "selfheal-detect-p50-ms")
	b.ReportMetric(ms(own[len(own)/2]), "selfheal-own-p50-ms")
	for _, h := range healers {
		sort.Slice(h.lat, func(i, j int) bool { return h.lat[i] < h.lat[j] })
		b.ReportMetric(ms(h.lat[len(h.lat)/2]), h.name+"-p50-ms")
		b.ReportMetric(ms(h.lat[len(h.lat)*95/100]), h.name+"-p95-ms")
	}
}
