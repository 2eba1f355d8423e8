package main

import (
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
)

const serviceDownRemediation = `
  - name: service-down
    match: ['alertname=~"ServiceDown|ContainerUnhealthy"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart, stop_start]
    verify: {timeout: 20s, stable_for: 1s}
`

// TestEndToEnd kills an opted-in container under the whole loop — real
// Prometheus with the repository's rules, Alertmanager with the demo's
// routing, selfheal, PostgreSQL and Docker — and checks it runs again and
// that the events show the alert, the decision and the action.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOptions{ScrapeInterval: time.Second, EvalInterval: time.Second, Remediations: serviceDownRemediation})
	name := dockertest.Run(t, dockertest.Spec{Labels: s.Label, Args: []string{"-http", ":8080"}, NetworkMode: "bridge"})
	dockertest.WaitFor(t, 20*time.Second, "Prometheus sees the container", func() bool {
		v, ok := s.promValue(t, `selfheal_container_running{name="`+name+`"}`)
		return ok && v == "1"
	})

	dockertest.Kill(t, name)
	killed := time.Now()
	dockertest.WaitFor(t, 30*time.Second, name+" running again", func() bool { return running(t, name) })
	t.Logf("healed in %s", time.Since(killed).Round(time.Millisecond))

	dockertest.WaitFor(t, 15*time.Second, "action recorded", func() bool {
		return queryInt(t, s.DB, `SELECT count(*) FROM recovery_actions WHERE service_name = $1 AND action_type = 'restart' AND status = 'succeeded'`, name) == 1
	})
	if n := queryInt(t, s.DB, `SELECT count(*) FROM alert_occurrences WHERE alertname = 'ServiceDown' AND labels->>'service' = $1
		AND labels->>'category' = 'A' AND remediation = 'service-down'`, name); n != 1 {
		t.Errorf("%d ServiceDown occurrences for %s, want 1", n, name)
	}
	if n := queryInt(t, s.DB, `SELECT count(*) FROM self_healing_events WHERE event_type = 'decision' AND service_name = $1`, name); n != 1 {
		t.Errorf("%d decision events, want 1", n)
	}
	dockertest.WaitFor(t, 30*time.Second, "alert resolved", func() bool {
		return queryInt(t, s.DB, `SELECT count(*) FROM self_healing_events WHERE event_type = 'alert_resolved' AND service_name = $1`, name) == 1
	})

	code, out, errOut := selfheal(t, s.Env, "events", "--limit=20")
	if code != 0 {
		t.Fatalf("events: %s", errOut)
	}
	for _, want := range []string{"ServiceDown", "decision", "restart", "SUCCEEDED", "alert_resolved", name} {
		if !strings.Contains(out, want) {
			t.Errorf("selfheal events lacks %q:\n%s", want, out)
		}
	}
}
