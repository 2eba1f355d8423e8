package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/internal/testenv"
	"github.com/selfheal/selfheal/migrations"
	"github.com/selfheal/selfheal/remediator/store"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "selfheal-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "selfheal")
	if out, err := exec.Command("go", "build", "-ldflags=-w", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build selfheal: %v\n%s", err, out)
		os.Exit(1)
	}
	code := pgtest.Main(m, pgtest.Template(store.MigrateURL))
	os.RemoveAll(dir)
	os.Exit(code)
}

// selfheal runs the binary to completion and returns its exit code and output.
func selfheal(t testing.TB, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func writeFile(t testing.TB, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	good := writeFile(t, "good.yml", `
webhook: {allow_unauthenticated: true}
remediations:
  - {name: service-down, match: ['alertname="ServiceDown"'], category: A, target: '{{ .Labels.service }}', steps: [restart, stop_start]}
`)
	code, out, errOut := selfheal(t, nil, "check-config", "--config.file="+good)
	if code != 0 || out != good+": OK (1 remediations)\n" {
		t.Fatalf("good config: exit %d, %q %q", code, out, errOut)
	}

	bad := writeFile(t, "bad.yml", `
webhook: {allow_unauthenticated: true}
remediations:
  - {name: service-down, match: ['alertname="ServiceDown"'], category: A, target: '{{ .Labels.service }}', steps: [reboot]}
  - name: other
    match: ['a="b"']
    cooldwn: 5m
`)
	code, _, errOut = selfheal(t, nil, "check-config", "--config.file="+bad)
	want := bad + `:7: remediation "other": unknown field "cooldwn" in remediation` + "\n"
	if code != 1 || errOut != want {
		t.Fatalf("bad config: exit %d\n%s\nwant\n%s", code, errOut, want)
	}

	noCreds := writeFile(t, "nocreds.yml", "remediations: []\n")
	code, _, errOut = selfheal(t, nil, "check-config", "--config.file="+noCreds)
	if code != 1 || !strings.Contains(errOut, "webhook: no credentials configured") {
		t.Fatalf("no credentials: exit %d %q", code, errOut)
	}
	code, _, errOut = selfheal(t, []string{"SELFHEAL_WEBHOOK_TOKEN=t"}, "check-config", "--config.file="+noCreds)
	if code != 0 {
		t.Fatalf("token from the environment: exit %d %q", code, errOut)
	}
	code, _, errOut = selfheal(t, []string{"SELFHEAL_WEBHOOK_TOKEN=   "}, "check-config", "--config.file="+noCreds)
	if want := noCreds + ": SELFHEAL_WEBHOOK_TOKEN is empty or only whitespace\n"; code != 1 || errOut != want {
		t.Fatalf("whitespace token from the environment: exit %d %q, want %q", code, errOut, want)
	}

	// Token files: whitespace only is refused; one others may read is
	// accepted with a warning.
	dir := t.TempDir()
	blank, loose := filepath.Join(dir, "blank"), filepath.Join(dir, "loose")
	if err := os.WriteFile(blank, []byte(" \n\t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(loose, []byte("s3cret \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	withFile := func(name, path string) string {
		return writeFile(t, name, "webhook: {bearer_token_file: "+path+"}\nalertmanager: {url: 'http://am:9093'}\nremediations: []\n")
	}
	cfg := withFile("blank.yml", blank)
	code, _, errOut = selfheal(t, nil, "check-config", "--config.file="+cfg)
	if want := cfg + ": webhook.bearer_token_file: " + blank + " is empty or only whitespace\n"; code != 1 || errOut != want {
		t.Fatalf("blank token file: exit %d %q, want %q", code, errOut, want)
	}
	cfg = withFile("loose.yml", loose)
	code, _, errOut = selfheal(t, nil, "check-config", "--config.file="+cfg)
	if want := cfg + ": warning: webhook.bearer_token_file: " + loose + " is readable by other users (mode 0644): chmod 600 it\n"; code != 0 || errOut != want {
		t.Fatalf("world-readable token file: exit %d %q, want %q", code, errOut, want)
	}

	// Files as arguments, as promtool takes them: each checked, every
	// problem with its line, exit 1 if any is bad.
	invalid := writeFile(t, "invalid.yml", `
engine: {workers: -1}
remediations:
  - {name: a, match: ['alertname="X"'], category: Q, target: x, steps: [restart]}
  - {name: b, match: ['alertname="Y"'], category: A, target: x, steps: [restart], escalate_to: nobody}
`)
	code, out, errOut = selfheal(t, nil, "check-config", good, invalid)
	want = invalid + `:2: engine: workers: must be positive
` + invalid + `:4: remediation "a": category: "Q" is not one of A, B, C, D
` + invalid + `:5: remediation "b": escalate_to: no remediation is named "nobody"
`
	if code != 1 || out != good+": OK (1 remediations)\n" || !strings.HasSuffix(errOut, "\n"+want) {
		t.Fatalf("two files as arguments: exit %d, %q\n%s\nwant\n%s", code, out, errOut, want)
	}

	// --output=json: every error, for scripts.
	code, out, _ = selfheal(t, nil, "check-config", "--config.file="+bad, "--output=json")
	var res struct {
		Valid  bool
		Errors []string
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 1 || res.Valid || len(res.Errors) != 1 ||
		!strings.Contains(res.Errors[0], `unknown field "cooldwn"`) {
		t.Errorf("check-config --output=json of a bad file: exit %d %q (%v)", code, out, err)
	}

	// The shipped example: valid, with a warning for each placeholder left
	// to set (policy.TestAdvice has them all).
	code, _, errOut = selfheal(t, []string{"SELFHEAL_WEBHOOK_TOKEN=t"}, "check-config", "--config.file=../../deploy/selfheal.yml")
	if want := `warning: remediation "critical-recovery": sequence[3]: vacuum: databases: "postgres://app@localhost/app?sslmode=disable" is the example configuration's placeholder`; code != 0 || !strings.Contains(errOut, want) {
		t.Fatalf("the shipped example: exit %d %q, want a warning %q", code, errOut, want)
	}
}

func freeAddr(t testing.TB) string { return testenv.FreeAddr(t) }

// daemon starts `selfheal serve` and waits until it is ready.
func daemon(t testing.TB, env []string, config, addr string, args ...string) *exec.Cmd {
	t.Helper()
	return daemonOf(t, binary, env, config, addr, args...)
}

// daemonOf is daemon with another build of selfheal.
func daemonOf(t testing.TB, bin string, env []string, config, addr string, args ...string) *exec.Cmd {
	t.Helper()
	if len(args) == 0 {
		args = []string{"--log.level=debug"}
	}
	cmd := background(t, env, bin, append([]string{"serve", "--config.file=" + config, "--web.listen-address=" + addr}, args...)...)
	waitReady(t, "selfheal", "http://"+addr+"/-/ready")
	return cmd
}

// post runs `selfheal simulate` against the webhook at addr.
func post(t testing.TB, env []string, addr string, args ...string) {
	t.Helper()
	args = append([]string{"simulate", "--webhook.url=http://" + addr + "/api/v1/webhook"}, args...)
	if code, out, errOut := selfheal(t, env, args...); code != 0 {
		t.Fatalf("simulate: exit %d %s %s", code, out, errOut)
	}
}

// connect opens a connection to dsn for the rest of the test.
func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryInt(t testing.TB, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestKillBetweenIntentAndOutcome kills selfheal with SIGKILL while a
// restart is in flight (the container ignores SIGTERM, so Docker waits out
// the stop timeout). Once the dead owner's lease has lapsed, the next start
// marks the action interrupted and never runs it again, however often the
// alert is delivered; the ladder goes on and the container runs again.
func TestKillBetweenIntentAndOutcome(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Args: []string{"-ignore-term"}})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeConfig(t, requireLabel, `
engine: {poll_interval: 200ms}
targets:
  docker: {stop_timeout: 8s}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart, stop_start]
`)
	addr := freeAddr(t)
	first := daemon(t, env, config, addr)

	startsAt := time.Now().UTC().Format(time.RFC3339Nano)
	simulate := func() { post(t, env, addr, "ServiceDown", "service="+name, "--starts-at="+startsAt) }
	simulate()
	conn := connect(t, dsn)
	dockertest.WaitFor(t, 10*time.Second, "intent recorded", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 1
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = first.Process.Wait()
	if n := queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`); n != 1 {
		t.Fatalf("after the kill: %d running actions, want the 1 left behind", n)
	}

	daemon(t, env, config, addr)
	// A SIGKILL leaves the lease to lapse (engine.actionLease, 15 s).
	dockertest.WaitFor(t, 30*time.Second, "action marked interrupted", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'interrupted'`) == 1
	})
	simulate() // Alertmanager delivers again
	time.Sleep(1500 * time.Millisecond)
	if n := queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE job_id = (SELECT min(id) FROM remediation_jobs)`); n != 1 {
		t.Fatalf("%d actions of the first job, want 1: the interrupted one must not run again", n)
	}
	// The remediation goes on: the next step checks the container and,
	// if it did not come back, acts.
	dockertest.WaitFor(t, 60*time.Second, name+" running", func() bool { return running(t, name) })
	if n := queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'interrupted'`); n != 1 {
		t.Errorf("%d interrupted jobs, want 1", n)
	}
	if n := queryInt(t, conn, `SELECT count(*) FROM self_healing_events WHERE event_type = 'action_interrupted' AND severity = 'ERROR'`); n != 1 {
		t.Errorf("%d action_interrupted events, want 1", n)
	}

	code, out, errOut := selfheal(t, env, "events", "--limit=40")
	if code != 0 {
		t.Fatalf("events: exit %d %s", code, errOut)
	}
	for _, want := range []string{"TIME", "KIND", "ServiceDown", "INTERRUPTED", "restart", "action_interrupted", name} {
		if !strings.Contains(out, want) {
			t.Errorf("events output lacks %q:\n%s", want, out)
		}
	}
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	dsn := pgtest.EmptyDSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn}
	all, _ := migrations.All()
	if code, out, errOut := selfheal(t, env, "migrate"); code != 0 || !strings.Contains(out, fmt.Sprintf("applied %d migration(s)", len(all))) {
		t.Fatalf("migrate: %d %q %q", code, out, errOut)
	}
	if code, out, _ := selfheal(t, env, "migrate"); code != 0 || !strings.Contains(out, "applied 0 migration(s)") {
		t.Fatalf("second migrate: %d %q", code, out)
	}
	if code, _, errOut := selfheal(t, env, "pause", "--reason=disk swap"); code != 0 {
		t.Fatalf("pause: %s", errOut)
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if n := queryInt(t, conn, `SELECT count(*) FROM engine_settings WHERE paused AND reason = 'disk swap'`); n != 1 {
		t.Fatal("not paused")
	}
	if code, _, errOut := selfheal(t, env, "resume"); code != 0 {
		t.Fatalf("resume: %s", errOut)
	}
	if n := queryInt(t, conn, `SELECT count(*) FROM engine_settings WHERE NOT paused`); n != 1 {
		t.Fatal("not resumed")
	}
	if code, _, errOut := selfheal(t, nil, "events"); code != 1 || !strings.Contains(errOut, "no database") {
		t.Fatalf("events without a database: %d %q", code, errOut)
	}
}

