package main

// The failure modes the seed names, each played through the shipped stack
// (gameday_test.go) and judged on the seed's own tables and functions:
// service_failures, recovery_actions, reboot_events, self_healing_events,
// get_service_failure_count and get_critical_events_count. `make scenarios`
// runs them alone; `make test` runs them with everything else. A failing
// scenario prints selfheal's events.

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/exporter/gpu/gputest"
	"github.com/selfheal/selfheal/internal/dockertest"
)

// seesContainer waits until Prometheus has scraped the container running.
func (g *gameDay) seesContainer(name string) {
	g.t.Helper()
	g.waitFor(30*time.Second, "Prometheus sees "+name+" running", func() bool {
		v, ok := g.promValue(g.t, `selfheal_container_running{name="`+name+`"}`)
		return ok && v == "1"
	})
}

// TestScenarioServiceStopped: a service stopped once is restarted once; the
// outage is one failure, and nothing escalates.
func TestScenarioServiceStopped(t *testing.T) {
	t.Parallel()
	g := startGameDay(t, gameDayOptions{})
	llm := g.name["llm-service"]
	g.seesContainer(llm)
	api, _ := dockertest.Client(t)
	if _, err := api.ContainerStop(context.Background(), llm, client.ContainerStopOptions{}); err != nil {
		t.Fatal(err)
	}
	g.waitFor(60*time.Second, llm+" running again", func() bool { return running(t, llm) })
	g.waitFor(30*time.Second, "the restart recorded", func() bool {
		return g.count(`SELECT count(*) FROM recovery_actions WHERE service_name = $1 AND remediation = 'service-down'
			AND action_type = 'restart' AND status = 'succeeded'`, llm) == 1
	})
	if n := g.count(`SELECT get_service_failure_count($1, 10)`, llm); n != 1 {
		t.Errorf("get_service_failure_count = %d, want 1 (the outage)", n)
	}
	g.waitFor(30*time.Second, "the alert resolved", func() bool {
		return g.count(`SELECT count(*) FROM self_healing_events WHERE event_type = 'alert_resolved' AND service_name = $1`, llm) == 1
	})
	if n := g.count(`SELECT count(*) FROM escalations`); n != 0 {
		t.Errorf("%d escalations after one stop", n)
	}
}

// TestScenarioCrashLoop: a service that dies eight seconds after every
// start. Each restart "succeeds", yet every outage counts: restart, then
// stop and start, then the third outage escalates to critical recovery,
// which runs its whole sequence; the next outage in the window runs nothing
// and is refused — held back for a person, handed off, not silently skipped.
func TestScenarioCrashLoop(t *testing.T) {
	t.Parallel()
	g := startGameDay(t, gameDayOptions{Specs: map[string]dockertest.Spec{"llm-service": {Args: []string{"-exit-after=8s"}}}})
	llm := g.name["llm-service"]
	g.waitFor(150*time.Second, "the escalation", func() bool {
		return g.count(`SELECT count(*) FROM escalations WHERE service_name = $1`, llm) == 1
	})
	g.waitFor(120*time.Second, "critical recovery's whole sequence", func() bool {
		return g.count(`SELECT count(*) FROM recovery_actions WHERE remediation = 'critical-recovery' AND status <> 'running'`) == 5
	})
	g.waitFor(90*time.Second, "the next outage decided", func() bool {
		return g.count(`SELECT count(*) FROM remediation_jobs j JOIN alert_occurrences o ON o.id = j.occurrence_id
			WHERE j.remediation = 'service-down' AND j.outcome = 'refused' AND o.labels->>'service' = $1`, llm) >= 1
	})
	if n := g.count(`SELECT get_service_failure_count($1, 10)`, llm); n < 3 {
		t.Errorf("get_service_failure_count = %d, want at least 3", n)
	}
	if got := strings.Join(g.actions("service-down"), " "); got != "restart:succeeded stop_start:succeeded" {
		t.Errorf("service-down actions: %s; want restart:succeeded stop_start:succeeded", got)
	}
	if n := g.count(`SELECT count(*) FROM escalations WHERE service_name = $1`, llm); n != 1 {
		t.Errorf("%d escalations, want exactly 1", n)
	}
	if n := g.count(`SELECT count(*) FROM recovery_actions a, escalations e
		WHERE a.remediation = 'service-down' AND a.started_at > e.created_at`); n != 0 {
		t.Errorf("%d category A actions after the escalation", n)
	}
	var order []string
	for _, a := range g.actions("critical-recovery") {
		order = append(order, strings.Split(a, ":")[0])
	}
	if got := strings.Join(order, " "); got != "hard_restart docker_prune log_cleanup vacuum gpu_reset" {
		t.Errorf("critical recovery ran %s", got)
	}
	if n := g.count(`SELECT get_critical_events_count(30)`); n < 1 {
		t.Errorf("get_critical_events_count(30) = %d: the escalation is a critical event", n)
	}
}

