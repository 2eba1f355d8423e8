package server_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/internal/testenv"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/server"
	"github.com/selfheal/selfheal/remediator/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Template(store.MigrateURL))) }

const token = "s3cret-token" // the token the fixtures were captured with

const baseConfig = `
engine:
  poll_interval: 200ms
targets:
  docker:
    stop_timeout: 1s
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart, {type: stop_start, wait: 200ms}]
    escalate_to: critical-recovery
    timeout: 30s
    verify: {timeout: 10s, stable_for: 1s}
  - name: critical-recovery
    match: ['alertname="NeverFires"']
    category: C
    target: '{{ .Labels.service }}'
    action: restart
`

// labelRun is this test process's part of every opt-in label.
var labelRun = dockertest.UniqueName("selfheal-test")

// optIn is the opt-in label of t's test (its top-level name), and
// requireLabel the same as targets.docker.require_label: a label of its
// own, so that tests running side by side, in this package or another,
// never act on each other's containers.
func optIn(t testing.TB) map[string]string { return map[string]string{labelKey(t): "true"} }

func requireLabel(t testing.TB) string { return labelKey(t) + "=true" }

func labelKey(t testing.TB) string {
	top, _, _ := strings.Cut(t.Name(), "/")
	return labelRun + "." + top
}

// instance is one running `selfheal serve`.
type instance struct {
	url  string
	stop func()
}

func config(t testing.TB, dsn, extra string) *policy.Config {
	t.Helper()
	return configText(t, dsn, baseConfig+extra)
}

// configText is config of a whole file.
func configText(t testing.TB, dsn, text string) *policy.Config {
	t.Helper()
	cfg, err := policy.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DatabaseURL = dsn
	cfg.Webhook.Token = token
	if !strings.Contains(text, "require_label") {
		cfg.Targets.Docker.RequireLabel = requireLabel(t)
	}
	cfg.Node.Name = "edge-01" // the fixtures' instance
	return cfg
}

// start runs selfheal in-process on a free port and waits until it is
// healthy (not necessarily ready: the database may be down on purpose).
func start(t testing.TB, cfg *policy.Config) *instance {
	t.Helper()
	return startWith(t, cfg, nil)
}

// startWith is start with a hook to change the server's options.
func startWith(t testing.TB, cfg *policy.Config, opts func(*server.Options)) *instance {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := server.Options{Config: cfg, Listener: l, Logger: logger, MigrateRetry: 200 * time.Millisecond}
	if opts != nil {
		opts(&o)
	}
	go func() { done <- server.Run(ctx, o) }()
	in := &instance{url: "http://" + l.Addr().String()}
	var once sync.Once
	in.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server.Run: %v", err)
			}
		})
	}
	t.Cleanup(in.stop)
	waitFor(t, 10*time.Second, "selfheal healthy", func() bool {
		resp, err := http.Get(in.url + "/-/healthy")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return in
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ready starts selfheal with cfg, waits until it is ready, and returns a
// connection to its database.
func ready(t testing.TB, cfg *policy.Config) (*instance, *pgx.Conn) {
	t.Helper()
	in := start(t, cfg)
	in.waitReady(t)
	return in, db(t, cfg.DatabaseURL)
}

func (in *instance) waitReady(t testing.TB) {
	t.Helper()
	waitFor(t, 15*time.Second, "selfheal ready", func() bool {
		resp, err := http.Get(in.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (in *instance) post(t testing.TB, body []byte) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.url+"/api/v1/webhook", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body) //nolint:errcheck
	return resp.StatusCode
}

// payload returns a real Alertmanager fixture with its service label
// pointed at the named container.
func payload(t testing.TB, file, service string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(b, []byte("llm-service"), []byte(service))
}

// withStartsAt gives the fixture a new startsAt: a new occurrence of the
// same alert.
func withStartsAt(b []byte, ts time.Time) []byte {
	return bytes.ReplaceAll(b, []byte("2026-11-26T22:31:53.652092631Z"), []byte(ts.UTC().Format(time.RFC3339Nano)))
}

func db(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func count(t testing.TB, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, timeout, what, cond)
}

// waitIdle waits until no job is queued and no action runs.
func waitIdle(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	waitFor(t, 30*time.Second, "all jobs finished", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued'`) == 0 &&
			count(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 0
	})
}

func TestServiceDownFixtureHealsStoppedContainer(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true})
	dsn := pgtest.DSN(t)
	in, conn := ready(t, config(t, dsn, ""))
	if code := in.post(t, payload(t, "service-down-firing.json", name)); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 20*time.Second, name+" running", func() bool { return dockertest.State(t, name).Running })
	waitIdle(t, conn)
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions WHERE service_name = $1 AND action_type = 'restart' AND status = 'succeeded' AND attempt = 1`, name); n != 1 {
		t.Fatalf("%d succeeded restart rows, want 1", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions`); n != 1 {
		t.Fatalf("%d action rows, want 1", n)
	}
	for _, ev := range []string{"decision", "action_succeeded"} {
		if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = $1 AND service_name = $2`, ev, name); n != 1 {
			t.Errorf("%d %s events, want 1", n, ev)
		}
	}

	// The resolution records the recovery time.
	if code := in.post(t, payload(t, "service-down-resolved.json", name)); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'alert_resolved' AND service_name = $1
		AND (details->>'recovery_seconds')::numeric BETWEEN 9 AND 10`, name); n != 1 {
		t.Errorf("no alert_resolved event with the fixture's 9.35s recovery time")
	}
}