// TestLiveScrapePassesPromtool scrapes a running `selfheal serve` with the
// exporter (and its own metrics) and `selfheal exporter`, and runs
// `promtool check metrics` over each exposition.
func TestLiveScrapePassesPromtool(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool is required (CI=true): install the prometheus package")
		}
		t.Skip("no promtool")
	}
	dockertest.Client(t)
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Health: time.Second})
	dsn := pgtest.DSN(t)
	config := writeConfig(t, requireLabel, `
exporter:
  probes:
    - {name: database, type: postgres, target: '`+dsn+`'}
    - {name: nothing-listens, type: tcp, target: '127.0.0.1:1'}
remediations:
  - {name: service-down, match: ['alertname="ServiceDown"'], category: A, target: '{{ .Labels.service }}', steps: [restart]}
`)
	serveAddr := freeAddr(t)
	daemon(t, []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=t"}, config, serveAddr, "--log.level=warn")

	exporterAddr := freeAddr(t)
	background(t, nil, binary, "exporter", "--config.file="+config, "--web.listen-address="+exporterAddr, "--log.level=warn")

	for _, tc := range []struct {
		addr string
		want []string
	}{
		{serveAddr, []string{"selfheal_webhook_requests_total", "selfheal_cpu_seconds_total", `selfheal_container_running{name="` + name + `"} 1`,
			`selfheal_probe_success{probe="database",type="postgres"} 1`, `selfheal_probe_success{probe="nothing-listens",type="tcp"} 0`,
			`selfheal_exporter_collector_success{collector="gpu"} 1`}},
		{exporterAddr, []string{"selfheal_memory_available_bytes", `selfheal_container_running{name="` + name + `"} 1`}},
	} {
		var body []byte
		dockertest.WaitFor(t, 15*time.Second, "scrape of "+tc.addr, func() bool {
			resp, err := http.Get("http://" + tc.addr + "/metrics")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			body, _ = io.ReadAll(resp.Body)
			for _, w := range tc.want {
				if !strings.Contains(string(body), w) {
					return false
				}
			}
			return true
		})
		check := exec.Command(promtool, "check", "metrics")
		check.Stdin = bytes.NewReader(body)
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics on %s: %v\n%s", tc.addr, err, out)
		}
	}
	// selfheal exporter has the landing page every exporter has.
	resp, err := http.Get("http://" + exporterAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), "selfheal exporter") || !strings.Contains(string(page), `href="/metrics"`) {
		t.Errorf("selfheal exporter's landing page: %d\n%s", resp.StatusCode, page)
	}
}

