package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/policy"
)

func serviceDown(t *testing.T) *policy.Remediation {
	t.Helper()
	cfg, err := policy.Parse([]byte(`
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart, stop_start]
    escalate_to: critical-recovery
  - name: critical-recovery
    match: ['alertname="Never"']
    category: C
    target: x
    action: restart
  - name: cpu
    match: ['alertname="CPUHigh"']
    category: B
    target: llm
    action: restart
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Remediation("service-down")
}

var t0 = time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)

// TestLadder walks category A's ladder the way the engine meets it: each
// failure recorded moves to the next step, the last step repeats, and the
// third failure within the window escalates.
func TestLadder(t *testing.T) {
	r := serviceDown(t)
	for _, tc := range []struct {
		failures int
		verdict  Verdict
		action   string
		attempt  int
	}{
		{0, Run, "restart", 1},
		{1, Run, "stop_start", 2},
		{2, Run, "stop_start", 3},
		{3, Escalate, "", 0},
		{7, Escalate, "", 0},
	} {
		d := Decide(Input{Remediation: r, State: model.State{FailuresInWindow: tc.failures}}, t0)
		if d.Verdict != tc.verdict || d.Action.Type != tc.action || d.Attempt != tc.attempt {
			t.Errorf("%d failures: %+v; want %s %s attempt %d", tc.failures, d, tc.verdict, tc.action, tc.attempt)
		}
	}
	d := Decide(Input{Remediation: r, State: model.State{FailuresInWindow: 3}}, t0)
	if d.Reason != "3 failures within 10m (limit 3): escalating to critical-recovery" {
		t.Errorf("reason %q", d.Reason)
	}
}

func TestDecideOrderOfChecks(t *testing.T) {
	r := serviceDown(t)
	b := serviceDown(t)
	b.Cooldown = policy.Duration(5 * time.Minute)
	limits := Limits{MaxConcurrentActions: 2, StormMaxActions: 10, StormWindow: 10 * time.Minute}
	refused := errors.New(`container "db" lacks label selfheal.enable=true`)
	chronicHold := Limits{Chronic: policy.Chronic{MaxRemediations: 5, Window: policy.Duration(7 * 24 * time.Hour), Hold: true}}
	chronicNotHeld := chronicHold
	chronicNotHeld.Chronic.Hold = false
	for _, tc := range []struct {
		name    string
		in      Input
		verdict Verdict
		reason  string
	}{
		{"resolved wins over everything", Input{Remediation: r, AlertResolved: true, State: model.State{Paused: true}},
			Skip, "the alert resolved before this step started"},
		{"paused", Input{Remediation: r, State: model.State{Paused: true, PauseReason: "maintenance"}, PermitErr: refused},
			Skip, "remediation is paused (maintenance)"},
		{"not opted in", Input{Remediation: r, PermitErr: refused, State: model.State{FailuresInWindow: 1}},
			Refuse, `container "db" lacks label selfheal.enable=true`},
		{"not opted in, in dry-run", Input{Remediation: r, DryRun: true, PermitErr: refused},
			Refuse, `container "db" lacks label selfheal.enable=true`},
		{"storm brake before the target check", Input{Remediation: r, PermitErr: refused, Limits: limits, State: model.State{ActionsInStormWindow: 10}},
			Skip, "storm brake: 10 actions in the last 10m (limit 10)"},
		{"escalated", Input{Remediation: r, State: model.State{EscalatedAt: t0.Add(-time.Minute), EscalatedTo: "critical-recovery"}},
			Skip, "escalated to critical-recovery at 2026-11-26T02:59:00Z: nothing more runs on this target until its alert resolves or 10m pass"},
		{"cooldown, one second before its end", Input{Remediation: b, State: model.State{LastActionAt: t0.Add(-5*time.Minute + time.Second)}},
			Skip, "in cooldown until 2026-11-26T03:00:01Z (last action 2026-11-26T02:55:01Z, cooldown 5m)"},
		{"cooldown over exactly at its end", Input{Remediation: b, State: model.State{LastActionAt: t0.Add(-5 * time.Minute)}},
			Run, "running restart (attempt 1, 0 failures in the last 10m)"},
		{"storm brake", Input{Remediation: r, Limits: limits, State: model.State{ActionsInStormWindow: 10}},
			Skip, "storm brake: 10 actions in the last 10m (limit 10)"},
		{"chronic, held", Input{Remediation: r, Limits: chronicHold, State: model.State{ChronicActions: 5, FailuresInWindow: 3}},
			Refuse, "chronic: at least 5 remediations of the target within 1w (the limit): held for a person, who fixes the cause and runs selfheal clear"},
		{"chronic, not held: handed off only", Input{Remediation: r, Limits: chronicNotHeld, State: model.State{ChronicActions: 9}},
			Run, "running restart (attempt 1, 0 failures in the last 10m)"},
		{"below chronic", Input{Remediation: r, Limits: chronicHold, State: model.State{ChronicActions: 4}},
			Run, "running restart (attempt 1, 0 failures in the last 10m)"},
		{"below the storm brake", Input{Remediation: r, Limits: limits, State: model.State{ActionsInStormWindow: 9}},
			Run, "running restart (attempt 1, 0 failures in the last 10m)"},
		{"dry-run is not deferred by running actions", Input{Remediation: r, DryRun: true, Limits: limits, State: model.State{RunningActions: 5, FailuresInWindow: 1}},
			DryRun, "dry-run: would run stop_start (attempt 2)"},
		{"concurrency limit defers", Input{Remediation: r, Limits: limits, State: model.State{RunningActions: 2}},
			Defer, "2 actions running (limit 2)"},
		{"recovered by itself", Input{Remediation: r, Recovery: action.Recovery{Recovered: true, Reason: "llm is running again"}},
			Skip, "llm is running again"},
		{"came back, still settling", Input{Remediation: r, Recovery: action.Recovery{Settling: 2 * time.Second, Reason: "waiting"}},
			Defer, "waiting"},
		{"refusal before recovery", Input{Remediation: r, PermitErr: refused, Recovery: action.Recovery{Recovered: true}},
			Refuse, `container "db" lacks label selfheal.enable=true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.in, t0)
			if d.Verdict != tc.verdict || d.Reason != tc.reason {
				t.Fatalf("got %s %q\nwant %s %q", d.Verdict, d.Reason, tc.verdict, tc.reason)
			}
		})
	}
}