func TestDuplicateDeliveriesActOnce(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true})
	dsn := pgtest.DSN(t)
	cfg := config(t, dsn, "")
	in := start(t, cfg)
	in.waitReady(t)
	body := payload(t, "service-down-firing.json", name)
	var wg sync.WaitGroup
	codes := make(chan int, 20)
	for range 20 {
		wg.Go(func() { codes <- in.post(t, body) })
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 200 {
			t.Errorf("a concurrent delivery got %d", c)
		}
	}
	conn := db(t, dsn)
	waitFor(t, 20*time.Second, name+" running", func() bool { return dockertest.State(t, name).Running })
	waitIdle(t, conn)

	// selfheal restarts; Alertmanager delivers the same alert again.
	in.stop()
	in = start(t, cfg)
	in.waitReady(t)
	if code := in.post(t, body); code != 200 {
		t.Fatalf("after restart: %d", code)
	}
	time.Sleep(time.Second) // give a wrongly queued job time to run
	waitIdle(t, conn)
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions`); n != 1 {
		t.Fatalf("%d actions, want exactly 1", n)
	}
	if n := count(t, conn, `SELECT deliveries FROM alert_occurrences`); n != 21 {
		t.Errorf("deliveries = %d, want 21", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM remediation_jobs`); n != 1 {
		t.Errorf("%d jobs, want 1", n)
	}
}

