package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/exporter/gpu/gputest"
	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/remediator/actions"
	"github.com/selfheal/selfheal/remediator/gpuctl"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/server"
)

// diskExhausted is the payload of a DiskSpaceExhausted alert (category D).
func diskExhausted(startsAt time.Time) []byte {
	return []byte(`{"version":"4","status":"firing","receiver":"selfheal","groupKey":"g","alerts":[{"status":"firing",
		"labels":{"alertname":"DiskSpaceExhausted","category":"D","severity":"critical","instance":"edge-01:9595","mountpoint":"/"},
		"annotations":{},"startsAt":"` + startsAt.UTC().Format(time.RFC3339Nano) + `","fingerprint":"d15c"}]}`)
}

// rebootConfig has a reboot remediation whose command appends a line to a
// file instead of rebooting. Its opt-in label is unique to the test (the
// saved list of running services must not include other tests' containers).
func rebootConfig(t *testing.T, dsn string) (*policy.Config, string, map[string]string) {
	t.Helper()
	record := filepath.Join(t.TempDir(), "reboots")
	cfg := config(t, dsn, `
  - name: reboot
    match: ['alertname=~"DiskSpaceExhausted|CriticalEventsThreshold"']
    category: D
    target: host
    action: {type: reboot, command: [/bin/sh, -c, "echo rebooted >> `+record+`"], window: 6h, max_per_day: 3}
`)
	cfg.Engine.RebootValidationDelay = policy.Duration(200 * time.Millisecond)
	key := dockertest.UniqueName("selfheal.reboot")
	cfg.Targets.Docker.RequireLabel = key + "=true"
	return cfg, record, map[string]string{key: "true"}
}

func reboots(t *testing.T, record string) int {
	t.Helper()
	b, err := os.ReadFile(record)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "rebooted")
}

func bootID(id string) func() (string, error) { return func() (string, error) { return id, nil } }

func TestRebootNeverWhenDisabledOrInDryRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		enabled bool
		dryRun  bool
		outcome string
		reason  string
	}{
		{"disabled", false, false, "refused", "reboot refused: reboots are disabled (SELFHEAL_REBOOT_ENABLED is not true)"},
		{"dry-run", true, true, "dry_run", "dry-run: would run reboot (attempt 1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dsn := pgtest.DSN(t)
			cfg, record, _ := rebootConfig(t, dsn)
			cfg.RebootEnabled, cfg.DryRun = tc.enabled, tc.dryRun
			in := start(t, cfg)
			in.waitReady(t)
			if code := in.post(t, diskExhausted(time.Now())); code != 200 {
				t.Fatalf("webhook answered %d", code)
			}
			conn := db(t, dsn)
			waitFor(t, 10*time.Second, "decision", func() bool {
				return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE remediation = 'reboot' AND outcome = $1 AND reason = $2`, tc.outcome, tc.reason) == 1
			})
			time.Sleep(300 * time.Millisecond)
			if n := reboots(t, record); n != 0 {
				t.Fatalf("the reboot command ran %d times", n)
			}
			if n := count(t, conn, `SELECT count(*) FROM reboot_events`); n != 0 {
				t.Fatalf("%d reboot events", n)
			}
		})
	}
}

// TestRebootOnceThenGuardedThenValidated: enabled, the reboot runs once
// and saves the state; a second alert within the window is refused;
// selfheal "comes back" in a new boot and validates the services; and
// three reboots in a day trip the boot-loop guard, an EMERGENCY.
func TestRebootOnceThenGuardedThenValidated(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	cfg, record, label := rebootConfig(t, dsn)
	service := dockertest.Run(t, dockertest.Spec{Labels: label})
	cfg.RebootEnabled = true
	in := startWith(t, cfg, func(o *server.Options) { o.BootID = bootID("boot-1") })
	in.waitReady(t)
	conn := db(t, dsn)

	if code := in.post(t, diskExhausted(time.Now())); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "reboot command", func() bool { return reboots(t, record) == 1 })
	waitFor(t, 10*time.Second, "reboot recorded", func() bool {
		return count(t, conn, `SELECT count(*) FROM reboot_events WHERE status = 'rebooting' AND boot_id = 'boot-1'
			AND pre_state->'services' ? $1 AND (pre_state->'metrics'->>'memory_total_bytes')::numeric > 0`, service) == 1
	})

	// Another occurrence within the 6h window is refused.
	if code := in.post(t, diskExhausted(time.Now().Add(time.Second))); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "window refusal", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused' AND reason LIKE 'reboot refused: the last one was at %, within the 6h window'`) == 1
	})
	if n := reboots(t, record); n != 1 {
		t.Fatalf("reboot ran %d times, want 1", n)
	}

	// The host "reboots": selfheal stops, and starts in a new boot.
	in.stop()
	in = startWith(t, cfg, func(o *server.Options) { o.BootID = bootID("boot-2") })
	in.waitReady(t)
	waitFor(t, 10*time.Second, "reboot validated", func() bool {
		return count(t, conn, `SELECT count(*) FROM reboot_events WHERE status = 'validated' AND validated_at IS NOT NULL`) == 1
	})
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions WHERE action_type = 'reboot' AND status = 'succeeded'`); n != 1 {
		t.Errorf("%d succeeded reboot actions, want 1", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'reboot_validation' AND severity = 'INFO'`); n != 1 {
		t.Errorf("no validation event")
	}

	// The boot-loop guard: three reboots in 24 hours, none in the window.
	if _, err := conn.Exec(context.Background(), `UPDATE reboot_events SET requested_at = now() - interval '20 hours';
		INSERT INTO reboot_events (reason, status, requested_at) VALUES
		('test', 'validated', now() - interval '15 hours'), ('test', 'validated', now() - interval '10 hours')`); err != nil {
		t.Fatal(err)
	}
	if code := in.post(t, diskExhausted(time.Now().Add(2*time.Second))); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "boot-loop guard", func() bool {
		return count(t, conn, `SELECT count(*) FROM self_healing_events WHERE severity = 'EMERGENCY'
			AND message = 'boot-loop guard: 3 reboots in the last 24h (limit 3); no more reboots until a person looks'`) == 1
	})
	if n := reboots(t, record); n != 1 {
		t.Fatalf("reboot ran %d times, want 1", n)
	}
}