func TestNoEscalationTarget(t *testing.T) {
	r := serviceDown(t)
	r.EscalateTo = ""
	d := Decide(Input{Remediation: r, State: model.State{FailuresInWindow: 3}}, t0)
	if d.Verdict != Escalate || d.Reason != "3 failures within 10m (limit 3): escalating to nobody (no escalate_to configured)" {
		t.Fatalf("%+v", d)
	}
}

func TestOnlyActingVerdictsNeedTheTarget(t *testing.T) {
	for v, want := range map[Verdict]bool{Run: true, DryRun: true, Defer: true, Skip: false, Refuse: false, Escalate: false} {
		if v.NeedsTargetCheck() != want {
			t.Errorf("%s.NeedsTargetCheck() = %v", v, !want)
		}
	}
}

// TestCrashLoopLadder walks a crash loop the way the engine meets it now
// that every outage counts: each new occurrence of the alert is a failure
// of the service (OutageCounted), whether or not the restart before it
// "succeeded". The first outage restarts, the second stops and starts, the
// third escalates, and the fourth — within the same window, the bigger
// remediation having had its turn — runs nothing.
func TestCrashLoopLadder(t *testing.T) {
	r := serviceDown(t)
	for _, tc := range []struct {
		name    string
		state   model.State
		verdict Verdict
		action  string
		reason  string
	}{
		{"first outage", model.State{FailuresInWindow: 1, OutageCounted: true},
			Run, "restart", "running restart (attempt 1, 1 failures in the last 10m)"},
		{"second outage", model.State{FailuresInWindow: 2, OutageCounted: true},
			Run, "stop_start", "running stop_start (attempt 2, 2 failures in the last 10m)"},
		{"one outage, restart failed", model.State{FailuresInWindow: 2, OutageCounted: true},
			Run, "stop_start", "running stop_start (attempt 2, 2 failures in the last 10m)"},
		{"third outage", model.State{FailuresInWindow: 3, OutageCounted: true},
			Escalate, "", "3 failures within 10m (limit 3): escalating to critical-recovery"},
		{"fourth outage, escalated already", model.State{FailuresInWindow: 4, OutageCounted: true, LastEscalationAt: t0.Add(-time.Minute)},
			Refuse, "", "4 failures within 10m (limit 3), and already escalated at 2026-11-26T02:59:00Z: held back for a person until 2026-11-26T03:09:00Z, " +
				"not escalating again within the window (selfheal clear lets the next outage start the ladder again)"},
		{"escalation of an earlier window is forgotten", model.State{FailuresInWindow: 1, OutageCounted: true},
			Run, "restart", "running restart (attempt 1, 1 failures in the last 10m)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(Input{Remediation: r, State: tc.state, Step: 1}, t0)
			if d.Verdict != tc.verdict || d.Action.Type != tc.action || d.Reason != tc.reason {
				t.Fatalf("got %s %s %q\nwant %s %s %q", d.Verdict, d.Action.Type, d.Reason, tc.verdict, tc.action, tc.reason)
			}
		})
	}
}