// TestScenarioUnhealthy: a container that turns unhealthy is restarted as
// soon as Docker says so, and is healthy again.
func TestScenarioUnhealthy(t *testing.T) {
	t.Parallel()
	g := startGameDay(t, gameDayOptions{Specs: map[string]dockertest.Spec{"llm-service": {Health: time.Second}}})
	llm := g.name["llm-service"]
	g.waitFor(30*time.Second, llm+" healthy", func() bool {
		st := dockertest.State(t, llm)
		return st.Health != nil && st.Health.Status == "healthy"
	})
	started := dockertest.State(t, llm).StartedAt
	dockertest.Exec(t, llm, "/testctr", "sick")
	sick := time.Now()
	g.waitFor(60*time.Second, llm+" restarted and healthy", func() bool {
		st := dockertest.State(t, llm)
		return st.StartedAt != started && st.Health != nil && st.Health.Status == "healthy"
	})
	t.Logf("unhealthy → healthy again in %s", time.Since(sick).Round(100*time.Millisecond))
	g.waitFor(30*time.Second, "the restart recorded", func() bool {
		return g.count(`SELECT count(*) FROM recovery_actions WHERE service_name = $1 AND remediation = 'container-unhealthy'
			AND action_type = 'restart' AND status = 'succeeded'`, llm) == 1
	})
}

// TestScenarioDiskFillsWithOldLogs: a data volume fills past 90, 95 and
// 97 % with rotated logs. Every level reaches selfheal (nothing inhibits the
// cleanups), the cleanup frees the disk, and the reboot — enabled, but a
// reboot cannot free a data volume — is refused.
func TestScenarioDiskFillsWithOldLogs(t *testing.T) {
	t.Parallel()
	diskMu.Lock()
	defer diskMu.Unlock()
	fs := newLoopFS(t, 48)
	logs, cache := fs.Mountpoint+"/logs", fs.Mountpoint+"/cache"
	g := startGameDay(t, gameDayOptions{RebootEnabled: true, LogRoots: []string{logs, cache}, Watch: fs.Mountpoint})
	fs.fill(t, cache, "empty", 0, false) // creates the directories
	fs.fill(t, logs, "app.log", 0, false)
	g.waitFor(30*time.Second, "Prometheus sees the volume", func() bool {
		_, ok := g.promValue(t, `selfheal_filesystem_size_bytes{mountpoint="`+fs.Mountpoint+`"}`)
		return ok
	})
	fs.fill(t, logs, "app.log", 0.98, true)
	g.waitFor(90*time.Second, "the three disk alerts at selfheal", func() bool {
		return g.count(`SELECT count(DISTINCT alertname) FROM alert_occurrences WHERE labels->>'mountpoint' = $1
			AND alertname IN ('DiskSpaceCleanup', 'DiskSpaceCritical', 'DiskSpaceExhausted')`, fs.Mountpoint) == 3
	})
	g.waitFor(90*time.Second, "the disk below 90 %", func() bool { return fs.used(t) < 0.9 })
	g.waitFor(30*time.Second, "the cleanup recorded", func() bool {
		return g.count(`SELECT count(*) FROM recovery_actions WHERE action_type = 'log_cleanup' AND status = 'succeeded'`) >= 1
	})
	g.waitFor(30*time.Second, "the reboot refused", func() bool {
		return g.count(`SELECT count(*) FROM remediation_jobs WHERE remediation = 'reboot' AND outcome = 'refused'
			AND reason LIKE 'reboot refused: a reboot cannot free %'`) >= 1
	})
	if n := g.rebootCount(); n != 0 {
		t.Errorf("rebooted %d times for a data volume", n)
	}
}

