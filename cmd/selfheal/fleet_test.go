package main

// A fleet on one PostgreSQL: a webhook-only replica ingests every node's
// alerts; each node's engine, with its own least-privilege role, claims
// only its own node's jobs.

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

// fleetConfig is faultConfig's service-down ladder on fleet nodes that
// heartbeat every second and poll only every 5 s: wake-ups come from the
// webhook replica, polling is the fallback.
var fleetConfig = `
node:
  fleet: true
  heartbeat_interval: 1s
  silent_after: 3s
` + strings.Replace(faultConfig, "poll_interval: 200ms", "poll_interval: 5s", 1)

// enrol runs `selfheal node add` and returns the DSN it prints; the role
// is dropped when the test ends (roles belong to the cluster, not to the
// test's database).
func enrol(t *testing.T, adminDSN, name string, webhook bool) string {
	t.Helper()
	args := []string{"node", "add", name}
	if webhook {
		args = append(args, "--webhook")
	}
	code, out, errOut := selfheal(t, []string{"SELFHEAL_DATABASE_URL=" + adminDSN}, args...)
	if code != 0 {
		t.Fatalf("node add %s: exit %d: %s", name, code, errOut)
	}
	dsn := strings.TrimSpace(out)
	role := regexp.MustCompile(`role (\S+) can reach`).FindStringSubmatch(errOut)
	if role == nil || !strings.HasPrefix(dsn, "postgres://"+role[1]+":") {
		t.Fatalf("node add %s printed %q, %q", name, out, errOut)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), adminDSN)
		if err == nil {
			_, _ = conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+pgx.Identifier{role[1]}.Sanitize())
			conn.Close(context.Background())
		}
	})
	return dsn
}

// TestFleet: two nodes, simulated as two `selfheal serve` processes with
// their own node names, roles and containers, behind one webhook-only
// replica. Each node heals only its own node's containers, once; a
// stopped node's jobs wait (event and metric) and run once it is back.
func TestFleet(t *testing.T) {
	t.Parallel()
	label, requireLabel := dockertest.OptIn()
	dsn := pgtest.DSN(t)
	token := "SELFHEAL_WEBHOOK_TOKEN=tok"
	admin := []string{"SELFHEAL_DATABASE_URL=" + dsn, token}
	if code, _, errOut := selfheal(t, admin, "migrate"); code != 0 {
		t.Fatalf("migrate: %s", errOut)
	}
	suffix := strings.ToLower(dockertest.UniqueName("n"))[len("n-"):]
	nodeA, nodeB := "edge-a-"+suffix, "edge-b-"+suffix
	dsnA, dsnB := enrol(t, dsn, nodeA, false), enrol(t, dsn, nodeB, false)
	dsnHook := enrol(t, dsn, "ingest-"+suffix, true)

	containers := map[string][]string{}
	for _, n := range []string{nodeA, nodeB} {
		for range 2 {
			containers[n] = append(containers[n], dockertest.Run(t, dockertest.Spec{Labels: label, Stopped: true}))
		}
	}
	config := writeConfig(t, requireLabel, fleetConfig)
	hook := freeAddr(t)
	daemon(t, []string{"SELFHEAL_DATABASE_URL=" + dsnHook, token, "SELFHEAL_NODE_NAME=ingest"}, config, hook,
		"--webhook-only", "--log.level=debug")
	engines := map[string]string{nodeA: dsnA, nodeB: dsnB}
	start := func(node string) *exec.Cmd {
		env := []string{"SELFHEAL_DATABASE_URL=" + engines[node], token, "SELFHEAL_NODE_NAME=" + node}
		return daemon(t, env, config, freeAddr(t), "--no-exporter", "--log.level=debug")
	}
	start(nodeA)
	b := start(nodeB)
	// An engine on credentials that are not its node's does not start.
	code, _, errOut := selfheal(t, append(admin, "SELFHEAL_NODE_NAME="+nodeA), "serve", "--config.file="+config,
		"--web.listen-address="+freeAddr(t), "--no-exporter")
	if code == 0 || !strings.Contains(errOut, "run `selfheal node add "+nodeA+"`") {
		t.Fatalf("a fleet engine on the owner's credentials: exit %d, %s", code, lastLines(errOut, 5))
	}

	// The first container of each node: each healed by its own node, once.
	for node, names := range containers {
		post(t, admin, hook, "ServiceDown", "service="+names[0], "node="+node)
	}
	conn := connect(t, dsn)
	healed := func(node, name string) bool {
		return running(t, name) && queryInt(t, conn, `SELECT count(*) FROM recovery_actions
			WHERE service_name = $1 AND status = 'succeeded' AND node = $2`, name, node) == 1
	}
	dockertest.WaitFor(t, 30*time.Second, "each node heals its own container", func() bool {
		return healed(nodeA, containers[nodeA][0]) && healed(nodeB, containers[nodeB][0])
	})
	if n := queryInt(t, conn, `SELECT count(*) FROM recovery_actions`); n != 2 {
		t.Fatalf("%d actions, want 2 (one per node)", n)
	}
	if n := queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome IS DISTINCT FROM 'succeeded'`); n != 0 {
		t.Fatalf("%d jobs not succeeded", n)
	}
	code, out, _ := selfheal(t, admin, "nodes")
	for _, n := range []string{nodeA, nodeB} {
		if code != 0 || !regexp.MustCompile(`(?m)^`+n+`\s+alive\s`).MatchString(out) {
			t.Fatalf("selfheal nodes (exit %d) does not show %s alive:\n%s", code, n, out)
		}
	}

	// Node B's engine stops: its job waits, says so, and is on the metric.
	if err := b.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Process.Wait(); err != nil {
		t.Fatal(err)
	}
	post(t, admin, hook, "ServiceDown", "service="+containers[nodeB][1], "node="+nodeB)
	post(t, admin, hook, "ServiceDown", "service="+containers[nodeA][1], "node="+nodeA)
	dockertest.WaitFor(t, 30*time.Second, "node A heals its second container", func() bool {
		return healed(nodeA, containers[nodeA][1])
	})
	if n := queryInt(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'node_silent' AND node = $1`, nodeB); n != 1 {
		t.Fatalf("%d node_silent events for %s, want 1", n, nodeB)
	}
	if running(t, containers[nodeB][1]) || queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE node = $1 AND state = 'queued'`, nodeB) != 1 {
		t.Fatal("node B's job did not wait for its engine")
	}
	metrics := scrape(t, "http://"+hook+"/metrics")
	if want := `selfheal_node_jobs_waiting{node="` + nodeB + `"} 1`; !strings.Contains(metrics, want) {
		t.Fatalf("the webhook replica's metrics lack %s:\n%s", want, grep(metrics, "selfheal_node_"))
	}
	if want := `selfheal_node_silent{node="` + nodeA + `"} 0`; !strings.Contains(metrics, want) {
		t.Fatalf("the webhook replica's metrics lack %s:\n%s", want, grep(metrics, "selfheal_node_"))
	}

	// Back: node B processes its job, once.
	start(nodeB)
	dockertest.WaitFor(t, 30*time.Second, "node B heals its waiting container", func() bool {
		return healed(nodeB, containers[nodeB][1])
	})
	time.Sleep(time.Second)
	if n := queryInt(t, conn, `SELECT count(*) FROM recovery_actions`); n != 4 {
		t.Fatalf("%d actions, want 4: each container once", n)
	}
}

func scrape(t testing.TB, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
