//go:build deploy

// `make test-deploy`: the compose stack as shipped, started for real.

package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/internal/testenv"
)

// deployProject is the compose project the test runs; its containers,
// networks and volumes are removed before and after.
const deployProject = "selfheal-deploytest"

// composeStack runs `docker compose` on the shipped file and the stand-ins'
// override.
type composeStack struct {
	t       *testing.T
	env     []string
	envFile string // .env, as README.md's "Installing" writes it
}

func (c *composeStack) compose(args ...string) (string, error) {
	c.t.Helper()
	cmd := composeCommand(c.t, append([]string{"-p", deployProject, "--env-file", c.envFile, "-f", "compose/docker-compose.yml",
		"-f", "compose/standins/docker-compose.standins.yml"}, args...)...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *composeStack) must(args ...string) string {
	c.t.Helper()
	out, err := c.compose(args...)
	if err != nil {
		c.t.Fatalf("docker compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// sql runs a query in the stack's PostgreSQL and returns its one value.
func (c *composeStack) sql(query string) string {
	c.t.Helper()
	out, err := c.compose("exec", "-T", "postgres", "psql", "-U", "selfheal", "-d", "selfheal", "-Atc", query)
	if err != nil {
		c.t.Fatalf("psql %q: %v\n%s", query, err, out)
	}
	return strings.TrimSpace(out)
}

func (c *composeStack) count(query string) int {
	c.t.Helper()
	n, err := strconv.Atoi(c.sql(query))
	if err != nil {
		c.t.Fatalf("%q: %v", query, err)
	}
	return n
}

// TestComposeStack brings up deploy/compose/docker-compose.yml with
// `docker compose up`: every service but Grafana, each public image
// replaced by a stand-in built here (docker-compose.standins.yml says
// which), selfheal's image built from the Dockerfile. Then, through
// Prometheus → Alertmanager → selfheal → the socket proxy:
//   - nothing broken for three minutes: no action, no alert firing, and
//     a container created but not yet started left as it is;
//   - an opted-in container killed is running again, restarted once; one
//     not opted in stays down, untouched;
//   - with the stack's PostgreSQL stopped the webhook answers 503 and
//     nothing runs; once it is back the kill is healed.
func TestComposeStack(t *testing.T) {
	env := readEnvFile(t, "compose/standins/images.env")
	c := &composeStack{t: t, env: env, envFile: readmeEnvFile(t)}
	token := envValue(t, c.envFile, "SELFHEAL_WEBHOOK_TOKEN")
	override, err := os.ReadFile("compose/standins/docker-compose.standins.yml")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("substituted (compose/standins/docker-compose.standins.yml, with %s):\n%s", strings.Join(env, " "), override)
	for _, port := range []string{"9595", "9090", "9093"} {
		if l, err := net.Listen("tcp", ":"+port); err != nil {
			t.Fatalf("port %s, which the stack publishes, is taken: %v", port, err)
		} else {
			l.Close()
		}
	}
	_, _ = c.compose("down", "-v", "--remove-orphans")
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.compose("logs", "--no-color", "--tail=60")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := c.compose("down", "-v", "--remove-orphans"); err != nil {
			t.Logf("docker compose down: %v\n%s", err, out)
		}
	})
	start := time.Now()
	c.must("up", "-d", "--build", "--wait", "postgres", "socket-proxy", "selfheal", "prometheus", "alertmanager")
	t.Logf("stack up in %s", time.Since(start).Round(time.Second))
	waitHTTP(t, "selfheal ready", "http://localhost:9595/-/ready")
	waitHTTP(t, "prometheus ready", "http://localhost:9090/-/ready")
	waitHTTP(t, "alertmanager ready", "http://localhost:9093/-/ready")

	// The application: one container opted in as the shipped config says
	// (selfheal.enable=true), one not.
	app := dockertest.Run(t, dockertest.Spec{Name: deployProject + "-app", Labels: map[string]string{"selfheal.enable": "true"}})
	bystander := dockertest.Run(t, dockertest.Spec{Name: deployProject + "-bystander"})
	// One more opted in, created and not yet started: what `docker compose
	// up` leaves while a dependency becomes healthy. Nothing is wrong with
	// it, and it is not selfheal's to start.
	waiting := dockertest.Run(t, dockertest.Spec{Name: deployProject + "-waiting", Labels: map[string]string{"selfheal.enable": "true"}, Stopped: true})

	// The loop is really there: Prometheus scrapes selfheal with the
	// shipped rules loaded, and sees the application.
	dockertest.WaitFor(t, 90*time.Second, "Prometheus scraping selfheal and seeing the application", func() bool {
		return promCount(t, `up{job="selfheal"} == 1`) == 1 &&
			promCount(t, `selfheal_container_running{name="`+app+`"} == 1`) == 1
	})
	if n := promRules(t); n < 20 {
		t.Fatalf("Prometheus loaded %d alerting rules; the shipped rules have more", n)
	}

	t.Run("quiet at idle", func(t *testing.T) {
		until := time.Now().Add(3 * time.Minute)
		for time.Now().Before(until) {
			if n := c.count(`SELECT count(*) FROM recovery_actions`); n != 0 {
				t.Fatalf("%d action(s) with nothing broken:\n%s", n, c.sql(`SELECT string_agg(format('%s %s %s %s', remediation, service_name, action_type, status), E'\n') FROM recovery_actions`))
			}
			if firing := promActive(t); len(firing) > 0 {
				t.Fatalf("alerts selfheal would act on, firing or pending, with nothing broken: %v", firing)
			}
			if own := selfhealAlerts(t); own > 0 {
				t.Fatalf("%d selfheal alert(s) in Alertmanager with nothing broken", own)
			}
			time.Sleep(10 * time.Second)
		}
		if n := c.count(`SELECT count(*) FROM alert_occurrences`); n != 0 {
			t.Errorf("%d alert(s) reached selfheal with nothing broken", n)
		}
		if running(t, waiting) {
			t.Errorf("%s, created and never started, was started", waiting)
		}
	})

	restarts := func(name string) int {
		return c.count(fmt.Sprintf(`SELECT count(*) FROM recovery_actions WHERE service_name = '%s' AND status = 'succeeded'`, name))
	}
	t.Run("heals under fault", func(t *testing.T) {
		dockertest.Kill(t, bystander)
		dockertest.Kill(t, app)
		dockertest.WaitFor(t, 2*time.Minute, app+" running again", func() bool { return running(t, app) })
		dockertest.WaitFor(t, 30*time.Second, "the restart recorded", func() bool { return restarts(app) == 1 })
		// The alert's resolution reaching selfheal takes Prometheus and
		// Alertmanager a group interval: time enough for a second action,
		// were there one. (Killed again before it, the same alert would
		// wait out repeat_interval in Alertmanager.)
		dockertest.WaitFor(t, 3*time.Minute, "ServiceDown resolved, through Alertmanager", func() bool {
			return c.count(`SELECT count(*) FROM alert_occurrences WHERE alertname = 'ServiceDown' AND status = 'resolved'`) == 1
		})
		if n := c.count(`SELECT count(*) FROM recovery_actions`); n != 1 {
			t.Errorf("%d actions for one kill, want 1", n)
		}
		// The evidence was read through the socket proxy, whose allow-list
		// has the logs endpoint: the killed run's exit code and its logs.
		if ev := c.sql(fmt.Sprintf(`SELECT details->'evidence' FROM recovery_actions WHERE service_name = '%s'`, app)); !strings.Contains(ev, `"exit_code": 137`) ||
			!strings.Contains(ev, "testctr started") || strings.Contains(ev, "logs_error") {
			t.Errorf("the restart's evidence, through the socket proxy: %s", ev)
		}
		if running(t, bystander) {
			t.Errorf("%s, not opted in, was started", bystander)
		}
		if n := c.count(fmt.Sprintf(`SELECT count(*) FROM recovery_actions WHERE service_name = '%s'`, bystander)); n != 0 {
			t.Errorf("%d actions on %s, which is not opted in", n, bystander)
		}
	})

	t.Run("database stopped", func(t *testing.T) {
		c.must("stop", "postgres")
		if code := postAlert(t, token); code != http.StatusServiceUnavailable {
			t.Errorf("webhook with the database stopped: %d, want 503", code)
		}
		dockertest.Kill(t, app)
		time.Sleep(45 * time.Second)
		if running(t, app) {
			t.Fatalf("%s was restarted with the database stopped: nothing may run without its record", app)
		}
		c.must("start", "postgres")
		dockertest.WaitFor(t, 3*time.Minute, app+" running again after the database came back", func() bool { return running(t, app) })
		dockertest.WaitFor(t, 30*time.Second, "the second restart recorded", func() bool { return restarts(app) == 2 })
	})
}

func running(t *testing.T, name string) bool { return dockertest.State(t, name).Running }

// readmeEnvFile runs README.md's snippet that writes the compose stack's
// .env, in a directory of the test's, and returns the file's path.
func readmeEnvFile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)\ncat >\\.env <<EOF\n.*?\nEOF\n").Find(b)
	if m == nil {
		t.Fatal("README.md no longer writes the compose stack's .env with cat >.env <<EOF")
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", "-euc", string(m))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("README.md's .env snippet: %v\n%s", err, out)
	}
	return filepath.Join(dir, ".env")
}

