package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

// TestHandoffToAlertmanager: a crash-looping container escalates; selfheal
// posts SelfhealEscalated to a real Alertmanager, with the target, the
// reason and the evidence (its exit code and last log lines, read before
// each restart), where amtool finds it; selfheal events --details shows
// the evidence too; once the container's alert resolves the hand-off
// resolves too.
func TestHandoffToAlertmanager(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	amtool := requireTool(t, "amtool")
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Stopped: true,
		Args: []string{"-say=fatal: configuration invalid: unknown key 'listen'", "-exit-after=300ms", "-exit-code=3"}})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	amAddr := alertmanager(t)

	config := writeConfig(t, requireLabel, `
engine: {poll_interval: 200ms}
alertmanager: {url: 'http://`+amAddr+`', interval: 1s}
targets:
  docker: {stop_timeout: 2s}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart, stop_start]
    verify: {timeout: 10s, stable_for: 1s}
    escalate_to: critical-recovery
  - name: critical-recovery
    match: ['alertname="SelfhealEscalation"']
    category: C
    target: '{{ .Labels.service }}'
    action: restart
    max_failures: 0
    verify: {timeout: 10s, stable_for: 1s}
`)
	addr := freeAddr(t)
	daemon(t, env, config, addr)
	startsAt := time.Now().UTC().Format(time.RFC3339Nano)
	post(t, env, addr, "ServiceDown", "service="+name, "--starts-at="+startsAt)

	query := func() []map[string]any {
		return amAlerts(t, amtool, amAddr, "alertname=SelfhealEscalated", "target="+name)
	}
	dockertest.WaitFor(t, 60*time.Second, "SelfhealEscalated in Alertmanager", func() bool { return len(query()) == 1 })
	a := query()[0]
	labels, _ := a["labels"].(map[string]any)
	annotations, _ := a["annotations"].(map[string]any)
	if labels["source"] != "selfheal" || labels["remediation"] != "service-down" || labels["category"] != "A" ||
		!strings.Contains(annotations["description"].(string), "3 failures within 10m (limit 3): escalating to critical-recovery") {
		t.Fatalf("hand-off alert %v", a)
	}
	if ev, _ := annotations["evidence"].(string); !strings.HasPrefix(ev, "exited, exit code 3, OOM-killed false, ran ") ||
		!strings.Contains(fmt.Sprint(annotations["last_log_lines"]), "fatal: configuration invalid: unknown key 'listen'") {
		t.Errorf("hand-off alert's evidence: %q, last lines %q", annotations["evidence"], annotations["last_log_lines"])
	}
	code, out, errOut := selfheal(t, env, "events", "--details", "--since=10m")
	if code != 0 || !strings.Contains(out, "    evidence: exited, exit code 3, OOM-killed false, ran ") ||
		!strings.Contains(out, "    | fatal: configuration invalid: unknown key 'listen'") {
		t.Errorf("selfheal events --details: exit %d\n%s%s", code, out, errOut)
	}

	// selfheal plan over what Alertmanager has firing: only the hand-off,
	// which no remediation acts on.
	code, out, errOut = selfheal(t, env, "plan", "--config.file="+config, "--alertmanager.url=http://"+amAddr)
	if code != 3 || !strings.Contains(out, "SelfhealEscalated") || !strings.Contains(out, "no remediation matches the alert") {
		t.Errorf("plan --alertmanager.url: exit %d\n%s%s", code, out, errOut)
	}

	// A chronic target — five remediations in the last days, backdated in
	// the audit trail — is one SelfhealChronic alert, with its history.
	// (The crash-looping container, restarted by critical recovery all the
	// while, becomes chronic too once it has five: when depends on how
	// fast this machine runs the steps above, so chronic-svc's alerts are
	// counted on their own, and any other must be the container's.)
	conn := connect(t, dsn)
	if _, err := conn.Exec(t.Context(), `INSERT INTO recovery_actions (service_name, action_type, status, remediation, started_at)
		SELECT 'chronic-svc', 'restart', 'succeeded', 'service-down', now() - d * interval '1 day' FROM generate_series(1, 5) d`); err != nil {
		t.Fatal(err)
	}
	chronic := func() []map[string]any {
		return amAlerts(t, amtool, amAddr, "alertname=SelfhealChronic", "target=chronic-svc")
	}
	dockertest.WaitFor(t, 30*time.Second, "SelfhealChronic in Alertmanager", func() bool { return len(chronic()) > 0 })
	if cs := chronic(); len(cs) != 1 || cs[0]["labels"].(map[string]any)["target"] != "chronic-svc" ||
		!strings.HasPrefix(fmt.Sprint(cs[0]["annotations"].(map[string]any)["description"]), "5 remediations within 1w (limit 5): restart ×5; first ") {
		t.Errorf("SelfhealChronic alerts: %v", cs)
	}
	for _, a := range amAlerts(t, amtool, amAddr, "alertname=SelfhealChronic") {
		if target := a["labels"].(map[string]any)["target"]; target != "chronic-svc" && target != name {
			t.Errorf("SelfhealChronic for %v, which was never remediated five times", target)
		}
	}

	// The container's alert resolves: so does the hand-off.
	post(t, env, addr, "ServiceDown", "service="+name, "--starts-at="+startsAt, "--resolved")
	dockertest.WaitFor(t, 30*time.Second, "SelfhealEscalated resolved", func() bool { return len(query()) == 0 })
}

// amAlerts is what amtool finds in the Alertmanager at addr for matchers.
func amAlerts(t *testing.T, amtool, addr string, matchers ...string) []map[string]any {
	t.Helper()
	out, err := exec.Command(amtool, append([]string{"alert", "query", "--alertmanager.url=http://" + addr, "-o", "json"}, matchers...)...).Output()
	if err != nil {
		t.Fatalf("amtool alert query: %v", err)
	}
	var alerts []map[string]any
	if err := json.Unmarshal(out, &alerts); err != nil {
		t.Fatalf("amtool output %q: %v", out, err)
	}
	return alerts
}