// TestScenarioDiskFullWhereRebootHelps: a mount point configured as one a
// reboot frees fills with data no cleanup may delete: with reboots enabled,
// exactly one guarded reboot runs, with its state saved, and the smaller
// remediations still in flight wait for it.
func TestScenarioDiskFullWhereRebootHelps(t *testing.T) {
	t.Parallel()
	diskMu.Lock()
	defer diskMu.Unlock()
	fs := newLoopFS(t, 48)
	g := startGameDay(t, gameDayOptions{RebootEnabled: true, Watch: fs.Mountpoint,
		Mountpoints: "[/, " + fs.Mountpoint + "]"})
	g.waitFor(30*time.Second, "Prometheus sees the volume", func() bool {
		_, ok := g.promValue(t, `selfheal_filesystem_size_bytes{mountpoint="`+fs.Mountpoint+`"}`)
		return ok
	})
	fs.fill(t, fs.Mountpoint+"/data", "blob", 0.98, false)
	g.waitFor(90*time.Second, "the reboot", func() bool { return g.rebootCount() == 1 })
	if n := g.count(`SELECT count(*) FROM reboot_events WHERE status = 'rebooting' AND pre_state ? 'services'`); n != 1 {
		t.Errorf("%d reboot_events with the saved state, want 1", n)
	}
	g.waitFor(90*time.Second, "a smaller remediation waiting for the reboot", func() bool {
		return g.count(`SELECT count(*) FROM remediation_jobs WHERE outcome = 'skipped'
			AND reason LIKE 'a guarded reboot is under way%'`) >= 1
	})
	// The alert is delivered again and reopens (reopen_after 5 s): the
	// reopened occurrence's job meets the guard, and no second reboot runs.
	g.waitFor(60*time.Second, "the reopened alert's reboot refused by the guard", func() bool {
		return g.count(guardRefusedSQL) >= 1
	})
	if n := g.rebootCount(); n != 1 {
		t.Errorf("%d reboots, want exactly 1", n)
	}
}

// guardRefusedSQL counts the reboot jobs the reboot guard refused: a
// reboot asked for again within its window.
const guardRefusedSQL = `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused'
	AND reason LIKE 'reboot refused: the last one was at %'`

