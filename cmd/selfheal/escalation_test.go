package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/internal/testenv"
	"github.com/selfheal/selfheal/remediator/engine"
)

const escalationConfig = `
engine: {poll_interval: 200ms}
targets:
  docker: {stop_timeout: 2s}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart, stop_start]
    failure_window: 10m
    max_failures: 3
    escalate_to: critical-recovery
    verify: {timeout: 20s, stable_for: 1s}
  - name: critical-recovery
    match: ['alertname="SelfhealEscalation"']
    category: C
    target: '{{ .Labels.service }}'
    action: restart
    max_failures: 0
    verify: {timeout: 20s, stable_for: 1s}
`

// TestEscalatedTargetInPlainSight: three outages of a container in ten
// minutes escalate it; the fourth, after the escalation closed, is not
// skipped in silence but refused — held back for a person — and the
// status page (rendered in headless Chromium) and plan say so; `selfheal
// clear` is recorded with who ran it, and the next outage is healed from
// the first step of the ladder.
func TestEscalatedTargetInPlainSight(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	chromium := testenv.Tool(t, "chromium", true)
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeConfig(t, requireLabel, escalationConfig)
	addr := freeAddr(t)
	daemon(t, env, config, addr)
	conn := connect(t, dsn)

	// outage kills the container (if it runs) and delivers its alert; it
	// returns once the job is decided, and the alert's start, to resolve it
	// with.
	jobs := 0
	outage := func() string {
		t.Helper()
		if running(t, name) {
			dockertest.Kill(t, name)
		}
		startsAt := time.Now().UTC().Format(time.RFC3339Nano)
		post(t, env, addr, "ServiceDown", "service="+name, "--starts-at="+startsAt)
		jobs++
		dockertest.WaitFor(t, 60*time.Second, "the outage's job done", func() bool {
			return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE remediation = 'service-down' AND state = 'done'`) == jobs
		})
		return startsAt
	}
	resolve := func(startsAt string) {
		t.Helper()
		post(t, env, addr, "ServiceDown", "service="+name, "--starts-at="+startsAt, "--resolved")
	}
	plan := func() engine.Plan {
		t.Helper()
		_, out, errOut := selfheal(t, env, "plan", "--config.file="+config, "--output=json", "ServiceDown", "service="+name)
		var plans []engine.Plan
		if err := json.Unmarshal([]byte(out), &plans); err != nil || len(plans) != 1 {
			t.Fatalf("plan: %q %q: %v", out, errOut, err)
		}
		return plans[0]
	}

	for i := range 3 {
		resolve(outage())
		dockertest.WaitFor(t, 60*time.Second, "running again", func() bool { return running(t, name) })
		if i == 2 {
			dockertest.WaitFor(t, 30*time.Second, "critical recovery's restart verified, the escalation closed with its alert", func() bool {
				return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE remediation = 'critical-recovery' AND status = 'succeeded'`) == 1 &&
					queryInt(t, conn, `SELECT count(*) FROM escalations WHERE cleared_at IS NOT NULL`) == 1
			})
		}
	}
	fourth := outage()
	var outcome, reason string
	if err := conn.QueryRow(t.Context(), `SELECT outcome, reason FROM remediation_jobs
		WHERE remediation = 'service-down' ORDER BY id DESC LIMIT 1`).Scan(&outcome, &reason); err != nil {
		t.Fatal(err)
	}
	if outcome != "refused" || !strings.Contains(reason, "held back for a person") {
		t.Fatalf("the outage after the escalation: %s, %q; want refused, held back", outcome, reason)
	}
	if running(t, name) {
		t.Fatal("the held-back target was started")
	}
	if p := plan(); !strings.Contains(p.HeldBack, "already escalated") || p.Verdict != engine.Refuse {
		t.Errorf("plan: held back %q, verdict %s", p.HeldBack, p.Verdict)
	}

	// The status page lists it, with the reason and the way out.
	render := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(chromium, append([]string{"--headless", "--no-sandbox", "--disable-gpu",
			"--user-data-dir=" + t.TempDir()}, args...)...).Output()
		if err != nil {
			t.Fatalf("chromium %v: %v", args, err)
		}
		return string(out)
	}
	dom := render("--dump-dom", "http://"+addr+"/")
	held := dom[strings.Index(dom, "Targets held back"):strings.Index(dom, "Last decisions")]
	// With what the last action found before acting: the killed run.
	for _, want := range []string{name, "service-down", "held back for a person until", "selfheal clear",
		"exited, exit code 137, OOM-killed false", "testctr started"} {
		if !strings.Contains(held, want) {
			t.Errorf("the status page's held-back targets lack %q:\n%s", want, held)
		}
	}
	if shot := os.Getenv("SELFHEAL_STATUS_SCREENSHOT"); shot != "" { // docs/status-held-back.png
		abs, _ := filepath.Abs(shot)
		render("--screenshot="+abs, "--window-size=1280,760", "http://"+addr+"/")
	}

	code, out, errOut := selfheal(t, env, "clear", name, "--reason=fixed the crash", "--by=alice")
	if code != 0 || !strings.Contains(out, "cleared "+name) || !strings.Contains(out, "failures no longer counted: ") {
		t.Fatalf("clear: exit %d %q %q", code, out, errOut)
	}
	_, out, _ = selfheal(t, env, "events", "--output=json")
	var acts []struct{ Kind, Target, What, Detail string }
	if err := json.Unmarshal([]byte(out), &acts); err != nil || !slices.ContainsFunc(acts, func(a struct{ Kind, Target, What, Detail string }) bool {
		return a.What == "clear" && a.Target == name && strings.Contains(a.Detail, "cleared by alice")
	}) {
		t.Errorf("events --output=json has no clear by alice: %v\n%s", err, out)
	}
	if n := queryInt(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'clear' AND service_name = $1
		AND details->>'cleared_by' = 'alice' AND message LIKE '%fixed the crash%'`, name); n != 1 {
		t.Errorf("%d clear events with who and why", n)
	}
	if p := plan(); p.HeldBack != "" || p.Verdict != engine.Run || p.Action != "restart" {
		t.Errorf("plan after the clear: held back %q, %s %s", p.HeldBack, p.Verdict, p.Action)
	}
	// The container stayed down; its alert fires again after the clear.
	resolve(fourth)
	outage()
	dockertest.WaitFor(t, 60*time.Second, "healed after the clear", func() bool { return running(t, name) })
	if got := strings.Join(actionsOf(t, conn, name), " "); !strings.HasSuffix(got, "service-down:restart:succeeded") {
		t.Errorf("actions: %s; the outage after the clear must start the ladder again (restart)", got)
	}
	dom = render("--dump-dom", "http://"+addr+"/")
	if !strings.Contains(dom, "None: no target is in cooldown") {
		t.Error("the status page still lists a held-back target after the clear and the heal")
	}
}

// actionsOf lists a target's actions in order, as
// "remediation:type:status".
func actionsOf(t *testing.T, conn *pgx.Conn, target string) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), `SELECT remediation || ':' || action_type || ':' || status FROM recovery_actions
		WHERE service_name = $1 ORDER BY id`, target)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