// TestRebootValidationFindsMissingServices: a service that ran before the
// reboot and does not after fails the validation.
func TestRebootValidationFindsMissingServices(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	cfg, _, label := rebootConfig(t, dsn)
	service := dockertest.Run(t, dockertest.Spec{Labels: label})
	cfg.RebootEnabled = true
	in := startWith(t, cfg, func(o *server.Options) { o.BootID = bootID("boot-1") })
	in.waitReady(t)
	conn := db(t, dsn)
	in.post(t, diskExhausted(time.Now()))
	waitFor(t, 10*time.Second, "reboot recorded", func() bool {
		return count(t, conn, `SELECT count(*) FROM reboot_events WHERE status = 'rebooting'`) == 1
	})
	in.stop()
	dockertest.Kill(t, service)
	in = startWith(t, cfg, func(o *server.Options) { o.BootID = bootID("boot-2") })
	in.waitReady(t)
	waitFor(t, 10*time.Second, "validation failed", func() bool {
		return count(t, conn, `SELECT count(*) FROM reboot_events WHERE status = 'validation_failed' AND post_state->'missing' ? $1`, service) == 1
	})
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'reboot_validation' AND severity = 'CRITICAL'`); n != 1 {
		t.Error("no CRITICAL validation event")
	}
}

// TestCriticalEventsTriggerCategoryD: three CRITICAL events within 30
// minutes raise CriticalEventsThreshold, which the reboot remediation
// matches (dry-run here); the alert resolves when the events age out.
func TestCriticalEventsTriggerCategoryD(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	cfg, record, _ := rebootConfig(t, dsn)
	cfg.RebootEnabled, cfg.DryRun = true, true
	cfg.Engine.CriticalEvents.Interval = policy.Duration(200 * time.Millisecond)
	_, conn := ready(t, cfg)
	if _, err := conn.Exec(context.Background(), `INSERT INTO self_healing_events (event_time, severity, event_type, message) VALUES
		(now() - interval '29 minutes', 'CRITICAL', 'escalation', 'a'), (now(), 'EMERGENCY', 'x', 'b'),
		(now() - interval '31 minutes', 'CRITICAL', 'escalation', 'too old')`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if n := count(t, conn, `SELECT count(*) FROM alert_occurrences WHERE alertname = 'CriticalEventsThreshold'`); n != 0 {
		t.Fatal("raised with two critical events in the window")
	}
	if _, err := conn.Exec(context.Background(), `INSERT INTO self_healing_events (severity, event_type, message) VALUES ('CRITICAL', 'escalation', 'c')`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "reboot decided", func() bool {
		return count(t, conn, `SELECT count(*) FROM recovery_actions WHERE action_type = 'reboot' AND status = 'dry_run'`) == 1
	})
	if n := count(t, conn, `SELECT count(*) FROM alert_occurrences WHERE alertname = 'CriticalEventsThreshold' AND status = 'firing'
		AND labels->>'category' = 'D' AND remediation = 'reboot'`); n != 1 {
		t.Fatalf("%d firing CriticalEventsThreshold occurrences, want 1", n)
	}
	time.Sleep(time.Second)
	if n := count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE remediation = 'reboot'`); n != 1 {
		t.Fatalf("%d reboot jobs while the count stays up, want 1", n)
	}
	if _, err := conn.Exec(context.Background(), `DELETE FROM self_healing_events WHERE severity IN ('CRITICAL', 'EMERGENCY')`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "resolved", func() bool {
		return count(t, conn, `SELECT count(*) FROM alert_occurrences WHERE alertname = 'CriticalEventsThreshold' AND status = 'resolved'`) == 1
	})
	if reboots(t, record) != 0 {
		t.Fatal("rebooted in dry-run")
	}
}

