package main

// Limits under concurrency: two replicas of four workers each, the
// deliveries for several targets arriving at once — and, as from an
// Alertmanager HA pair, at both replicas at once. However the decisions
// interleave, the storm brake and max_concurrent_actions admit no more
// than they allow.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/selfheal/selfheal/exporter/gpu/gputest"
	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

// actionReceiver is the endpoint an http action calls: it holds each call
// for hold and remembers the most calls it ever had in flight.
type actionReceiver struct {
	hold              time.Duration
	inFlight, maxSeen atomic.Int64
	calls             atomic.Int64
}

func (a *actionReceiver) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	n := a.inFlight.Add(1)
	for {
		m := a.maxSeen.Load()
		if n <= m || a.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	a.calls.Add(1)
	time.Sleep(a.hold)
	a.inFlight.Add(-1)
}

// deliverAtOnce posts one delivery of alerts — one per target, all new
// occurrences starting at startsAt — to every replica at the same moment.
func deliverAtOnce(t *testing.T, replicas []string, alertname string, targets []string, startsAt time.Time) {
	t.Helper()
	var alerts []map[string]any
	for _, target := range targets {
		alerts = append(alerts, map[string]any{"status": "firing", "startsAt": startsAt.UTC().Format(time.RFC3339Nano),
			"labels": map[string]string{"alertname": alertname, "service": target, "instance": "localhost:9595"}})
	}
	body, _ := json.Marshal(map[string]any{"version": "4", "status": "firing", "groupKey": "{}:{}", "alerts": alerts})
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, addr := range replicas {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/webhook", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer tok")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("delivery to %s: %d", addr, resp.StatusCode)
			}
		})
	}
	close(start)
	wg.Wait()
}

// TestLimitsHoldAcrossReplicas: two `selfheal serve` replicas of four
// workers on one database. Each wave delivers alerts for five targets to
// both replicas at once (an Alertmanager HA pair). With the storm brake at
// one action per window, no window ever holds two actions; with
// max_concurrent_actions at one, no two actions ever run at once — seen by
// the endpoint the actions call and in recovery_actions — and every alert
// is acted on in turn.
func TestLimitsHoldAcrossReplicas(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		engine string
		waves  int
		gap    time.Duration // between waves
	}{
		{name: "storm brake", waves: 20, gap: 600 * time.Millisecond,
			engine: `{workers: 4, poll_interval: 100ms, max_concurrent_actions: 100, storm_brake: {max_actions: 1, window: 500ms}}`},
		{name: "max_concurrent_actions", waves: 20, gap: 150 * time.Millisecond,
			engine: `{workers: 4, poll_interval: 100ms, max_concurrent_actions: 1, storm_brake: {max_actions: 1000}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			recv := &actionReceiver{hold: 80 * time.Millisecond}
			srv := httptest.NewServer(recv)
			defer srv.Close()
			dsn := pgtest.DSN(t)
			env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
			config := writeFile(t, "selfheal.yml", fmt.Sprintf(`
engine: %s
targets: {docker: {require_label: %s}}
remediations:
  - name: overload
    match: ['alertname="ServiceOverloaded"']
    category: B
    target: '{{ .Labels.service }}'
    action: {type: http, url: '%s/act'}
    cooldown: 0s
    timeout: 10s
`, tc.engine, dockertest.UniqueName("selfheal.limits")+"=yes", srv.URL))
			replicas := []string{freeAddr(t), freeAddr(t)}
			for _, addr := range replicas {
				daemon(t, env, config, addr, "--log.level=info", "--no-exporter")
			}
			conn := connect(t, dsn)
			base := time.Now()
			for w := range tc.waves {
				var targets []string
				for i := range 5 {
					targets = append(targets, fmt.Sprintf("svc-%d-%d", w, i))
				}
				deliverAtOnce(t, replicas, "ServiceOverloaded", targets, base.Add(time.Duration(w)*time.Millisecond))
				time.Sleep(tc.gap)
			}
			dockertest.WaitFor(t, 60*time.Second, "every job decided", func() bool {
				return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued'`) == 0 &&
					queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 0
			})
			// Every delivery reached both replicas: one occurrence and one
			// job per target all the same.
			if n := queryInt(t, conn, `SELECT count(*) FROM alert_occurrences WHERE deliveries = 2`); n != 5*tc.waves {
				t.Errorf("%d occurrences delivered twice, want %d", n, 5*tc.waves)
			}
			if n := queryInt(t, conn, `SELECT count(*) FROM remediation_jobs`); n != 5*tc.waves {
				t.Errorf("%d jobs, want one per target: %d", n, 5*tc.waves)
			}
			actions := queryInt(t, conn, `SELECT count(*) FROM recovery_actions`)
			overlapping := queryInt(t, conn, `SELECT count(*) FROM recovery_actions a JOIN recovery_actions b ON a.id < b.id
				AND a.started_at < b.completed_at AND b.started_at < a.completed_at`)
			switch tc.name {
			case "storm brake":
				if crowded := queryInt(t, conn, `SELECT count(*) FROM recovery_actions a JOIN recovery_actions b ON a.id < b.id
					AND abs(EXTRACT(EPOCH FROM b.started_at - a.started_at)) < 0.5`); crowded != 0 {
					t.Errorf("%d pairs of actions within one storm window of 500ms (limit 1)", crowded)
				}
				if actions < tc.waves/2 || actions > tc.waves+1 {
					t.Errorf("%d actions over %d waves a window apart, want about one a wave", actions, tc.waves)
				}
			case "max_concurrent_actions":
				if recv.maxSeen.Load() != 1 || overlapping != 0 {
					t.Errorf("%d actions ran at once at the endpoint, %d overlapping pairs recorded: the limit is 1", recv.maxSeen.Load(), overlapping)
				}
				if actions != 5*tc.waves || recv.calls.Load() != int64(5*tc.waves) {
					t.Errorf("%d actions recorded, %d calls: want every one of the %d alerts acted on in turn", actions, recv.calls.Load(), 5*tc.waves)
				}
			}
			if n := queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused' OR state = 'interrupted'`); n != 0 {
				t.Errorf("%d jobs refused or interrupted", n)
			}
			if t.Failed() {
				_, out, _ := selfheal(t, env, "events", "--limit=60")
				t.Log(strings.TrimSpace(out))
			}
		})
	}
}

