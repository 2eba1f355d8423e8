package main

// The whole loop for tests and benchmarks: PostgreSQL, `selfheal serve`,
// Prometheus loading the repo's rules, and Alertmanager routing to selfheal,
// each a real process on a free port. selfheal's opt-in label is unique to
// the stack, so it never sees (or heals) other tests' containers.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/internal/testenv"
)

type stackOptions struct {
	// ScrapeInterval and EvalInterval are Prometheus'; GroupWait is the
	// selfheal route's in Alertmanager.
	ScrapeInterval, EvalInterval, GroupWait time.Duration
	// Remediations is the remediations: part of selfheal's configuration.
	Remediations string
	// Durable uses a PostgreSQL with fsync on (benchmarks).
	Durable bool
	// Handoff points selfheal at the stack's Alertmanager (alertmanager.url:
	// hand-off, and the fast path's silence checks).
	Handoff bool
	// Engine, when set, is the engine: section (a flow mapping).
	Engine string
}

// files is what one stack runs: selfheal's configuration, Alertmanager's,
// the rules directory, and selfheal's environment and flags.
type files struct {
	Selfheal     string // selfheal.yml, whole
	Alertmanager string // alertmanager.yml, whole
	Rules        string // directory of rule files
	Env          []string
	Args         []string
	// Binary is the selfheal to run; empty runs the one TestMain built.
	Binary string
}

type stack struct {
	Label    map[string]string // the opt-in label for this stack's containers
	DSN      string
	Env      []string
	Selfheal string // host:port
	AM       string // Alertmanager's host:port
	PromURL  string
	DB       *pgx.Conn
}

func requireTool(tb testing.TB, name string) string { return testenv.Tool(tb, name, true) }