func TestLadderEscalatesAfterThreeFailures(t *testing.T) {
	t.Parallel()
	// Dies 300ms after every start.
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true, Args: []string{"-exit-after=300ms"}})
	dsn := pgtest.DSN(t)
	in, conn := ready(t, config(t, dsn, ""))
	if code := in.post(t, payload(t, "service-down-firing.json", name)); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 60*time.Second, "escalation", func() bool {
		return count(t, conn, `SELECT count(*) FROM escalations WHERE service_name = $1`, name) == 1
	})
	waitIdle(t, conn)

	rows, err := conn.Query(context.Background(), `SELECT action_type, status, attempt FROM recovery_actions WHERE remediation = 'service-down' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var a, s string
		var n int
		if err := rows.Scan(&a, &s, &n); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d:%s:%s", n, a, s))
	}
	// The outage itself is the first failure, each failed action another:
	// the third failure escalates.
	want := "1:restart:failed 2:stop_start:failed"
	if strings.Join(got, " ") != want {
		t.Fatalf("actions %v, want %s", got, want)
	}
	if n := count(t, conn, `SELECT count(*) FROM service_failures WHERE service_name = $1 AND remediation = 'service-down'`, name); n != 3 {
		t.Errorf("%d failures recorded, want 3", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM service_failures WHERE service_name = $1 AND failure_type = 'outage'`, name); n != 1 {
		t.Errorf("%d outages recorded, want 1", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE severity = 'CRITICAL' AND event_type = 'escalation'
		AND message LIKE '3 failures within 10m (limit 3): escalating to critical-recovery'`); n != 1 {
		t.Errorf("%d CRITICAL escalation events, want 1", n)
	}

	// The escalation hands the same occurrence to critical-recovery, which
	// acts with its own count of failures.
	waitFor(t, 60*time.Second, "critical-recovery acted", func() bool {
		return count(t, conn, `SELECT count(*) FROM recovery_actions WHERE remediation = 'critical-recovery'`) >= 1
	})

	// The container dies again: a new occurrence of the alert. Nothing more
	// of the service-down ladder runs on an escalated service.
	if code := in.post(t, withStartsAt(payload(t, "service-down-firing.json", name), time.Now())); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "second occurrence decided", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE remediation = 'service-down' AND outcome = 'skipped' AND reason LIKE 'escalated to critical-recovery%'`) == 1
	})
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions WHERE remediation = 'service-down'`); n != 2 {
		t.Fatalf("%d service-down actions after escalation, want still 2", n)
	}
}

func TestUnlabelledContainerIsNeverTouched(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Stopped: true})
	dsn := pgtest.DSN(t)
	in, conn := ready(t, config(t, dsn, ""))
	if code := in.post(t, payload(t, "service-down-firing.json", name)); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "refusal", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused'`) == 1
	})
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'decision' AND service_name = $1
		AND message LIKE '%lacks the opt-in label ' || $2 || '%'`, name, requireLabel(t)); n != 1 {
		t.Error("no event says why the container was refused")
	}
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions`); n != 0 {
		t.Errorf("%d actions recorded for a refused target", n)
	}
	if st := dockertest.State(t, name); st.Running || st.StartedAt != "0001-01-01T00:00:00Z" {
		t.Fatalf("the unlabelled container was started: %+v", st)
	}
}

func TestUnknownTargetIsRefused(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	in, conn := ready(t, config(t, dsn, ""))
	// A ServiceDown alert without a service label renders an empty target.
	body := bytes.ReplaceAll(payload(t, "service-down-firing.json", "x"), []byte(`"service":"x",`), nil)
	if code := in.post(t, body); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "refusal", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused'
			AND reason = 'target template "{{ .Labels.service }}" rendered empty for this alert'`) == 1
	})
}

func TestDatabaseDownFailsClosed(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true})
	cluster := pgtest.NewCluster(t)
	in := start(t, config(t, cluster.URL(), ""))
	in.waitReady(t)
	cluster.Stop()

	body := payload(t, "service-down-firing.json", name)
	began := time.Now()
	if code := in.post(t, body); code != 503 {
		t.Fatalf("with the database down the webhook answered %d, want 503", code)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("503 took %s, want under 2s", took)
	}
	time.Sleep(time.Second)
	if st := dockertest.State(t, name); st.Running || st.StartedAt != "0001-01-01T00:00:00Z" {
		t.Fatal("an action ran while the database was down")
	}
	resp, err := http.Get(in.url + "/-/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("/-/ready = %d with the database down", resp.StatusCode)
	}

	if err := cluster.Start(); err != nil {
		t.Fatal(err)
	}
	// Alertmanager retries until it gets a 2xx; then it may still deliver
	// again (at-least-once).
	waitFor(t, 20*time.Second, "redelivery accepted", func() bool { return in.post(t, body) == 200 })
	if code := in.post(t, body); code != 200 {
		t.Fatalf("second redelivery: %d", code)
	}
	waitFor(t, 20*time.Second, name+" running", func() bool { return dockertest.State(t, name).Running })
	conn := db(t, cluster.URL())
	waitIdle(t, conn)
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions`); n != 1 {
		t.Fatalf("%d actions, want exactly 1", n)
	}
}

