package main

import (
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

const reloadConfigA = `
engine: {poll_interval: 200ms}
targets:
  docker: {stop_timeout: 2s}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [{type: stop_start, wait: 3s}]
    verify: {timeout: 20s, stable_for: 1s}
`

// reloadConfigB drops service-down and adds cache-clear.
const reloadConfigB = `
engine: {poll_interval: 200ms}
remediations:
  - name: cache-clear
    match: ['alertname="HostCPUHigh"']
    category: B
    target: llm
    dry_run: true
    action: {type: http, url: 'http://127.0.0.1:1/clear'}
`

// postReload asks the selfheal at addr to reload, and returns its answer.
func postReload(t *testing.T, addr string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReload: POST /-/reload and SIGHUP put a valid file in force, an
// invalid one keeps the running configuration and says why, and a job
// under way when the policy changes finishes under the one it started
// with.
func TestReload(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeConfig(t, requireLabel, reloadConfigA)
	addr := freeAddr(t)
	proc := daemon(t, env, config, addr, "--web.enable-lifecycle", "--log.level=debug")
	conn := connect(t, dsn)
	metric := func(name string) string {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, name+" ") {
				return strings.TrimPrefix(l, name+" ")
			}
		}
		return ""
	}
	reload := func() (int, string) { t.Helper(); return postReload(t, addr) }
	simulate := func(args ...string) { t.Helper(); post(t, env, addr, args...) }

	// A stop and start under way (it waits 3 s between the two) ...
	simulate("ServiceDown", "service="+name)
	dockertest.WaitFor(t, 10*time.Second, "stop_start under way", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 1
	})
	// ... when the policy changes to one without its remediation.
	if err := os.WriteFile(config, []byte(optedIn(t, reloadConfigB, requireLabel)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := reload(); code != http.StatusOK {
		t.Fatalf("reload of a valid file: %d %s", code, body)
	}
	dockertest.WaitFor(t, 20*time.Second, "the job under way finished", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE action_type = 'stop_start' AND status = 'succeeded'`) == 1
	})
	if !running(t, name) {
		t.Fatal("the container is not running after its stop_start")
	}
	// New alerts meet the new policy.
	simulate("HostCPUHigh", "instance=localhost:9595")
	dockertest.WaitFor(t, 10*time.Second, "HostCPUHigh decided by cache-clear", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE remediation = 'cache-clear' AND outcome = 'dry_run'`) == 1
	})

	// An invalid file keeps the running configuration.
	if err := os.WriteFile(config, []byte("remediations:\n  - name: x\n    bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := reload(); code != http.StatusInternalServerError || !strings.Contains(body, `unknown field "bogus"`) {
		t.Fatalf("reload of an invalid file: %d %s", code, body)
	}
	if v := metric("selfheal_config_last_reload_successful"); v != "0" {
		t.Fatalf("selfheal_config_last_reload_successful = %q after a failed reload", v)
	}
	simulate("HostCPUHigh", "instance=localhost:9595", "--starts-at="+time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano))
	dockertest.WaitFor(t, 10*time.Second, "the running configuration still in force", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE remediation = 'cache-clear'`) == 2
	})

	// SIGHUP reloads too.
	if err := os.WriteFile(config, []byte(optedIn(t, reloadConfigA, requireLabel)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := proc.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	dockertest.WaitFor(t, 10*time.Second, "reloaded on SIGHUP", func() bool {
		return metric("selfheal_config_last_reload_successful") == "1"
	})
}

// TestReloadWithdrawsOptIn: a reload that takes a container out of
// targets.docker.containers is in force at once — for a job already
// queued for it and for new alerts: nothing touches it again. A reload
// that changes a setting read only at start is refused, naming it, and
// changes nothing.
func TestReloadWithdrawsOptIn(t *testing.T) {
	t.Parallel()
	label := dockertest.UniqueName("selfheal.reload")
	withdrawn := dockertest.Run(t, dockertest.Spec{})
	// slow holds the one action max_concurrent_actions allows while the
	// reload happens (it ignores SIGTERM: the restart waits its stop timeout).
	slow := dockertest.Run(t, dockertest.Spec{Labels: map[string]string{label: "yes"}, Args: []string{"-ignore-term"}})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	const body = `
engine: {poll_interval: 200ms, max_concurrent_actions: 1}
targets:
  docker: {require_label: LABEL=yes, containers: [LISTED], stop_timeout: 3s}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart]
    max_failures: 0
    verify: {timeout: 20s, stable_for: 1s}
`
	write := func(listed string, extra ...string) string {
		return strings.NewReplacer(append([]string{"LABEL", label, "LISTED", listed}, extra...)...).Replace(body)
	}
	config := writeFile(t, "selfheal.yml", write(withdrawn))
	addr := freeAddr(t)
	daemon(t, env, config, addr, "--web.enable-lifecycle", "--log.level=debug")
	conn := connect(t, dsn)
	reload := func() (int, string) { t.Helper(); return postReload(t, addr) }
	startedAt := dockertest.State(t, withdrawn).StartedAt

	post(t, env, addr, "ServiceDown", "service="+slow)
	dockertest.WaitFor(t, 10*time.Second, "the slow restart under way", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 1
	})
	post(t, env, addr, "ServiceDown", "service="+withdrawn)
	dockertest.WaitFor(t, 10*time.Second, "the withdrawn container's job waiting for the limit", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued' AND reason LIKE '%actions running%'`) == 1
	})
	if err := os.WriteFile(config, []byte(write("other-container")), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, msg := reload(); code != http.StatusOK {
		t.Fatalf("reload: %d %s", code, msg)
	}
	dockertest.WaitFor(t, 20*time.Second, "the queued job decided under the new configuration", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused' AND reason LIKE '%not listed in targets.docker.containers%'`) == 1
	})
	post(t, env, addr, "ServiceDown", "service="+withdrawn, "--starts-at="+time.Now().UTC().Format(time.RFC3339Nano))
	dockertest.WaitFor(t, 10*time.Second, "a new alert refused", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused'`) == 2
	})
	if n := queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE service_name = $1`, withdrawn); n != 0 {
		t.Errorf("%d actions on the withdrawn container", n)
	}
	if got := dockertest.State(t, withdrawn).StartedAt; got != startedAt {
		t.Errorf("the withdrawn container was restarted (started %s, then %s)", startedAt, got)
	}

	// A setting read only at start: refused, named, nothing changed.
	if err := os.WriteFile(config, []byte(write(withdrawn)+"webhook: {max_body_bytes: 4096}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, msg := reload(); code != http.StatusInternalServerError || !strings.Contains(msg, "webhook.max_body_bytes take effect only at start") {
		t.Fatalf("reload changing webhook.max_body_bytes: %d %s", code, msg)
	}
	post(t, env, addr, "ServiceDown", "service="+withdrawn, "--starts-at="+time.Now().UTC().Format(time.RFC3339Nano))
	dockertest.WaitFor(t, 10*time.Second, "the running configuration still in force", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused'`) == 3
	})
}
