package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

// alertmanager runs a real Alertmanager with the shipped configuration and
// returns its address.
func alertmanager(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	config := writeFile(t, "alertmanager.yml", shipped(t, "alerting/alertmanager.yml",
		"/etc/alertmanager/selfheal-token", filepath.Join(dir, "token")))
	background(t, nil, requireTool(t, "prometheus-alertmanager"), "--config.file="+config,
		"--storage.path="+filepath.Join(dir, "am"), "--web.listen-address="+addr, "--cluster.listen-address=")
	waitReady(t, "alertmanager", "http://"+addr+"/-/ready")
	return addr
}

// fastPathConfig is the fault tests' service-down with a fast path, and
// the Alertmanager it asks for silences.
func fastPathConfig(amAddr string) string {
	return "alertmanager: {url: 'http://" + amAddr + "'}\n" + faultConfig + "    fast_path: {on: die}\n"
}

// TestFastPathExactlyOnceWithTheSlowPath: a container dies; the fast path
// restarts it from Docker's event, before any alert; Alertmanager's
// delivery for the same outage then joins the fast path's occurrence: one
// restart, one outage counted.
func TestFastPathExactlyOnceWithTheSlowPath(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	amAddr := alertmanager(t)
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	addr := freeAddr(t)
	daemon(t, env, writeConfig(t, requireLabel, fastPathConfig(amAddr)), addr)
	conn := connect(t, dsn)
	time.Sleep(time.Second) // the docker collector follows the events stream

	dockertest.Kill(t, name)
	killedAt := time.Now()
	dockertest.WaitFor(t, 20*time.Second, "the fast path's restart", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions a JOIN remediation_jobs j ON j.id = a.job_id
			JOIN alert_occurrences o ON o.id = j.occurrence_id
			WHERE a.service_name = $1 AND a.status = 'succeeded' AND o.labels->>'selfheal_path' = 'fast'`, name) == 1
	})
	if !dockertest.State(t, name).Running {
		t.Fatal("not running after the fast path's restart")
	}
	if n := queryInt(t, conn, `SELECT count(*) FROM alert_occurrences WHERE labels->>'selfheal_path' = 'fast' AND status = 'resolved'`); n != 1 {
		t.Fatalf("%d fast occurrences resolved, want 1", n)
	}

	// Prometheus saw the container down on its next scrape; the alert
	// reaches selfheal through Alertmanager.
	post(t, env, addr, "ServiceDown", "service="+name, "--starts-at="+killedAt.Add(2*time.Second).UTC().Format(time.RFC3339Nano))
	dockertest.WaitFor(t, 10*time.Second, "the slow path's job", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs j JOIN alert_occurrences o ON o.id = j.occurrence_id
			WHERE o.labels->>'selfheal_path' IS NULL AND j.state = 'done'`) == 1
	})
	if n := queryInt(t, conn, `SELECT count(*) FROM remediation_jobs j JOIN alert_occurrences o ON o.id = j.occurrence_id
		WHERE o.labels->>'selfheal_path' IS NULL AND j.outcome = 'skipped' AND o.joined_occurrence_id IS NOT NULL`); n != 1 {
		t.Fatal("Alertmanager's alert did not join the fast path's occurrence")
	}
	if n := queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE service_name = $1`, name); n != 1 {
		t.Fatalf("%d actions on %s, want exactly 1", n, name)
	}
	if n := queryInt(t, conn, `SELECT count(*) FROM service_failures WHERE service_name = $1 AND failure_type = 'outage'`, name); n != 1 {
		t.Fatalf("%d outages counted, want 1", n)
	}
}

// TestFastPathHonoursSilences: a person silenced the container in a real
// Alertmanager; its death opens nothing and the event says why. Once the
// silence is expired, the next death is healed at once.
func TestFastPathHonoursSilences(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	amAddr := alertmanager(t)
	amtool := requireTool(t, "amtool")
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn})
	out, err := exec.Command(amtool, "silence", "add", "--alertmanager.url=http://"+amAddr,
		"--comment=maintenance", "--duration=10m", "service="+name).CombinedOutput()
	if err != nil {
		t.Fatalf("amtool silence add: %v\n%s", err, out)
	}
	id := strings.TrimSpace(string(out))
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	daemon(t, env, writeConfig(t, requireLabel, fastPathConfig(amAddr)), freeAddr(t))
	conn := connect(t, dsn)
	time.Sleep(time.Second)

	dockertest.Kill(t, name)
	dockertest.WaitFor(t, 10*time.Second, "the fast path standing down", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'fast_path_stood_down'
			AND service_name = $1 AND message LIKE '%silence ' || $2 || '%'`, name, id) == 1
	})
	time.Sleep(2 * time.Second)
	if n := queryInt(t, conn, `SELECT count(*) FROM alert_occurrences`); n != 0 || dockertest.State(t, name).Running {
		t.Fatalf("a silenced container was acted on (%d occurrences)", n)
	}

	if out, err := exec.Command(amtool, "silence", "expire", "--alertmanager.url=http://"+amAddr, id).CombinedOutput(); err != nil {
		t.Fatalf("amtool silence expire: %v\n%s", err, out)
	}
	c, _ := dockertest.Client(t)
	if _, err := c.ContainerStart(t.Context(), name, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	dockertest.WaitFor(t, 10*time.Second, name+" running", func() bool { return dockertest.State(t, name).Running })
	dockertest.Kill(t, name)
	dockertest.WaitFor(t, 20*time.Second, "the fast path's restart once the silence expired", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE service_name = $1 AND status = 'succeeded'`, name) == 1
	})
}