func TestDryRunRecordsWithoutActing(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true})
	dsn := pgtest.DSN(t)
	cfg := config(t, dsn, "")
	cfg.DryRun = true
	in, conn := ready(t, cfg)
	if code := in.post(t, payload(t, "service-down-firing.json", name)); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "dry-run decision", func() bool {
		return count(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'dry_run' AND action_type = 'restart'`) == 1
	})
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE message = 'dry-run: would run restart (attempt 1)'`); n != 1 {
		t.Error("no 'would run' event")
	}
	time.Sleep(500 * time.Millisecond)
	if st := dockertest.State(t, name); st.Running || st.StartedAt != "0001-01-01T00:00:00Z" {
		t.Fatal("dry-run started the container")
	}
}

func TestPauseAndStormBrake(t *testing.T) {
	t.Parallel()
	a := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true})
	b := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true})
	dsn := pgtest.DSN(t)
	cfg := config(t, dsn, "")
	cfg.Engine.StormBrake.MaxActions = 1
	in, conn := ready(t, cfg)

	if _, err := conn.Exec(context.Background(), `UPDATE engine_settings SET paused = true, reason = 'maintenance window'`); err != nil {
		t.Fatal(err)
	}
	in.post(t, payload(t, "service-down-firing.json", a))
	waitFor(t, 10*time.Second, "paused decision", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'skipped' AND reason = 'remediation is paused (maintenance window)'`) == 1
	})
	if dockertest.State(t, a).Running {
		t.Fatal("acted while paused")
	}
	if _, err := conn.Exec(context.Background(), `UPDATE engine_settings SET paused = false`); err != nil {
		t.Fatal(err)
	}

	in.post(t, withStartsAt(payload(t, "service-down-firing.json", a), time.Now()))
	waitFor(t, 20*time.Second, a+" running", func() bool { return dockertest.State(t, a).Running })
	waitIdle(t, conn)
	in.post(t, bytes.ReplaceAll(payload(t, "service-down-firing.json", b), []byte("d03bb581f83ed40e"), []byte("0000000000000b0b")))
	waitFor(t, 10*time.Second, "storm brake", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'skipped' AND reason LIKE 'storm brake: 1 actions in the last 10m (limit 1)%'`) == 1
	})
	if dockertest.State(t, b).Running {
		t.Fatal("the storm brake let a second action through")
	}

	// The skip says until when the brake holds: the first action's start
	// plus the window. It is handed off to people, and the status page
	// lists the target as held back.
	var started time.Time
	var reason string
	if err := conn.QueryRow(context.Background(), `SELECT started_at FROM recovery_actions WHERE service_name = $1`, a).Scan(&started); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(context.Background(), `SELECT reason FROM remediation_jobs WHERE target = $1 AND outcome = 'skipped'`, b).Scan(&reason); err != nil {
		t.Fatal(err)
	}
	until := started.Add(10 * time.Minute).UTC().Format(time.RFC3339)
	if want := "storm brake: 1 actions in the last 10m (limit 1); it holds until " + until + " at the earliest"; !strings.HasPrefix(reason, want) {
		t.Errorf("braked reason %q, want it to begin %q", reason, want)
	}
	st, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	probs, err := st.OpenProblems(context.Background(), store.ProblemQuery{Lookback: time.Hour, PausedFor: 15 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(probs) != 1 || probs[0].Kind != "braked" || probs[0].Target != b || probs[0].Reason != reason {
		t.Errorf("problems to hand off: %+v, want %s braked", probs, b)
	}
	resp, err := http.Get(in.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	held, _, _ := strings.Cut(string(page), "<h2>Jobs waiting</h2>")
	if _, held, _ = strings.Cut(held, "<h2>Targets held back</h2>"); !strings.Contains(held, "<td>"+b+"</td>") || !strings.Contains(held, "holds until "+until) {
		t.Errorf("the status page's held-back targets do not list %s braked until %s:\n%s", b, until, held)
	}
}

func TestHTTPEndpoints(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	in := start(t, config(t, dsn, ""))
	in.waitReady(t)
	in.post(t, []byte(`{}`))
	// Asked as Prometheus asks (gzip accepted), /metrics answers
	// uncompressed. The queue's series are read from the database at
	// scrape time and left out when it is slow (a loaded machine): scraped
	// again until they are there.
	want := []string{
		`selfheal_webhook_requests_total{code="400"} 1`,
		`selfheal_alerts_received_total{status="firing"} 0`,
		`selfheal_jobs{state="queued"} 0`,
		`selfheal_actions_total{action="restart",result="succeeded"} 0`,
		`selfheal_action_duration_seconds_bucket{action="restart",le="1"} 0`,
		`selfheal_engine_decisions_total{verdict="run"} 0`,
		`selfheal_build_info{`,
	}
	var body []byte
	waitFor(t, 10*time.Second, "every series in /metrics", func() bool {
		req, _ := http.NewRequest(http.MethodGet, in.url+"/metrics", nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if enc := resp.Header.Get("Content-Encoding"); enc != "" {
			t.Fatalf("/metrics answered Content-Encoding %q, want none", enc)
		}
		for _, w := range want {
			if !strings.Contains(string(body), w) {
				return false
			}
		}
		return true
	})
}

// A container that came back by itself after its alert began (a restart
// policy, a person) is not restarted again.
func TestRecoveredContainerIsLeftAlone(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true})
	dsn := pgtest.DSN(t)
	in, conn := ready(t, config(t, dsn, ""))
	alertBegan := time.Now().Add(-time.Second)
	api, _ := dockertest.Client(t)
	if _, err := api.ContainerStart(context.Background(), name, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	before := dockertest.State(t, name).StartedAt
	time.Sleep(1200 * time.Millisecond) // longer than verify.stable_for
	if code := in.post(t, withStartsAt(payload(t, "service-down-firing.json", name), alertBegan)); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "decision", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'skipped' AND reason LIKE '%is running again since%'`) == 1
	})
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions`); n != 0 {
		t.Fatalf("%d actions on a container that had recovered", n)
	}
	if after := dockertest.State(t, name).StartedAt; after != before {
		t.Fatal("the container was restarted")
	}
}

// A database that accepts connections and never answers must not hang the
// webhook: the delivery is answered 503 within the persist timeout.
func TestHungDatabaseCannotHangTheWebhook(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	cfg := config(t, "postgres://selfheal@"+l.Addr().String()+"/selfheal?sslmode=disable", "")
	in := start(t, cfg)
	began := time.Now()
	if code := in.post(t, payload(t, "service-down-firing.json", "x")); code != 503 {
		t.Fatalf("webhook answered %d, want 503", code)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("503 took %s, want under 2s", took)
	}
}

// TestEverySpellingOfAContainerIsOneTarget: four alerts name one stopped
// container four ways — its name, "/name", its ID and an ID prefix. They
// share one lock, one failure count and one cooldown: one restart, one
// outage counted.
func TestEverySpellingOfAContainerIsOneTarget(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true})
	api, _ := dockertest.Client(t)
	res, err := api.ContainerInspect(context.Background(), name, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info := res.Container
	dsn := pgtest.DSN(t)
	in, conn := ready(t, config(t, dsn, ""))
	for i, spelling := range []string{name, "/" + name, info.ID, info.ID[:12]} {
		body := bytes.ReplaceAll(payload(t, "service-down-firing.json", spelling),
			[]byte("d03bb581f83ed40e"), []byte(fmt.Sprintf("%016x", i+1)))
		if code := in.post(t, body); code != 200 {
			t.Fatalf("webhook answered %d", code)
		}
	}
	waitFor(t, 20*time.Second, name+" running", func() bool { return dockertest.State(t, name).Running })
	waitFor(t, 20*time.Second, "every alert decided", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state <> 'queued'`) == 4
	})
	waitIdle(t, conn)
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions`); n != 1 {
		t.Errorf("%d actions, want 1", n)
	}
	if n := count(t, conn, `SELECT count(DISTINCT target) FROM remediation_jobs`); n != 1 {
		t.Errorf("%d distinct targets, want 1", n)
	}
	if n := count(t, conn, `SELECT get_service_failure_count($1, 10)`, name); n != 1 {
		t.Errorf("get_service_failure_count = %d, want 1: one outage", n)
	}
}

