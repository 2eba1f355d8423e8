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

// TestReload: POST /-/reload and SIGHUP put a valid file in force, an
// invalid one keeps the running configuration and says why, and a job
// under way when the policy changes finishes under the one it started
// with.
func TestReload(t *testing.T) {
	name := dockertest.Run(t, dockertest.Spec{Labels: map[string]string{"selfheal.enable": "true"}})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeFile(t, "selfheal.yml", reloadConfigA)
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
	reload := func() (int, string) {
		t.Helper()
		resp, err := http.Post("http://"+addr+"/-/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	simulate := func(args ...string) { t.Helper(); post(t, env, addr, args...) }

	// A stop and start under way (it waits 3 s between the two) ...
	simulate("ServiceDown", "service="+name)
	dockertest.WaitFor(t, 10*time.Second, "stop_start under way", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 1
	})
	// ... when the policy changes to one without its remediation.
	if err := os.WriteFile(config, []byte(reloadConfigB), 0o600); err != nil {
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
	if err := os.WriteFile(config, []byte(reloadConfigA), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := proc.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	dockertest.WaitFor(t, 10*time.Second, "reloaded on SIGHUP", func() bool {
		return metric("selfheal_config_last_reload_successful") == "1"
	})
}
