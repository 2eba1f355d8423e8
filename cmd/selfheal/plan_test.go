package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/remediator/engine"
)

// planConfig is the fault tests' service-down, and a B remediation with a
// cooldown.
const planConfig = faultConfig + `  - name: memory-high
    match: ['alertname="HostMemoryHigh"']
    category: B
    target: '{{ .Labels.service }}'
    action: restart
    cooldown: 5m
    verify: {timeout: 20s, stable_for: 1s}
`

// TestPlanMatchesWhatTheEngineDoes: selfheal plan, then the same alert
// fired: the engine does what the plan said, for an opted-in container and
// one that is not, in cooldown and out of it. The plan changes nothing.
func TestPlanMatchesWhatTheEngineDoes(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	optedIn := dockertest.Run(t, dockertest.Spec{Labels: optIn, Stopped: true})
	other := dockertest.Run(t, dockertest.Spec{Stopped: true})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeConfig(t, requireLabel, planConfig)
	addr := freeAddr(t)
	daemon(t, env, config, addr)
	conn := connect(t, dsn)
	plan := func(args ...string) (int, engine.Plan) {
		t.Helper()
		code, out, errOut := selfheal(t, env, append([]string{"plan", "--config.file=" + config, "--output=json"}, args...)...)
		var plans []engine.Plan
		if err := json.Unmarshal([]byte(out), &plans); err != nil || len(plans) != 1 {
			t.Fatalf("plan %v: exit %d, %q %q: %v", args, code, out, errOut, err)
		}
		return code, plans[0]
	}
	jobs := func() int { return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs`) }

	// Opted in, no cooldown: a restart.
	code, p := plan("ServiceDown", "service="+optedIn)
	if code != 0 || p.Verdict != engine.Run || p.Action != "restart" || p.Target != optedIn ||
		p.IfItFails != "2 failures within 10m: stop_start (attempt 2)" {
		t.Fatalf("plan: exit %d %+v", code, p)
	}
	// What the restart would keep, read now: the container, never started.
	if ev, _ := p.Evidence.(map[string]any); ev["container"] != optedIn || ev["status"] != "created" {
		t.Errorf("plan's evidence: %v", p.Evidence)
	}
	if jobs() != 0 || running(t, optedIn) {
		t.Fatal("the plan changed something")
	}
	post(t, env, addr, "ServiceDown", "service="+optedIn)
	dockertest.WaitFor(t, 20*time.Second, "the planned restart", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE service_name = $1 AND action_type = 'restart'
			AND remediation = 'service-down' AND status = 'succeeded'`, optedIn) == 1
	})

	// Not opted in: refused, and the plan says why.
	code, p = plan("ServiceDown", "service="+other)
	if code != 3 || p.Verdict != engine.Refuse || !strings.Contains(p.Permit, "lacks the opt-in label") {
		t.Fatalf("plan for a container not opted in: exit %d %+v", code, p)
	}
	post(t, env, addr, "ServiceDown", "service="+other)
	dockertest.WaitFor(t, 10*time.Second, "the refusal", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE target = $1 AND outcome = 'refused'`, other) == 1
	})

	// A cooldown: the first restart runs, the second is held back.
	if code, p = plan("HostMemoryHigh", "service="+optedIn); code != 0 || p.Verdict != engine.Run || p.CooldownUntil != nil {
		t.Fatalf("plan before the cooldown: exit %d %+v", code, p)
	}
	post(t, env, addr, "HostMemoryHigh", "service="+optedIn)
	dockertest.WaitFor(t, 20*time.Second, "memory-high's restart", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE remediation = 'memory-high' AND status = 'succeeded'`) == 1
	})
	code, p = plan("HostMemoryHigh", "service="+optedIn)
	if code != 3 || p.Verdict != engine.Skip || p.CooldownUntil == nil || !strings.HasPrefix(p.Reason, "in cooldown until") {
		t.Fatalf("plan in cooldown: exit %d %+v", code, p)
	}
	post(t, env, addr, "HostMemoryHigh", "service="+optedIn, "--starts-at="+time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano))
	dockertest.WaitFor(t, 10*time.Second, "the cooldown holding the second alert", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE remediation = 'memory-high' AND outcome = 'skipped'
			AND reason LIKE 'in cooldown until%'`) == 1
	})

	// The table for people.
	code, out, _ := selfheal(t, env, "plan", "--config.file="+config, "ServiceDown", "service="+other)
	for _, want := range []string{"REMEDIATION", "service-down (category A)", "PERMITTED", "no: ", "VERDICT", "refused"} {
		if code != 3 || !strings.Contains(out, want) {
			t.Errorf("plan table lacks %q (exit %d):\n%s", want, code, out)
		}
	}
}
