package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
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
		d := Decide(Input{Remediation: r, State: store.State{FailuresInWindow: tc.failures}}, t0)
		if d.Verdict != tc.verdict || d.Action.Type != tc.action || d.Attempt != tc.attempt {
			t.Errorf("%d failures: %+v; want %s %s attempt %d", tc.failures, d, tc.verdict, tc.action, tc.attempt)
		}
	}
	d := Decide(Input{Remediation: r, State: store.State{FailuresInWindow: 3}}, t0)
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
	for _, tc := range []struct {
		name    string
		in      Input
		verdict Verdict
		reason  string
	}{
		{"resolved wins over everything", Input{Remediation: r, AlertResolved: true, State: store.State{Paused: true}},
			Skip, "the alert resolved before this step started"},
		{"paused", Input{Remediation: r, State: store.State{Paused: true, PauseReason: "maintenance"}, PermitErr: refused},
			Skip, "remediation is paused (maintenance)"},
		{"not opted in", Input{Remediation: r, PermitErr: refused, State: store.State{FailuresInWindow: 1}},
			Refuse, `container "db" lacks label selfheal.enable=true`},
		{"not opted in, in dry-run", Input{Remediation: r, DryRun: true, PermitErr: refused},
			Refuse, `container "db" lacks label selfheal.enable=true`},
		{"storm brake before the target check", Input{Remediation: r, PermitErr: refused, Limits: limits, State: store.State{ActionsInStormWindow: 10}},
			Skip, "storm brake: 10 actions in the last 10m (limit 10)"},
		{"escalated", Input{Remediation: r, State: store.State{EscalatedAt: t0.Add(-time.Minute), EscalatedTo: "critical-recovery"}},
			Skip, "escalated to critical-recovery at 2026-11-26T02:59:00Z: nothing more runs on this target until its alert resolves or 10m pass"},
		{"cooldown, one second before its end", Input{Remediation: b, State: store.State{LastActionAt: t0.Add(-5*time.Minute + time.Second)}},
			Skip, "in cooldown until 2026-11-26T03:00:01Z (last action 2026-11-26T02:55:01Z, cooldown 5m)"},
		{"cooldown over exactly at its end", Input{Remediation: b, State: store.State{LastActionAt: t0.Add(-5 * time.Minute)}},
			Run, "running restart (attempt 1, 0 failures in the last 10m)"},
		{"storm brake", Input{Remediation: r, Limits: limits, State: store.State{ActionsInStormWindow: 10}},
			Skip, "storm brake: 10 actions in the last 10m (limit 10)"},
		{"below the storm brake", Input{Remediation: r, Limits: limits, State: store.State{ActionsInStormWindow: 9}},
			Run, "running restart (attempt 1, 0 failures in the last 10m)"},
		{"dry-run is not deferred by running actions", Input{Remediation: r, DryRun: true, Limits: limits, State: store.State{RunningActions: 5, FailuresInWindow: 1}},
			DryRun, "dry-run: would run stop_start (attempt 2)"},
		{"concurrency limit defers", Input{Remediation: r, Limits: limits, State: store.State{RunningActions: 2}},
			Defer, "2 actions running (limit 2)"},
		{"recovered by itself", Input{Remediation: r, Recovery: Recovery{Recovered: true, Reason: "llm is running again"}},
			Skip, "llm is running again"},
		{"came back, still settling", Input{Remediation: r, Recovery: Recovery{Settling: 2 * time.Second, Reason: "waiting"}},
			Defer, "waiting"},
		{"refusal before recovery", Input{Remediation: r, PermitErr: refused, Recovery: Recovery{Recovered: true}},
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
	d := Decide(Input{Remediation: r, State: store.State{FailuresInWindow: 3}}, t0)
	if d.Verdict != Escalate || d.Reason != "3 failures within 10m (limit 3): escalating to nobody (no escalate_to configured)" {
		t.Fatalf("%+v", d)
	}
}

func TestOnlyActingVerdictsNeedTheTarget(t *testing.T) {
	for v, want := range map[Verdict]bool{Run: true, DryRun: true, Defer: true, Skip: false, Refuse: false, Escalate: false} {
		if v.Acts() != want {
			t.Errorf("%s.Acts() = %v", v, !want)
		}
	}
}