// TestLadderEscalatesToHardRestart: a container that keeps dying goes
// through the A ladder, escalates, and critical recovery (C) restarts all
// the application services in order.
func TestLadderEscalatesToHardRestart(t *testing.T) {
	t.Parallel()
	dying := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true, Args: []string{"-exit-after=300ms"}})
	other := dockertest.Run(t, dockertest.Spec{Labels: optIn(t)})
	before := dockertest.State(t, other).StartedAt
	dsn := pgtest.DSN(t)
	cfg := config(t, dsn, "")
	cr := cfg.Remediation("critical-recovery")
	cr.Steps = []policy.Action{{Type: "hard_restart", Params: &actions.HardRestartParams{Services: []string{other, dying}, Concurrency: 1}}}
	cr.Target = "application"
	in, conn := ready(t, cfg)
	if code := in.post(t, payload(t, "service-down-firing.json", dying)); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 60*time.Second, "hard restart", func() bool {
		return count(t, conn, `SELECT count(*) FROM recovery_actions WHERE remediation = 'critical-recovery' AND action_type = 'hard_restart' AND status <> 'running'`) >= 1
	})
	// The outage and two failed actions are three failures: the third
	// failure escalates.
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions WHERE remediation = 'service-down'`); n != 2 {
		t.Errorf("%d service-down actions before escalating, want 2", n)
	}
	if dockertest.State(t, other).StartedAt == before {
		t.Error("the hard restart did not restart the other service")
	}
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'escalation' AND remediation = 'service-down'`); n != 1 {
		t.Errorf("%d escalation events", n)
	}
	// The chain is visible in the timeline.
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'decision' AND remediation = 'critical-recovery'
		AND message LIKE 'running hard_restart%'`); n < 1 {
		t.Error("no critical-recovery decision event")
	}
}

// TestGPUThrottleRevertedWhenResolvedOrStopping: GPUTemperatureHigh (the
// real Alertmanager payload) lowers the power limit on the mock H100; the
// resolution restores it; and a throttle still in place when selfheal
// stops is restored on the way out.
func TestGPUThrottleRevertedWhenResolvedOrStopping(t *testing.T) {
	t.Parallel()
	f, err := gputest.Load("../../exporter/gpu/testdata/h100-nvml_idle.json")
	if err != nil {
		t.Fatal(err)
	}
	mock := gputest.NewServer(f, 1)
	dsn := pgtest.DSN(t)
	cfg := config(t, dsn, `
  - name: gpu-hot
    match: ['alertname="GPUTemperatureHigh"']
    category: B
    target: '{{ .Labels.gpu }}'
    action: {type: gpu_throttle, power_limit_ratio: 0.7}
    cooldown: 0s
`)
	cfg.Engine.RevertInterval = policy.Duration(100 * time.Millisecond)
	opts := func(o *server.Options) { o.GPUs = gpuctl.New(mock) }
	in := startWith(t, cfg, opts)
	in.waitReady(t)
	conn := db(t, dsn)
	limits := func() string {
		mock.Mu().Lock()
		defer mock.Mu().Unlock()
		return fmt.Sprint(mock.PowerLimits[0])
	}

	firing, err := os.ReadFile("testdata/gpu-temperature-firing.json")
	if err != nil {
		t.Fatal(err)
	}
	if code := in.post(t, firing); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "throttled", func() bool { return limits() == "[490000]" })
	resolved := strings.NewReplacer(`"status":"firing"`, `"status":"resolved"`, `"endsAt":"0001-01-01T00:00:00Z"`, `"endsAt":"2026-11-26T22:35:00Z"`).Replace(string(firing))
	if code := in.post(t, []byte(resolved)); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "restored on resolution", func() bool { return limits() == "[490000 700000]" })
	// The change is undone first, then recorded: wait for the record.
	waitFor(t, 10*time.Second, "the revert recorded", func() bool {
		return count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'reverted' AND message = 'gpu_throttle on 0 undone (alert resolved)'`) == 1
	})

	// A new occurrence throttles again; stopping selfheal restores.
	again := strings.ReplaceAll(string(firing), "2026-11-26T22:32:00.690544398Z", time.Now().UTC().Format(time.RFC3339Nano))
	if code := in.post(t, []byte(again)); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "throttled again", func() bool { return limits() == "[490000 700000 490000]" })
	in.stop()
	if got := limits(); got != "[490000 700000 490000 700000]" {
		t.Fatalf("limits after stopping: %s, want the last throttle undone", got)
	}
	if n := count(t, conn, `SELECT count(*) FROM pending_reverts WHERE reverted_at IS NULL`); n != 0 {
		t.Errorf("%d changes left in place", n)
	}
}
