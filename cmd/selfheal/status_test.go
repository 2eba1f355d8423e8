package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/internal/testenv"
)

// TestStatusPage loads / in headless Chromium and reads the rendered page:
// paused with its reason, the queue, a target in cooldown, the last
// decisions with their reasons, the links. A screenshot is kept in the
// test's artifact directory (go test -artifacts keeps it).
func TestStatusPage(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	chromium := testenv.Tool(t, "chromium", true)
	healed := dockertest.Run(t, dockertest.Spec{Labels: optIn, Stopped: true})
	refused := dockertest.Run(t, dockertest.Spec{Stopped: true})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeConfig(t, requireLabel, planConfig+`
status_page: {prometheus_url: 'http://prometheus.example:9090'}
alertmanager: {url: 'http://127.0.0.1:1', interval: 1h}
`)
	addr := freeAddr(t)
	daemon(t, env, config, addr)
	conn := connect(t, dsn)
	post(t, env, addr, "HostMemoryHigh", "service="+healed)
	post(t, env, addr, "ServiceDown", "service="+refused)
	dockertest.WaitFor(t, 20*time.Second, "both decided", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'done'`) == 2
	})
	// A job a decision deferred, as one waiting for an action's slot is.
	if _, err := conn.Exec(t.Context(), `INSERT INTO remediation_jobs (occurrence_id, remediation, step, target, reason, not_before)
		SELECT id, 'memory-high', 9, $1, '4 actions running (limit 4)', now() + interval '1 hour' FROM alert_occurrences LIMIT 1`, healed); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := selfheal(t, env, "pause", "--reason=maintenance window"); code != 0 {
		t.Fatalf("pause: %s", errOut)
	}

	url := "http://" + addr + "/"
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(chromium, append([]string{"--headless", "--no-sandbox", "--disable-gpu",
			"--user-data-dir=" + t.TempDir()}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium %v: %v", args, err)
		}
		return string(out)
	}
	dom := run("--dump-dom", url)
	for _, want := range []string{
		"selfheal on ", "Paused: maintenance window", "job(s) waiting",
		"Targets held back", healed, "memory-high",
		"Jobs waiting", "4 actions running (limit 4)",
		"Last decisions", refused, "lacks the opt-in label",
		`href="http://prometheus.example:9090"`, "Alertmanager",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q:\n%s", want, dom)
		}
	}
	shot := filepath.Join(t.ArtifactDir(), "status.png")
	run("--screenshot="+shot, "--window-size=1280,900", url)
	if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
		t.Fatalf("no screenshot: %v", err)
	}
}