// TestAlertsForAnotherNodeNeverActHere: this selfheal is edge-01. Alerts
// whose node label or instance names edge-02 are stored and shown, and
// never touch the local container; the same alert for edge-01 heals it
// once.
func TestAlertsForAnotherNodeNeverActHere(t *testing.T) {
	t.Parallel()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true})
	dsn := pgtest.DSN(t)
	in, conn := ready(t, config(t, dsn, ""))
	fp := 0
	post := func(body []byte) {
		t.Helper()
		fp++
		body = bytes.ReplaceAll(body, []byte("d03bb581f83ed40e"), []byte(fmt.Sprintf("%016x", fp)))
		if code := in.post(t, body); code != 200 {
			t.Fatalf("webhook answered %d", code)
		}
	}
	alert := payload(t, "service-down-firing.json", name)
	post(bytes.ReplaceAll(alert, []byte(`"instance":"edge-01:9100"`), []byte(`"instance":"edge-02:9100"`)))
	post(bytes.ReplaceAll(alert, []byte(`"instance":"edge-01:9100"`), []byte(`"instance":"edge-01:9100","node":"edge-02"`)))
	time.Sleep(1500 * time.Millisecond) // time for a wrong action to start
	if dockertest.State(t, name).Running {
		t.Fatal("an alert for edge-02 started edge-01's container")
	}
	if n := count(t, conn, `SELECT count(*) FROM remediation_jobs`); n != 0 {
		t.Fatalf("%d jobs queued for another node's alerts", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'alert_not_here'
		AND message LIKE 'the alert is for node edge-02; this is edge-01%'`); n != 2 {
		t.Errorf("%d alert_not_here events, want 2", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM alert_occurrences WHERE node = 'edge-02'`); n != 2 {
		t.Errorf("%d stored alerts for edge-02, want 2", n)
	}

	post(alert) // edge-01: this node
	waitFor(t, 20*time.Second, name+" running", func() bool { return dockertest.State(t, name).Running })
	waitIdle(t, conn)
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions`); n != 1 {
		t.Errorf("%d actions, want 1", n)
	}
}

// stormPayload is one Alertmanager delivery of perService firing
// ServiceDown alerts for each service, all begun at startsAt.
func stormPayload(services []string, perService int, startsAt time.Time) []byte {
	var b bytes.Buffer
	b.WriteString(`{"receiver":"selfheal","status":"firing","alerts":[`)
	n := 0
	for _, svc := range services {
		for i := range perService {
			if n > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"status":"firing","labels":{"alertname":"ServiceDown","category":"A","instance":"edge-01:9100","service":%q,"rule":"r%d"},`+
				`"annotations":{},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"%016x"}`,
				svc, i, startsAt.UTC().Format(time.RFC3339Nano), n)
			n++
		}
	}
	b.WriteString(`],"groupLabels":{},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://am","version":"4","groupKey":"storm","truncatedAlerts":0}`)
	return b.Bytes()
}