// appDatabase returns the name of the application's database.
func (g *gameDay) appDatabase() string {
	u, err := url.Parse(g.appDB)
	if err != nil {
		g.t.Fatal(err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// databaseReachable lets the application's database accept connections,
// or refuses them and drops those it has, as a lost database would.
func (g *gameDay) databaseReachable(ok bool) {
	g.t.Helper()
	db := g.appDatabase()
	sql := `ALTER DATABASE "` + db + `" WITH ALLOW_CONNECTIONS ` + map[bool]string{true: "true", false: "false"}[ok]
	if _, err := g.DB.Exec(g.t.Context(), sql); err != nil {
		g.t.Fatal(err)
	}
	if !ok {
		if _, err := g.DB.Exec(g.t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db); err != nil {
			g.t.Fatal(err)
		}
	}
}

// TestScenarioDatabaseLost: the database probe fails, DatabaseDown fires,
// and critical recovery runs its sequence; the alert is a critical event.
func TestScenarioDatabaseLost(t *testing.T) {
	t.Parallel()
	g := startGameDay(t, gameDayOptions{})
	g.waitFor(30*time.Second, "the database probe succeeding", func() bool {
		v, ok := g.promValue(t, `selfheal_probe_success{probe="database"}`)
		return ok && v == "1"
	})
	g.databaseReachable(false)
	g.waitFor(90*time.Second, "critical recovery's whole sequence", func() bool {
		return g.count(`SELECT count(*) FROM recovery_actions WHERE remediation = 'critical-recovery' AND status <> 'running'`) == 5
	})
	got := strings.Join(g.actions("critical-recovery"), " ")
	if want := "hard_restart:succeeded docker_prune:succeeded log_cleanup:succeeded vacuum:failed gpu_reset:succeeded"; got != want {
		t.Errorf("critical recovery: %s\nwant %s (the database still refuses connections when it is vacuumed)", got, want)
	}
	if n := g.count(`SELECT count(*) FROM self_healing_events WHERE event_type = 'critical_alert' AND severity = 'CRITICAL'`); n != 1 {
		t.Errorf("%d critical_alert events, want 1", n)
	}
	g.databaseReachable(true)
	g.waitFor(60*time.Second, "DatabaseDown resolved", func() bool {
		return g.count(`SELECT count(*) FROM alert_occurrences WHERE alertname = 'DatabaseDown' AND status = 'resolved'`) == 1
	})
}

// TestScenarioThreeCriticalEvents: the database is lost three times within
// half an hour. Each loss is a critical event; the third raises the
// critical-events threshold, which reboots once when reboots are enabled,
// and is refused when they are not.
func TestScenarioThreeCriticalEvents(t *testing.T) {
	t.Parallel()
	for _, enabled := range []bool{false, true} {
		t.Run(map[bool]string{false: "reboot disabled", true: "reboot enabled"}[enabled], func(t *testing.T) {
			t.Parallel()
			g := startGameDay(t, gameDayOptions{RebootEnabled: enabled})
			for i := 1; i <= 3; i++ {
				g.waitFor(30*time.Second, "the database probe succeeding", func() bool {
					v, ok := g.promValue(t, `selfheal_probe_success{probe="database"}`)
					return ok && v == "1"
				})
				g.databaseReachable(false)
				g.waitFor(60*time.Second, "DatabaseDown firing", func() bool {
					return g.count(`SELECT count(*) FROM alert_occurrences WHERE alertname = 'DatabaseDown'`) == i
				})
				g.databaseReachable(true)
				g.waitFor(60*time.Second, "DatabaseDown resolved", func() bool {
					return g.count(`SELECT count(*) FROM alert_occurrences WHERE alertname = 'DatabaseDown' AND status = 'resolved'`) == i
				})
			}
			if n := g.count(`SELECT get_critical_events_count(30)`); n < 3 {
				t.Errorf("get_critical_events_count(30) = %d, want at least 3", n)
			}
			if !enabled {
				g.waitFor(60*time.Second, "the reboot refused", func() bool {
					return g.count(`SELECT count(*) FROM remediation_jobs WHERE remediation = 'critical-events-reboot'
						AND outcome = 'refused' AND reason LIKE 'reboot refused: reboots are disabled%'`) >= 1
				})
				if n := g.rebootCount(); n != 0 {
					t.Errorf("rebooted %d times with reboots disabled", n)
				}
				return
			}
			g.waitFor(60*time.Second, "the reboot", func() bool { return g.rebootCount() == 1 })
			// The threshold alert stays up and reopens: its job meets the
			// guard, and no second reboot runs.
			g.waitFor(60*time.Second, "the reopened alert's reboot refused by the guard", func() bool {
				return g.count(guardRefusedSQL) >= 1
			})
			if n := g.rebootCount(); n != 1 {
				t.Errorf("%d reboots, want exactly 1", n)
			}
			if n := g.count(`SELECT count(*) FROM reboot_events WHERE reason <> ''`); n != 1 {
				t.Errorf("%d reboot_events with their reason, want 1", n)
			}
		})
	}
}

// burnCPU keeps every core busy until the returned function is called.
func burnCPU(t testing.TB) (stop func()) {
	t.Helper()
	// One busy loop per core under SCHED_IDLE: it takes only the time no
	// other process wants, which the kernel still counts as busy (not
	// idle) — the host is overloaded for the rules, and the tests running
	// beside this one are not slowed.
	var procs []*exec.Cmd
	for range runtime.NumCPU() {
		cmd := exec.Command("chrt", "--idle", "0", "sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start a CPU burner: %v", err)
		}
		procs = append(procs, cmd)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for _, p := range procs {
				_ = p.Process.Kill()
				_, _ = p.Process.Wait()
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestScenarioCPUOverload: the machine's CPU really busy: HostCPUHigh
// clears the LLM cache once, and its cooldown holds while the load lasts.
// The burn runs at the lowest priority there is, so it runs beside the
// other tests without slowing them.
func TestScenarioCPUOverload(t *testing.T) {
	t.Parallel()
	g := startGameDay(t, gameDayOptions{})
	stop := burnCPU(t)
	g.waitFor(180*time.Second, "the LLM cache cleared", func() bool { return g.hook.count("POST /v1/cache/clear") >= 1 })
	g.waitFor(60*time.Second, "the cooldown holding the next step", func() bool {
		return g.count(`SELECT count(*) FROM remediation_jobs WHERE remediation = 'cpu-high' AND outcome = 'skipped'
			AND reason LIKE 'in cooldown until %'`) >= 1
	})
	stop()
	if n := g.hook.count("POST /v1/cache/clear"); n != 1 {
		t.Errorf("the cache was cleared %d times within its cooldown", n)
	}
	if n := g.count(`SELECT count(*) FROM recovery_actions WHERE remediation = 'cpu-high' AND action_type = 'http' AND status = 'succeeded'`); n != 1 {
		t.Errorf("%d cpu-high actions, want 1", n)
	}
}

// TestScenarioGPUHotAndBusy: the NVML mock of two H100s (the fixture's
// readings) runs at 87 °C and 97 % utilisation, as no GPU on this machine
// can; the shipped rules fire from the exporter's scrape of it. The power
// limit is lowered to 70 % of the default (gpu_throttle, undone when the
// alert resolves), the LLM service is restarted (above 85 °C), and the
// session reset restarts the container whose process holds GPU 0.
// TestScenarioGPUXidRestartsHolders: the driver logs XID 43 (an
// application's fault: the GPU stopped its channel) for GPU 0 in the
// kernel log; the gpu collector reads it there, the shipped rule raises
// GPUXidApplicationError, and the shipped gpu-xid-holders remediation
// restarts the container holding GPU 0 — once.
// kernelLog is a file standing for /dev/kmsg, which the fixture build of
// selfheal reads for XIDs (--collector.gpu.kernel-log).
type kernelLog struct {
	t    testing.TB
	path string
	seq  int
}

func newKernelLog(t testing.TB) *kernelLog {
	k := &kernelLog{t: t, path: filepath.Join(t.TempDir(), "kmsg")}
	k.write("6,%d,1,-;NVRM: loading NVIDIA UNIX x86_64 Kernel Module\n")
	return k
}

func (k *kernelLog) arg() string { return "--collector.gpu.kernel-log=" + k.path }

// xid appends the driver's line for an XID on GPU 0 (the fixture's GPU 0
// is at PCI 0000:00:06.0).
func (k *kernelLog) xid(code int) {
	k.write("4,%d,2,-;NVRM: Xid (PCI:0000:00:06): " + strconv.Itoa(code) + ", pid=4242, name=api, Ch 00000008\n")
}

func (k *kernelLog) write(format string) {
	k.t.Helper()
	k.seq++
	f, err := os.OpenFile(k.path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		k.t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, format, k.seq)
	f.Close()
	if err != nil {
		k.t.Fatal(err)
	}
}

// waitForXIDSeries waits until Prometheus holds GPU 0's count of code at
// 0: the next error of it is an increase the rules see.
func (g *gameDay) waitForXIDSeries(code int) {
	g.t.Helper()
	g.waitFor(30*time.Second, fmt.Sprintf("Prometheus holding GPU 0's XID %d count at 0", code), func() bool {
		v, ok := g.promValue(g.t, fmt.Sprintf(`selfheal_gpu_xid_errors_total{gpu="0",xid="%d"}`, code))
		return ok && v == "0"
	})
}

func TestScenarioGPUXidRestartsHolders(t *testing.T) {
	t.Parallel()
	kmsg := newKernelLog(t)
	g := startGameDay(t, gameDayOptions{GPU: func(*gputest.Reading) {}, Args: []string{kmsg.arg()}})
	api := g.name["api"]
	before := dockertest.State(t, api).StartedAt
	g.waitForXIDSeries(43)
	kmsg.xid(43)
	g.waitFor(90*time.Second, "GPU 0's holder restarted for the XID", func() bool {
		return g.count(`SELECT count(*) FROM recovery_actions WHERE remediation = 'gpu-xid-holders' AND service_name = '0'
			AND action_type = 'gpu_session_reset' AND status = 'succeeded' AND details->'containers' ? $1`, api) == 1
	})
	if after := dockertest.State(t, api).StartedAt; after == before {
		t.Fatalf("the api container was not restarted (started %s)", after)
	}
	if v, ok := g.promValue(t, `selfheal_gpu_xid_errors_total{gpu="0",xid="43",action="restart_holders"}`); !ok || v != "1" {
		t.Fatalf("XID 43 on GPU 0 counted %q (%v), want 1", v, ok)
	}
}

// gpuStandIn replaces the shipped GPU ladder's nvidia-smi commands with a
// stand-in that appends what it was asked to a file (and, with failReset,
// fails the reset): the game day never runs nvidia-smi.
func gpuStandIn(t testing.TB, failReset bool) (record string, pairs []string) {
	record = filepath.Join(t.TempDir(), "nvidia-smi")
	reset := fmt.Sprintf("echo reset {{ .UUID }} >> %s", record)
	if failReset {
		reset += "; echo Unable to reset GPU: In use by another client; exit 255"
	}
	return record, []string{
		"command: [nvidia-smi, --gpu-reset, -i, '{{ .UUID }}']", fmt.Sprintf("command: [sh, -c, '%s']", reset),
		"persistence_command: [nvidia-smi, -i, '{{ .UUID }}', -pm, '{{ .Mode }}']",
		fmt.Sprintf("persistence_command: [sh, -c, 'echo pm {{ .Mode }} {{ .UUID }} >> %s']", record),
	}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// TestScenarioGPUXidResetsTheGPU: XID 79 in the kernel log, through the
// shipped rules and routing, runs the GPU ladder on GPU 0: its holder
// (api) stopped, persistence mode (on, as on the recorded H100) turned
// off, the GPU reset by UUID, checked, persistence mode on again, the
// holder started.
func TestScenarioGPUXidResetsTheGPU(t *testing.T) {
	t.Parallel()
	kmsg := newKernelLog(t)
	record, pairs := gpuStandIn(t, false)
	g := startGameDay(t, gameDayOptions{GPU: func(r *gputest.Reading) {
		if r.PersistenceMode != 1 {
			t.Fatalf("the recorded H100 had persistence mode %d, the game day expects it on", r.PersistenceMode)
		}
	}, Args: []string{kmsg.arg()}, Extra: append(pairs,
		// The drain, shipped commented out, switched on as an operator would.
		"    # drain: {http: {url: 'http://localhost:8000/admin/drain'}, until: 'sum(vllm:num_requests_running)', prometheus_url: 'http://localhost:9090'",
		"    drain: {http: {url: '$HOOK/admin/drain'}, until: 'sum(vllm:num_requests_running)', prometheus_url: '$HOOK'")})
	api := g.name["api"]
	before := dockertest.State(t, api).StartedAt
	uuid := fixtureUUID(t)
	g.waitForXIDSeries(79)
	kmsg.xid(79)
	g.waitFor(90*time.Second, "the GPU ladder on GPU 0", func() bool {
		return g.count(`SELECT count(*) FROM recovery_actions WHERE remediation = 'gpu-recovery' AND service_name = '0'
			AND action_type = 'gpu_recover' AND status <> 'running'`) == 1
	})
	if got := g.actions("gpu-recovery"); strings.Join(got, " ") != "gpu_recover:succeeded stop_start:succeeded" {
		t.Fatalf("gpu-recovery's actions: %v, want the ladder and the holder's stop and start", got)
	}
	want := fmt.Sprintf("pm 0 %[1]s\nreset %[1]s\npm 1 %[1]s\n", uuid)
	if got := readFile(t, record); got != want {
		t.Fatalf("nvidia-smi was asked\n%s\nwant\n%s", got, want)
	}
	if n := g.count(`SELECT count(*) FROM recovery_actions WHERE remediation = 'gpu-recovery' AND action_type = 'stop_start'
		AND service_name = $1 AND job_id = (SELECT job_id FROM recovery_actions WHERE action_type = 'gpu_recover')`, api); n != 1 {
		t.Errorf("%d stop_start rows for the holder %s under the ladder's job, want 1", n, api)
	}
	if st := dockertest.State(t, api); !st.Running || st.StartedAt == before {
		t.Fatalf("the holder is not running in a new run: %+v", st)
	}
	if n := g.count(`SELECT count(*) FROM escalations WHERE remediation = 'gpu-recovery'`); n != 0 {
		t.Errorf("%d escalations of a ladder that held", n)
	}
	// Drained first: the hook called once, Prometheus asked, both kept.
	if n := g.hook.count("POST /admin/drain"); n != 1 || g.hook.count("GET /api/v1/query") == 0 {
		t.Errorf("drain hook called %d times, Prometheus asked %d times", n, g.hook.count("GET /api/v1/query"))
	}
	if n := g.count(`SELECT count(*) FROM recovery_actions WHERE action_type = 'gpu_recover' AND details->'drain'->>'outcome' = 'drained'`); n != 1 {
		t.Errorf("the ladder's action does not record the drain")
	}
}

// TestScenarioGPULadderRefusesThenEscalates: a container without the
// opt-in label holding GPU 0 refuses the ladder for XID 48, naming it,
// before anything is touched. Once it is gone, XID 79 runs the ladder; the
// reset fails, the holder is started again, and the failure escalates to
// the guarded reboot.
func TestScenarioGPULadderRefusesThenEscalates(t *testing.T) {
	t.Parallel()
	kmsg := newKernelLog(t)
	record, pairs := gpuStandIn(t, true)
	g := startGameDay(t, gameDayOptions{GPU: func(*gputest.Reading) {}, GPUIntruder: true, RebootEnabled: true,
		Args: []string{kmsg.arg()}, Extra: pairs})
	api := g.name["api"]
	before := dockertest.State(t, api).StartedAt
	g.waitForXIDSeries(48)
	kmsg.xid(48)
	g.waitFor(90*time.Second, "the ladder refused, naming the holder without the label", func() bool {
		return g.count(`SELECT count(*) FROM self_healing_events WHERE remediation = 'gpu-recovery' AND details->>'verdict' = 'refused'
			AND strpos(message, 'GPU 0 recovery refused, nothing touched') > 0 AND strpos(message, $1) > 0`, g.intruder) > 0
	})
	if got := readFile(t, record); got != "" || dockertest.State(t, api).StartedAt != before {
		t.Fatalf("refused, yet nvidia-smi was asked %q or the opted-in holder was restarted", got)
	}
	if got := g.actions("gpu-recovery"); len(got) != 0 {
		t.Fatalf("refused, yet gpu-recovery acted: %v", got)
	}

	dockertest.Kill(t, g.intruder)
	g.waitForXIDSeries(79)
	kmsg.xid(79)
	g.waitFor(90*time.Second, "the failed reset escalated to the reboot", func() bool { return g.rebootCount() == 1 })
	if got := g.actions("gpu-recovery"); strings.Join(got, " ") != "gpu_recover:failed stop_start:succeeded" {
		t.Fatalf("gpu-recovery's actions: %v, want the failed ladder and the holder started again", got)
	}
	if got := readFile(t, record); !strings.Contains(got, "reset ") || !strings.HasSuffix(got, "pm 1 "+fixtureUUID(t)+"\n") {
		t.Errorf("nvidia-smi was asked %q: a reset, then persistence mode on again", got)
	}
	if n := g.count(`SELECT count(*) FROM escalations WHERE remediation = 'gpu-recovery' AND escalate_to = 'critical-events-reboot'`); n != 1 {
		t.Errorf("%d escalations of gpu-recovery to the reboot, want 1", n)
	}
	if n := g.count(`SELECT count(*) FROM recovery_actions a JOIN remediation_jobs j ON j.id = a.job_id
		WHERE a.remediation = 'critical-events-reboot' AND a.action_type = 'reboot' AND j.occurrence_id =
			(SELECT j2.occurrence_id FROM recovery_actions a2 JOIN remediation_jobs j2 ON j2.id = a2.job_id WHERE a2.action_type = 'gpu_recover')`); n != 1 {
		t.Errorf("%d reboots on the failed ladder's occurrence, want 1 (the reboot came from elsewhere)", n)
	}
	if !dockertest.State(t, api).Running {
		t.Error("the holder was left stopped after the failed reset")
	}
}

// fixtureUUID is the UUID of the fixture's GPU 0 (the recorded H100's).
func fixtureUUID(t testing.TB) string {
	t.Helper()
	f, err := gputest.Load("../../exporter/gpu/testdata/h100-nvml_idle.json")
	if err != nil {
		t.Fatal(err)
	}
	return f.Devices[0].UUID
}

func TestScenarioGPUHotAndBusy(t *testing.T) {
	t.Parallel()
	g := startGameDay(t, gameDayOptions{GPU: func(r *gputest.Reading) { r.TempC, r.Util.Gpu = 87, 97 }})
	llm, api := g.name["llm-service"], g.name["api"]
	g.waitFor(60*time.Second, "GPU 0's power limit at 70 % of 700 W", func() bool {
		v, ok := g.promValue(t, `selfheal_gpu_power_limit_watts{gpu="0"}`)
		return ok && v == "490"
	})
	g.waitFor(60*time.Second, "gpu-critical restarting the LLM service", func() bool {
		return g.count(`SELECT count(*) FROM recovery_actions WHERE remediation = 'gpu-critical' AND action_type = 'restart'
			AND status = 'succeeded' AND service_name = $1`, llm) == 1
	})
	g.waitFor(60*time.Second, "GPU 0's session reset", func() bool {
		return g.count(`SELECT count(*) FROM recovery_actions WHERE remediation = 'gpu-busy' AND service_name = '0'
			AND status = 'succeeded' AND details->'containers' ? $1`, api) == 1
	})
	if n := g.count(`SELECT count(*) FROM pending_reverts WHERE action_type = 'gpu_throttle' AND reverted_at IS NULL`); n != 2 {
		t.Errorf("%d throttles waiting to be undone, want 2 (one per GPU)", n)
	}
}