// envValue reads one variable of an env file.
func envValue(t *testing.T, path, key string) string {
	t.Helper()
	for _, kv := range readEnvFile(t, path) {
		if k, v, _ := strings.Cut(kv, "="); k == key && v != "" {
			return v
		}
	}
	t.Fatalf("%s sets no %s", path, key)
	return ""
}

func readEnvFile(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: build the stand-ins first (scripts/images.sh standins; make test-deploy does)", err)
	}
	return strings.Fields(string(b))
}

func waitHTTP(t *testing.T, what, u string) {
	t.Helper()
	dockertest.WaitFor(t, 2*time.Minute, what, func() bool {
		resp, err := http.Get(u)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// promCount is how many series an instant query returns.
func promCount(t *testing.T, query string) int {
	var r struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	getJSON(t, "http://localhost:9090/api/v1/query?query="+url.QueryEscape(query), &r)
	return len(r.Data.Result)
}

// promRules counts the alerting rules Prometheus loaded.
func promRules(t *testing.T) int {
	var r struct {
		Data struct {
			Groups []struct {
				Rules []json.RawMessage `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	getJSON(t, "http://localhost:9090/api/v1/rules?type=alert", &r)
	n := 0
	for _, g := range r.Data.Groups {
		n += len(g.Rules)
	}
	return n
}

// promActive lists the alerts Prometheus has firing or pending that
// selfheal acts on (category A–D) or that are about selfheal itself, and
// any firing at all. A pending
// warning for people is this machine's own (DiskWillFillIn24Hours while
// images are built here), not the deployment's.
func promActive(t *testing.T) []string {
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	getJSON(t, "http://localhost:9090/api/v1/alerts", &r)
	var out []string
	for _, a := range r.Data.Alerts {
		if cat := a.Labels["category"]; a.State == "firing" || strings.HasPrefix(a.Labels["alertname"], "Selfheal") ||
			cat != "" && strings.Contains("ABCD", cat) {
			out = append(out, fmt.Sprintf("%s %s %v", a.State, a.Labels["alertname"], a.Labels))
		}
	}
	return out
}

// selfhealAlerts counts selfheal's own alerts (source="selfheal", the
// hand-off) active in Alertmanager.
func selfhealAlerts(t *testing.T) int {
	var alerts []json.RawMessage
	getJSON(t, "http://localhost:9093/api/v2/alerts?active=true&filter="+url.QueryEscape(`source="selfheal"`), &alerts)
	return len(alerts)
}

// postAlert posts one firing alert to selfheal's webhook, as Alertmanager
// would, and returns the status.
func postAlert(t *testing.T, token string) int {
	body := fmt.Sprintf(`{"version":"4","status":"firing","receiver":"selfheal","groupKey":"deploytest","groupLabels":{},
		"commonLabels":{},"commonAnnotations":{},"externalURL":"http://alertmanager:9093","alerts":[{"status":"firing",
		"labels":{"alertname":"DeployTest","category":"A"},"annotations":{},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z",
		"generatorURL":"","fingerprint":"0123456789abcdef"}]}`, time.Now().UTC().Format(time.RFC3339))
	req, _ := http.NewRequest(http.MethodPost, "http://localhost:9595/api/v1/webhook", bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("webhook: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestGatewayProxyExample starts deploy/examples/gateway-proxy/compose.yml
// with `docker compose up` (its images replaced by stand-ins, and the
// proxy's health check asking the proxy rather than the outside world)
// and does what its comment says: selfheal's plan for the gateway names
// the proxy, and with `selfheal serve` on the example's configuration the
// gateway's crash restarts both, the proxy under the gateway's job.
func TestGatewayProxyExample(t *testing.T) {
	up := func(args ...string) (string, error) {
		cmd := composeCommand(t, append([]string{"-f", "examples/gateway-proxy/compose.yml",
			"-f", "compose/standins/gateway-proxy.standins.yml"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	override, err := os.ReadFile("compose/standins/gateway-proxy.standins.yml")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("substituted (compose/standins/gateway-proxy.standins.yml):\n%s", override)
	_, _ = up("down", "--remove-orphans")
	if out, err := up("up", "-d", "--wait", "--wait-timeout", "90"); err != nil {
		t.Fatalf("docker compose up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := up("down", "--remove-orphans"); err != nil {
			t.Logf("docker compose down: %v\n%s", err, out)
		}
	})
	gateway, proxy := "gateway-proxy-gateway-1", "gateway-proxy-proxy-1"
	dockertest.WaitFor(t, time.Minute, "the example running", func() bool { return running(t, gateway) && running(t, proxy) })

	bin := filepath.Join(t.TempDir(), "selfheal")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/selfheal").CombinedOutput(); err != nil {
		t.Fatalf("build selfheal: %v\n%s", err, out)
	}
	dsn := pgtest.DSN(t)
	env := append(os.Environ(), "SELFHEAL_DATABASE_URL="+dsn)
	sh := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("selfheal %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
		}
		return string(out)
	}
	addr := testenv.FreeAddr(t)
	serve := exec.Command(bin, "serve", "--config.file=examples/gateway-proxy/selfheal.yml", "--web.listen-address="+addr, "--no-collector.gpu")
	serve.Env = env
	var logs bytes.Buffer
	serve.Stdout, serve.Stderr = &logs, &logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = serve.Process.Kill()
		_ = serve.Wait()
		if t.Failed() {
			t.Logf("selfheal serve:\n%s", logs.String())
		}
	})
	waitHTTP(t, "selfheal ready", "http://"+addr+"/-/ready")
	var plans []struct{ Touches []string }
	out := sh("plan", "--config.file=examples/gateway-proxy/selfheal.yml", "--output=json", "ServiceDown", "service="+gateway)
	if err := json.Unmarshal([]byte(out), &plans); err != nil || len(plans) != 1 || len(plans[0].Touches) != 1 || plans[0].Touches[0] != proxy {
		t.Fatalf("plan for the gateway: %s (%v)", out, err)
	}

	proxyStart := dockertest.State(t, proxy).StartedAt
	dockertest.Kill(t, gateway)
	sh("simulate", "--webhook.url=http://"+addr+"/api/v1/webhook", "ServiceDown", "service="+gateway)
	dockertest.WaitFor(t, time.Minute, "gateway and proxy running again, the proxy restarted", func() bool {
		return running(t, gateway) && running(t, proxy) && dockertest.State(t, proxy).StartedAt != proxyStart
	})
	db, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(t.Context())
	// Both actions recorded as succeeded once verified (stable_for).
	dockertest.WaitFor(t, time.Minute, "the proxy's restart recorded under the gateway's", func() bool {
		var n int
		err := db.QueryRow(t.Context(), `SELECT count(*) FROM recovery_actions d JOIN recovery_actions a ON a.id = d.parent_action_id
			WHERE d.service_name = $1 AND d.status = 'succeeded' AND a.service_name = $2 AND a.status = 'succeeded'`, proxy, gateway).Scan(&n)
		return err == nil && n == 1
	})
}

// TestImageAsDocumented: the image README.md's "From the image" describes
// — built from the Dockerfile by scripts/images.sh (as `docker build` would
// with local base images) — runs as the unprivileged user 10001, carries
// the version, and its shipped configuration passes check-config, which
// says that no reboot can come from inside it.
func TestImageAsDocumented(t *testing.T) {
	docker := testenv.Tool(t, "docker", true)
	run := func(args ...string) (string, error) {
		out, err := exec.Command(docker, append([]string{"run", "--rm"}, args...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("--entrypoint", "id", "selfheal:latest", "-u"); err != nil || strings.TrimSpace(out) != "10001" {
		t.Errorf("the image runs as %q (%v), want 10001", out, err)
	}
	version, err := os.ReadFile("../VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run("selfheal:latest", "--version"); err != nil || !strings.Contains(out, "version "+strings.TrimSpace(string(version))+" ") {
		t.Errorf("selfheal --version in the image: %q (%v)", out, err)
	}
	out, err := run("-e", "SELFHEAL_WEBHOOK_TOKEN=t", "selfheal:latest", "check-config", "--config.file=/etc/selfheal/selfheal.yml")
	if err != nil || !strings.Contains(out, "OK (") || !strings.Contains(out, `command: "systemctl" cannot be run here`) {
		t.Errorf("check-config in the image: %v\n%s", err, out)
	}
}