// TestKillBetweenChangeAndOutcome: selfheal killed (SIGKILL) after it
// lowered a GPU's power limit and before it recorded the outcome. The
// undoing was recorded with the intent, before the change, so the next
// start restores the limit when the alert resolves. (The GPU is go-nvml's
// mock, its limits kept in a file so that they outlive the killed process
// as a real GPU's do.)
func TestKillBetweenChangeAndOutcome(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	state := filepath.Join(t.TempDir(), "gpu-limits.json")
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok",
		"SELFHEAL_NVML_FIXTURE=" + gpuFixture(t, func(*gputest.Reading) {}), "SELFHEAL_NVML_STATE=" + state}
	config := writeFile(t, "selfheal.yml", `
engine: {poll_interval: 200ms, revert_interval: 200ms}
targets: {docker: {require_label: `+dockertest.UniqueName("selfheal.gpu")+`=yes}}
remediations:
  - name: gpu-hot
    match: ['alertname="GPUTemperatureHigh"']
    category: B
    target: '{{ .Labels.gpu }}'
    action: {type: gpu_throttle, power_limit_ratio: 0.7}
    cooldown: 0s
    timeout: 30s
`)
	limit := func() uint32 {
		b, err := os.ReadFile(state)
		if err != nil {
			return 0
		}
		var kept map[string]uint32
		if err := json.Unmarshal(b, &kept); err != nil {
			t.Fatal(err)
		}
		return kept["0"]
	}
	addr := freeAddr(t)
	first := daemonOf(t, fixtureBinary(t), append(env, "SELFHEAL_NVML_SET_LIMIT_STALL=1m"), config, addr)
	startsAt := time.Now().UTC().Format(time.RFC3339Nano)
	post(t, env, addr, "GPUTemperatureHigh", "gpu=0", "instance=localhost:9595", "--starts-at="+startsAt)
	conn := connect(t, dsn)
	dockertest.WaitFor(t, 15*time.Second, "the limit lowered, the action not finished", func() bool {
		return limit() == 490000 && queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 1
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = first.Process.Wait()

	daemonOf(t, fixtureBinary(t), env, config, addr)
	post(t, env, addr, "GPUTemperatureHigh", "gpu=0", "instance=localhost:9595", "--starts-at="+startsAt, "--resolved")
	dockertest.WaitFor(t, 45*time.Second, "the limit restored once the alert resolved", func() bool { return limit() == 700000 })
	dockertest.WaitFor(t, 10*time.Second, "the revert recorded", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM pending_reverts WHERE reverted_at IS NOT NULL AND result = 'reverted: alert resolved'`) == 1
	})
}

// TestDatabaseRestartDuringStopStart: PostgreSQL fast-restarted while a
// stop and start runs (the container ignores SIGTERM, so the stop takes
// its timeout). The worker's claim holds no connection while its action
// runs: the action finishes, its outcome is recorded once the server is
// back, and no other worker takes it for interrupted or starts the next
// step meanwhile.
func TestDatabaseRestartDuringStopStart(t *testing.T) {
	t.Parallel()
	label := dockertest.UniqueName("selfheal.dbrestart")
	name := dockertest.Run(t, dockertest.Spec{Labels: map[string]string{label: "yes"}, Args: []string{"-ignore-term"}})
	cluster := pgtest.NewCluster(t)
	dsn := cluster.URL()
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeFile(t, "selfheal.yml", `
engine: {poll_interval: 200ms}
targets: {docker: {require_label: `+label+`=yes, stop_timeout: 4s}}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [{type: stop_start, wait: 1s}, restart]
    timeout: 40s
    verify: {timeout: 20s, stable_for: 1s}
`)
	addr := freeAddr(t)
	daemon(t, env, config, addr)
	post(t, env, addr, "ServiceDown", "service="+name)
	conn := connect(t, dsn)
	dockertest.WaitFor(t, 10*time.Second, "stop_start under way", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 1
	})
	conn.Close(context.Background())
	cluster.Stop() // fast shutdown: every session is disconnected
	time.Sleep(time.Second)
	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	conn = connect(t, dsn)
	dockertest.WaitFor(t, 40*time.Second, "the outcome recorded", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status <> 'running'`) == 1
	})
	if !running(t, name) {
		t.Error(name + " is not running")
	}
	if n := queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'succeeded' AND action_type = 'stop_start'`); n != 1 {
		t.Errorf("%d successful stop_start actions, want the one that ran through the restart", n)
	}
	time.Sleep(2 * time.Second) // a follow-up step, were one queued, would be due
	if n := queryInt(t, conn, `SELECT count(*) FROM recovery_actions`); n != 1 {
		t.Errorf("%d actions, want 1", n)
	}
	if n := queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'interrupted'`) +
		queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'interrupted' OR step > 1`); n != 0 {
		t.Errorf("%d interrupted actions, interrupted jobs or later steps, want none", n)
	}
}