// TestStormIsDecidedInRounds: a storm the brake holds back is decided in
// rounds, with the audit trail of one job at a time — every job done with
// exactly one decision event, one outage counted per service, one action
// (the brake's limit), absent services refused, the rest skipped by the
// brake — and nothing lost.
func TestStormIsDecidedInRounds(t *testing.T) {
	t.Parallel()
	var services []string
	for range 3 {
		services = append(services, dockertest.Run(t, dockertest.Spec{Labels: optIn(t), Stopped: true}))
	}
	for i := range 40 {
		services = append(services, fmt.Sprintf("storm-absent-%02d", i))
	}
	dsn := pgtest.DSN(t)
	cfg := config(t, dsn, "")
	cfg.Engine.StormBrake.MaxActions = 1
	in, conn := ready(t, cfg)
	const perService = 10
	total := len(services) * perService
	if code := in.post(t, stormPayload(services, perService, time.Now())); code != http.StatusOK {
		t.Fatalf("storm answered %d", code)
	}
	waitFor(t, 60*time.Second, "every job decided", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'done'`) == total
	})
	if n := count(t, conn, `SELECT count(*) FROM recovery_actions`); n != 1 {
		t.Errorf("%d actions, want 1 (the storm brake's limit)", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM remediation_jobs j
		WHERE (SELECT count(*) FROM self_healing_events e WHERE e.job_id = j.id AND e.event_type = 'decision') <> 1`); n != 0 {
		t.Errorf("%d jobs without exactly one decision event", n)
	}
	if n := count(t, conn, `SELECT count(DISTINCT service_name) FROM service_failures WHERE failure_type = 'outage'`); n != len(services) {
		t.Errorf("outages counted for %d services, want %d", n, len(services))
	}
	if n := count(t, conn, `SELECT count(*) FROM service_failures WHERE failure_type = 'outage'`); n != len(services) {
		t.Errorf("%d outages counted, want one per service (%d)", n, len(services))
	}
	braked := count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'skipped' AND reason LIKE 'storm brake:%'`)
	refused := count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused' AND reason LIKE '%no container named%'`)
	if braked == 0 || braked+refused+1 > total {
		t.Errorf("%d braked, %d refused of %d", braked, refused, total)
	}
	resp, err := http.Get(in.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^selfheal_engine_round_decisions_total (\d+)$`).FindSubmatch(body)
	if m == nil || string(m[1]) == "0" {
		t.Fatalf("no decisions recorded in rounds: %q", m)
	}
	t.Logf("%d jobs: 1 action, %d braked, %d refused; %s decided in rounds", total, braked, refused, m[1])
}

// TestFailingJobIsRefusedAfterItsAttempts: a job whose handling fails at
// every try (here the database refuses to record its target's outage) is
// tried again with backoff and refused after its attempts, with an event;
// it never holds the head of the queue: another alert's job is decided
// meanwhile.
func TestFailingJobIsRefusedAfterItsAttempts(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	cfg := config(t, dsn, "")
	in, conn := ready(t, cfg)
	if _, err := conn.Exec(context.Background(), `
		CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'cannot record a failure of %', NEW.service_name; END $$;
		CREATE TRIGGER poison BEFORE INSERT ON service_failures FOR EACH ROW
			WHEN (NEW.service_name = 'poison') EXECUTE FUNCTION poison();`); err != nil {
		t.Fatal(err)
	}
	if code := in.post(t, payload(t, "service-down-firing.json", "poison")); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "the failing job tried", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE attempts >= 1 AND state = 'queued'`) == 1
	})
	if code := in.post(t, withStartsAt(payload(t, "service-down-firing.json", "ghost-"+dockertest.UniqueName("x")), time.Now())); code != 200 {
		t.Fatalf("webhook answered %d", code)
	}
	waitFor(t, 10*time.Second, "the other job decided meanwhile", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused' AND reason LIKE '%no container named%'`) == 1
	})
	if n := count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued' AND attempts BETWEEN 1 AND 4`); n != 1 {
		t.Fatalf("the failing job is not waiting for its next attempt")
	}
	waitFor(t, 40*time.Second, "the failing job refused", func() bool {
		return count(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused' AND attempts = 5
			AND reason LIKE 'the job could not be handled in 5 attempts; it is refused: %cannot record a failure of poison%'`) == 1
	})
	if n := count(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'job_failed'`); n != 1 {
		t.Errorf("%d job_failed events, want 1", n)
	}
}

// TestReloadEndpointOffIsForbidden: without --web.enable-lifecycle,
// /-/reload answers 403 and says how to reload, as Prometheus does.
func TestReloadEndpointOffIsForbidden(t *testing.T) {
	t.Parallel()
	in := start(t, config(t, pgtest.DSN(t), ""))
	in.waitReady(t)
	resp, err := http.Post(in.url+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "--web.enable-lifecycle") {
		t.Errorf("POST /-/reload with lifecycle off: %d %q", resp.StatusCode, body)
	}
}