// background starts a process (with env added to the environment) that is
// killed when tb ends; its output goes to a log file, shown if tb failed.
func background(tb testing.TB, env []string, name string, args ...string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	logf, err := os.Create(filepath.Join(tb.TempDir(), filepath.Base(name)+".log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if tb.Failed() {
			b, _ := os.ReadFile(logf.Name())
			tb.Logf("%s log:\n%s", name, lastLines(string(b), 60))
		}
	})
	return cmd
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func waitReady(tb testing.TB, what, u string) {
	tb.Helper()
	dockertest.WaitFor(tb, 20*time.Second, what+" ready", func() bool {
		resp, err := http.Get(u)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func startStack(tb testing.TB, o stackOptions) *stack {
	tb.Helper()
	s := newStack(tb, dockertest.UniqueName("selfheal.e2e"), o.Durable)
	dir := tb.TempDir()
	tokenFile := filepath.Join(dir, "token")
	raw, err := os.ReadFile("../../deploy/local/alertmanager.yml")
	if err != nil {
		tb.Fatal(err)
	}
	rules, err := filepath.Abs("../../alerting/rules")
	if err != nil {
		tb.Fatal(err)
	}
	s.launch(tb, files{
		Selfheal: fmt.Sprintf(`
targets:
  docker:
    require_label: %s=true
    stop_timeout: 2s
%s%sremediations:
%s`, s.labelKey(), map[bool]string{true: "alertmanager: {url: 'http://" + s.AM + "'}\n"}[o.Handoff],
			map[bool]string{true: "engine: " + o.Engine + "\n"}[o.Engine != ""], o.Remediations),
		Alertmanager: strings.NewReplacer(
			"http://localhost:9595/api/v1/webhook", "http://"+s.Selfheal+"/api/v1/webhook",
			"../../.run/token", tokenFile,
			"group_wait: 0s", "group_wait: "+o.GroupWait.String(),
		).Replace(string(raw)),
		Rules: rules,
		Args:  []string{"--log.level=debug", "--no-collector.gpu"},
	}, tokenFile)
	s.prometheus(tb, rules, o.ScrapeInterval, o.EvalInterval)
	return s
}

// newStack creates the stack's database and picks its addresses; nothing
// runs yet. key is the stack's opt-in label, unique so that it never sees
// (or heals) other tests' containers.
func newStack(tb testing.TB, key string, durable bool) *stack {
	tb.Helper()
	requireTool(tb, "prometheus")
	requireTool(tb, "prometheus-alertmanager")
	dockertest.Client(tb)
	s := &stack{Label: map[string]string{key: "true"}, Selfheal: freeAddr(tb), AM: freeAddr(tb)}
	if durable {
		s.DSN = pgtest.NewDurableCluster(tb).URL()
	} else {
		s.DSN = pgtest.DSN(tb)
	}
	s.Env = []string{"SELFHEAL_DATABASE_URL=" + s.DSN, "SELFHEAL_WEBHOOK_TOKEN=" + stackToken}
	return s
}

const stackToken = "e2e-token"

func (s *stack) labelKey() string {
	for k := range s.Label {
		return k
	}
	return ""
}

// launch starts selfheal and Alertmanager with f's files, Alertmanager's
// token in tokenFile; Prometheus comes last, with prometheus.
func (s *stack) launch(tb testing.TB, f files, tokenFile string) {
	tb.Helper()
	dir := tb.TempDir()
	s.Env = append(s.Env, f.Env...)
	bin := binary
	if f.Binary != "" {
		bin = f.Binary
	}
	daemonOf(tb, bin, s.Env, writeFile(tb, "selfheal.yml", f.Selfheal), s.Selfheal, f.Args...)
	if err := os.WriteFile(tokenFile, []byte(stackToken), 0o600); err != nil {
		tb.Fatal(err)
	}
	amFile := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(amFile, []byte(f.Alertmanager), 0o600); err != nil {
		tb.Fatal(err)
	}
	background(tb, nil, requireTool(tb, "prometheus-alertmanager"), "--config.file="+amFile,
		"--storage.path="+filepath.Join(dir, "am"), "--web.listen-address="+s.AM, "--cluster.listen-address=")
	waitReady(tb, "alertmanager", "http://"+s.AM+"/-/ready")
	conn, err := pgx.Connect(context.Background(), s.DSN)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	s.DB = conn
}

// prometheus starts Prometheus scraping selfheal and evaluating the rules
// in rules.
func (s *stack) prometheus(tb testing.TB, rules string, scrape, eval time.Duration) {
	tb.Helper()
	dir := tb.TempDir()
	promAddr := freeAddr(tb)
	promFile := filepath.Join(dir, "prometheus.yml")
	promConfig := fmt.Sprintf(`
global:
  scrape_interval: %s
  evaluation_interval: %s
rule_files: ['%s/*.yml']
alerting:
  alertmanagers:
    - static_configs: [{targets: ['%s']}]
scrape_configs:
  - job_name: selfheal
    static_configs: [{targets: ['%s']}]
`, scrape, eval, rules, s.AM, s.Selfheal)
	if err := os.WriteFile(promFile, []byte(promConfig), 0o600); err != nil {
		tb.Fatal(err)
	}
	background(tb, nil, requireTool(tb, "prometheus"), "--config.file="+promFile, "--storage.tsdb.path="+filepath.Join(dir, "prom"),
		"--web.listen-address="+promAddr)
	s.PromURL = "http://" + promAddr
	waitReady(tb, "prometheus", s.PromURL+"/-/ready")
}

// promValue returns the value of an instant query with a single result, or
// false when there is none.
func (s *stack) promValue(tb testing.TB, query string) (string, bool) {
	tb.Helper()
	resp, err := http.Get(s.PromURL + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Data.Result) != 1 {
		return "", false
	}
	v, _ := r.Data.Result[0].Value[1].(string)
	return v, true
}

// running reports whether the container runs now.
func running(tb testing.TB, name string) bool {
	return dockertest.State(tb, name).Running
}