func criticalRecovery(t *testing.T) *policy.Remediation {
	t.Helper()
	cfg, err := policy.Parse([]byte(`
remediations:
  - name: critical-recovery
    match: ['alertname="DatabaseDown"']
    category: C
    target: application
    cooldown: 10m
    sequence:
      - {type: hard_restart, services: [db, api]}
      - docker_prune
      - {type: vacuum, databases: ['postgres://app@localhost/app']}
      - {type: gpu_reset, all: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Remediation("critical-recovery")
}

// TestSequence: the first step of a sequence meets every limit; the later
// ones run in order whatever the cooldown, failures or alert say, since
// the sequence was decided as a whole — but a pause still stops them.
func TestSequence(t *testing.T) {
	r := criticalRecovery(t)
	inCooldown := model.State{LastActionAt: t0.Add(-time.Minute), FailuresInWindow: 5}
	for _, tc := range []struct {
		name    string
		in      Input
		verdict Verdict
		action  string
		reason  string
	}{
		{"first step", Input{Remediation: r, Step: 1}, Run, "hard_restart", "running hard_restart (step 1 of 4)"},
		{"first step in cooldown", Input{Remediation: r, Step: 1, State: model.State{LastActionAt: t0.Add(-time.Minute)}},
			Skip, "", "in cooldown until 2026-11-26T03:09:00Z (last action 2026-11-26T02:59:00Z, cooldown 10m)"},
		{"later steps ignore cooldown and failures", Input{Remediation: r, Step: 3, State: inCooldown},
			Run, "vacuum", "running vacuum (step 3 of 4)"},
		{"later steps run after the alert resolved", Input{Remediation: r, Step: 2, AlertResolved: true},
			Run, "docker_prune", "running docker_prune (step 2 of 4)"},
		{"but not when paused", Input{Remediation: r, Step: 2, State: model.State{Paused: true, PauseReason: "x"}},
			Skip, "", "remediation is paused (x)"},
		{"last step", Input{Remediation: r, Step: 4}, Run, "gpu_reset", "running gpu_reset (step 4 of 4)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.in, t0)
			if d.Verdict != tc.verdict || d.Action.Type != tc.action || d.Reason != tc.reason {
				t.Fatalf("got %s %s %q\nwant %s %s %q", d.Verdict, d.Action.Type, d.Reason, tc.verdict, tc.action, tc.reason)
			}
		})
	}
}

// TestRebootUnderWayHoldsSmallerRemediations: while a guarded reboot is
// pending, only category D decides; everything smaller waits for it.
func TestRebootUnderWayHoldsSmallerRemediations(t *testing.T) {
	st := model.State{RebootPendingSince: t0.Add(-30 * time.Second)}
	d := Decide(Input{Remediation: serviceDown(t), State: st, Step: 1}, t0)
	if d.Verdict != Skip || d.Reason != "a guarded reboot is under way (requested 2026-11-26T02:59:30Z): smaller remediations wait for it" {
		t.Fatalf("%+v", d)
	}
	reboot := &policy.Remediation{Name: "reboot", Category: policy.CategoryD, Steps: []policy.Action{{Type: "reboot"}}}
	if d := Decide(Input{Remediation: reboot, State: st, Step: 1}, t0); d.Verdict != Run {
		t.Fatalf("the reboot itself: %+v", d)
	}
}

type transientErr struct{ error }

func (transientErr) Transient() bool { return true }

// TestUnreachableTargetDefers: a target Docker cannot answer for is
// deferred with a growing backoff, never refused — until the bound, when it
// is refused as a CRITICAL event.
func TestUnreachableTargetDefers(t *testing.T) {
	r := serviceDown(t)
	away := transientErr{errors.New("inspect container \"llm\": Cannot connect to the Docker daemon")}
	limits := Limits{UnreachableFor: 5 * time.Minute}
	for _, tc := range []struct {
		waited   time.Duration
		verdict  Verdict
		retry    time.Duration
		severity model.Severity
	}{
		{0, Defer, time.Second, ""},
		{10 * time.Second, Defer, 5 * time.Second, ""},
		{4 * time.Minute, Defer, 30 * time.Second, ""},
		{5 * time.Minute, Refuse, 0, "CRITICAL"},
	} {
		d := Decide(Input{Remediation: r, Limits: limits, PermitErr: away, Waited: tc.waited, Step: 1}, t0)
		if d.Verdict != tc.verdict || d.RetryAfter != tc.retry || d.Severity != tc.severity {
			t.Errorf("waited %s: %+v; want %s after %s (%s)", tc.waited, d, tc.verdict, tc.retry, tc.severity)
		}
	}
	if !action.IsTransient(away) || action.IsTransient(errors.New("not opted in")) {
		t.Error("action.IsTransient misjudges")
	}
}