// TestKillDuringStopStart: selfheal killed while a stop and start waits for
// a container that ignores SIGTERM. After the restart the interruption
// counts as one failure, and — once the interrupted action's timeout has
// passed, so that nothing of it can still run — the container runs again
// without any redelivery.
func TestKillDuringStopStart(t *testing.T) {
	t.Parallel()
	optIn, requireLabel := dockertest.OptIn()
	name := dockertest.Run(t, dockertest.Spec{Labels: optIn, Args: []string{"-ignore-term"}})
	dsn := pgtest.DSN(t)
	env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
	config := writeConfig(t, requireLabel, `
engine: {poll_interval: 200ms}
targets:
  docker: {stop_timeout: 4s}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [{type: stop_start, wait: 1s}, restart]
    timeout: 15s
    verify: {timeout: 10s, stable_for: 1s}
`)
	addr := freeAddr(t)
	first := daemon(t, env, config, addr)
	post(t, env, addr, "ServiceDown", "service="+name)
	conn := connect(t, dsn)
	dockertest.WaitFor(t, 10*time.Second, "stop_start under way", func() bool {
		return queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running' AND action_type = 'stop_start'`) == 1
	})
	// The action runs once the evidence is read: the kill must come after
	// Docker was asked to stop the container, or nothing is half done.
	dockertest.WaitForStopAsked(t, name, 10*time.Second)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = first.Process.Wait()
	dockertest.WaitFor(t, 15*time.Second, name+" stopped by the half-done stop_start", func() bool { return !running(t, name) })

	daemon(t, env, config, addr)
	dockertest.WaitFor(t, 60*time.Second, name+" running again", func() bool { return running(t, name) })
	if n := queryInt(t, conn, `SELECT count(*) FROM service_failures WHERE service_name = $1 AND status = 'interrupted'`, name); n != 1 {
		t.Errorf("%d interruptions counted, want 1", n)
	}
	if n := queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE action_type = 'stop_start'`); n != 1 {
		t.Errorf("%d stop_start actions, want 1: the interrupted one is not repeated", n)
	}
	if n := queryInt(t, conn, `SELECT deliveries FROM alert_occurrences`); n != 1 {
		t.Errorf("%d deliveries, want 1: nothing waited for a redelivery", n)
	}
}

// TestManPageHeader: --help-man starts with a .TH line man can read — one
// line, quoted fields — whatever --version prints.
func TestManPageHeader(t *testing.T) {
	t.Parallel()
	code, out, errOut := selfheal(t, nil, "--help-man")
	first, _, _ := strings.Cut(out, "\n")
	if code != 0 || !regexp.MustCompile(`^\.TH selfheal 1 "[^"]*" "selfheal [^"]+ \([^"]+\)" "selfheal manual"$`).MatchString(first) {
		t.Fatalf("--help-man: exit %d, header %q %s", code, first, errOut)
	}
}

