package server_test

import (
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/pgtest"
)

// TestExecStopsWhenTheAlertResolves: an exec step with stop_on_resolve is
// killed within seconds of its alert's resolution, and the step succeeds
// (the fix is no longer needed), its output and why it stopped kept.
func TestExecStopsWhenTheAlertResolves(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	in, conn := ready(t, configText(t, dsn, `
engine: {poll_interval: 200ms}
targets:
  exec: {allow: [/bin/sh]}
remediations:
  - name: long-fix
    match: ['alertname="ServiceDown"']
    category: B
    target: '{{ .Labels.service }}'
    action: {type: exec, command: [/bin/sh, -c, 'echo working on "$1"; exec sleep 60', sh, '{{ .Labels.service }}'], timeout: 2m, stop_on_resolve: true}
    timeout: 3m
`))
	if code := in.post(t, payload(t, "service-down-firing.json", "llm")); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "the exec running", func() bool {
		return count(t, conn, `SELECT count(*) FROM recovery_actions WHERE action_type = 'exec' AND status = 'running'`) == 1
	})
	if code := in.post(t, payload(t, "service-down-resolved.json", "llm")); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	// Well before its sleep of 60 s ends.
	waitFor(t, 20*time.Second, "the exec stopped", func() bool {
		return count(t, conn, `SELECT count(*) FROM recovery_actions WHERE action_type = 'exec' AND status = 'succeeded'
			AND details->>'stopped' = 'its alert resolved' AND details->>'stdout' = E'working on llm\n'`) == 1
	})
}
