package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
)

// TestSimulateThroughTheShippedRouting: `selfheal simulate
// --alertmanager.url` posts a ServiceDown as the shipped rule would raise
// it — with its category and severity — so the shipped
// alerting/alertmanager.yml routes it to selfheal (and to people), says so,
// and selfheal receives it.
func TestSimulateThroughTheShippedRouting(t *testing.T) {
	t.Parallel()
	s := newStack(t, dockertest.UniqueName("selfheal.simulate"), false)
	tokenFile := filepath.Join(t.TempDir(), "token")
	s.launch(t, files{
		Selfheal: `
engine: {poll_interval: 200ms}
targets:
  docker: {require_label: ` + s.labelKey() + `=true}
remediations:
  - {name: service-down, match: ['alertname="ServiceDown"'], category: A, target: '{{ .Labels.service }}', steps: [restart]}
`,
		Alertmanager: shipped(t, "alerting/alertmanager.yml",
			"http://localhost:9595/api/v1/webhook", "http://"+s.Selfheal+"/api/v1/webhook",
			"/etc/alertmanager/selfheal-token", tokenFile),
	}, tokenFile)

	code, out, errOut := selfheal(t, s.Env, "simulate", "--alertmanager.url=http://"+s.AM, "ServiceDown", "service=simulated")
	if code != 0 {
		t.Fatalf("simulate: exit %d %s %s", code, out, errOut)
	}
	for _, want := range []string{
		"labels from the shipped rule ServiceDown: category=A, severity=critical",
		"Alertmanager routed it to: operators, selfheal",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("simulate says %q, want %q", out, want)
		}
	}
	// The selfheal route's group_wait is 5s.
	dockertest.WaitFor(t, 30*time.Second, "the alert at selfheal's webhook", func() bool {
		return queryInt(t, s.DB, `SELECT count(*) FROM alert_occurrences WHERE alertname = 'ServiceDown' AND labels->>'service' = 'simulated'`) == 1
	})
}