// TestTakenPortSaysSo: serve on a port another process holds exits 1, and
// the first error it logs is the bind error — not a database problem the
// shutdown would make up.
func TestTakenPortSaysSo(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	config := writeFile(t, "selfheal.yml", "webhook: {allow_unauthenticated: true}\nremediations: []\n")
	code, _, errOut := selfheal(t, []string{"SELFHEAL_DATABASE_URL=postgres://nobody@127.0.0.1:1/none?connect_timeout=1"},
		"serve", "--config.file="+config, "--web.listen-address="+l.Addr().String(), "--no-collector.gpu")
	var firstError string
	for _, line := range strings.Split(errOut, "\n") {
		if strings.Contains(line, "level=ERROR") {
			firstError = line
			break
		}
	}
	if code != 1 || !strings.Contains(firstError, "address already in use") || strings.Contains(errOut, "cannot migrate") {
		t.Errorf("serve on a taken port: exit %d, first error %q\n%s", code, firstError, errOut)
	}
}

// TestCommandErrorsAreSentences: a command people type answers an error
// with a sentence on standard error, not a log line.
func TestCommandErrorsAreSentences(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"events"},
		{"plan", "--config.file=/nonexistent/selfheal.yml", "ServiceDown"},
		{"simulate", "--webhook.url=http://127.0.0.1:1/api/v1/webhook", "ServiceDown"},
	} {
		code, _, errOut := selfheal(t, []string{"SELFHEAL_DATABASE_URL="}, args...)
		if code != 1 || !strings.HasPrefix(errOut, "selfheal") || strings.Contains(errOut, "level=ERROR") {
			t.Errorf("selfheal %s: exit %d %q", strings.Join(args, " "), code, errOut)
		}
	}
}
