// Package deploy holds selfheal's deployment files: the local stack
// configuration, the compose stack and the systemd units. These tests run
// each file's own validator.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/internal/testenv"
	_ "github.com/selfheal/selfheal/remediator/actions" // registers the action types the examples name
	"github.com/selfheal/selfheal/remediator/optin"
	"github.com/selfheal/selfheal/remediator/policy"
)

// TestMain stops the throw-away PostgreSQL cluster the deployment tests
// start (pgtest.DSN), which was otherwise left running after them.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// composeCommand returns `docker compose` (v2) with args; without it the
// test is skipped, or fails in CI.
func composeCommand(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	docker := testenv.Tool(t, "docker", true)
	if out, err := exec.Command(docker, "compose", "version").CombinedOutput(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("docker compose (v2) is required (CI=true; scripts/compose.sh installs it): %v\n%s", err, out)
		}
		t.Skipf("no docker compose v2: %s", out)
	}
	return exec.Command(docker, append([]string{"compose"}, args...)...)
}

func TestComposeConfig(t *testing.T) {
	cmd := composeCommand(t, "-f", "compose/docker-compose.yml", "config", "-q")
	cmd.Env = append(os.Environ(), "POSTGRES_PASSWORD=p", "SELFHEAL_GRAFANA_DB_PASSWORD=g", "SELFHEAL_WEBHOOK_TOKEN=t", "GRAFANA_ADMIN_PASSWORD=a")
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("docker compose config: %v\n%s", err, out)
	}
	// Without the secrets it refuses to start, saying which is missing.
	cmd = composeCommand(t, "-f", "compose/docker-compose.yml", "config", "-q")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in .env") {
		t.Fatalf("without secrets: %v\n%s", err, out)
	}
	// The gateway/proxy example needs v2 (depends_on's restart, name:).
	if out, err := composeCommand(t, "-f", "examples/gateway-proxy/compose.yml", "config", "-q").CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("docker compose config of the gateway/proxy example: %v\n%s", err, out)
	}
}

type composeFile struct {
	Services map[string]struct {
		Command []string `yaml:"command"`
		Volumes []string `yaml:"volumes"`
	} `yaml:"services"`
}

func compose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile("compose/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestComposeMountsExist: every file or directory the stack mounts from
// the repository is there.
func TestComposeMountsExist(t *testing.T) {
	for name, s := range compose(t).Services {
		for _, v := range s.Volumes {
			src := strings.Split(v, ":")[0]
			if !strings.HasPrefix(src, ".") {
				continue
			}
			if _, err := os.Stat(filepath.Join("compose", src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}
}

// TestSocketProxyAllowsOnlyWhatSelfhealUses checks the proxy's allow lists
// against the Docker API calls selfheal makes, and some it must never be
// able to make.
func TestSocketProxyAllowsOnlyWhatSelfhealUses(t *testing.T) {
	allow := map[string]*regexp.Regexp{}
	for _, arg := range compose(t).Services["socket-proxy"].Command {
		if m := regexp.MustCompile(`^-allow(GET|HEAD|POST|DELETE)=(.*)$`).FindStringSubmatch(arg); m != nil {
			allow[m[1]] = regexp.MustCompile("^(" + m[2] + ")$")
		}
	}
	allowed := func(method, path string) bool {
		re, ok := allow[method]
		return ok && re.MatchString(path)
	}
	for _, c := range []struct {
		method, path string
		want         bool
	}{
		{"HEAD", "/_ping", true},
		{"GET", "/_ping", true},
		{"GET", "/v1.41/_ping", true},
		{"GET", "/v1.41/containers/json", true},
		{"GET", "/v1.41/containers/llm-service/json", true},
		{"GET", "/v1.41/events", true},
		{"POST", "/v1.41/containers/llm-service/restart", true},
		{"POST", "/v1.41/containers/4f1c2c3d5e6f/start", true},
		{"POST", "/v1.41/containers/llm-service/stop", true},
		{"POST", "/v1.41/images/prune", true},
		{"DELETE", "/v1.41/containers/4f1c2c3d5e6f", true},
		{"POST", "/v1.41/containers/prune", false},
		{"POST", "/v1.41/build/prune", false},
		{"POST", "/v1.41/containers/create", false},
		{"POST", "/v1.41/containers/llm-service/exec", false},
		{"POST", "/v1.41/exec/abc/start", false},
		{"DELETE", "/v1.41/images/abc", false},
		{"DELETE", "/v1.41/volumes/data", false},
		{"POST", "/v1.41/containers/llm-service/kill", false},
		{"GET", "/v1.41/containers/llm-service/archive", false},
		{"POST", "/v1.41/images/create", false},
		{"GET", "/v1.41/secrets", false},
	} {
		if got := allowed(c.method, c.path); got != c.want {
			t.Errorf("%s %s: allowed = %v, want %v", c.method, c.path, got, c.want)
		}
	}
}

func TestSystemdUnits(t *testing.T) {
	analyze := testenv.Tool(t, "systemd-analyze", false)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	units, _ := filepath.Glob("systemd/*.service")
	if len(units) != 2 {
		t.Fatalf("units: %v", units)
	}
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		// verify checks that ExecStart exists; point it at an executable.
		out := filepath.Join(dir, filepath.Base(u))
		if err := os.WriteFile(out, []byte(strings.ReplaceAll(string(b), "/usr/bin/selfheal", self)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, out)
	}
	if out, err := exec.Command(analyze, append([]string{"verify"}, paths...)...).CombinedOutput(); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestPolkitRule(t *testing.T) {
	node := testenv.Tool(t, "node", false)
	b, err := os.ReadFile("systemd/50-selfheal-reboot.rules")
	if err != nil {
		t.Fatal(err)
	}
	// Run the rule as polkit would, with a stub of its API.
	script := `
let rule;
const polkit = { Result: { YES: "yes" }, addRule: f => { rule = f; } };
` + string(b) + `
const cases = [
  ["org.freedesktop.login1.reboot", "selfheal", "yes"],
  ["org.freedesktop.login1.reboot-multiple-sessions", "selfheal", "yes"],
  ["org.freedesktop.login1.power-off", "selfheal", undefined],
  ["org.freedesktop.systemd1.manage-units", "selfheal", undefined],
  ["org.freedesktop.login1.reboot", "mallory", undefined],
];
for (const [id, user, want] of cases) {
  const got = rule({ id }, { user });
  if (got !== want) { console.log("FAIL", id, user, got); process.exit(1); }
}
`
	cmd := exec.Command(node, "-e", script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("polkit rule: %v\n%s", err, out)
	}
}

// TestStopTimeoutsCoverTheShutdownBound: the service manager waits longer
// than selfheal's own --shutdown.timeout, so selfheal always exits by
// itself (recording what it can) and is never killed mid-write.
func TestStopTimeoutsCoverTheShutdownBound(t *testing.T) {
	flag := regexp.MustCompile(`--shutdown\.timeout=(\w+)`)
	bound := func(file, text string) time.Duration {
		t.Helper()
		m := flag.FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("%s runs selfheal serve without --shutdown.timeout", file)
		}
		d, err := time.ParseDuration(m[1])
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	unit, err := os.ReadFile("systemd/selfheal.service")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\w+)$`).FindSubmatch(unit)
	if m == nil {
		t.Fatal("selfheal.service sets no TimeoutStopSec")
	}
	stop, err := time.ParseDuration(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if b := bound("selfheal.service", string(unit)); stop <= b {
		t.Errorf("TimeoutStopSec=%s is not above --shutdown.timeout=%s", stop, b)
	}
	compose, err := os.ReadFile("compose/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			StopGracePeriod string   `yaml:"stop_grace_period"`
			Command         []string `yaml:"command"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(compose, &c); err != nil {
		t.Fatal(err)
	}
	sh := c.Services["selfheal"]
	grace, err := time.ParseDuration(sh.StopGracePeriod)
	if err != nil {
		t.Fatalf("stop_grace_period %q: %v", sh.StopGracePeriod, err)
	}
	if b := bound("docker-compose.yml", strings.Join(sh.Command, " ")); grace <= b {
		t.Errorf("stop_grace_period %s is not above --shutdown.timeout=%s", grace, b)
	}
}

// The examples are configurations people copy: each must load, and the
// gateway/proxy compose file must say what the README says it does.
func TestExamples(t *testing.T) {
	configs, _ := filepath.Glob("examples/*/selfheal.yml")
	if len(configs) == 0 {
		t.Fatal("no example configurations")
	}
	for _, p := range configs {
		if _, err := policy.Load(p); err != nil {
			t.Errorf("%v", err)
		}
	}
	b, err := os.ReadFile("examples/gateway-proxy/compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			NetworkMode string            `yaml:"network_mode"`
			Labels      map[string]string `yaml:"labels"`
			DependsOn   map[string]struct {
				Restart bool `yaml:"restart"`
			} `yaml:"depends_on"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	proxy := c.Services["proxy"]
	if proxy.NetworkMode != "service:gateway" || !proxy.DependsOn["gateway"].Restart ||
		proxy.Labels["selfheal.enable"] != "true" || c.Services["gateway"].Labels["selfheal.enable"] != "true" {
		t.Errorf("the gateway/proxy example is not the classic case: %+v", c.Services)
	}
}

// TestLocalStackTouchesOnlyItsDemo: `make run` opts in its demo container
// by a label of its own, which scripts/run.sh gives the demo, so that on a
// host whose containers carry the shipped selfheal.enable=true (opted in
// for another selfheal) the demo touches none of them.
func TestLocalStackTouchesOnlyItsDemo(t *testing.T) {
	t.Setenv("SELFHEAL_WEBHOOK_TOKEN", "t")
	cfg, err := policy.Load("local/selfheal.yml")
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Targets.Docker
	rule := optin.New(d.RequireLabel, d.Containers)
	if rule.Allows("other", map[string]string{"selfheal.enable": "true"}) {
		t.Errorf("the local stack's rule (label %q, containers %v) opts in a container labelled selfheal.enable=true", d.RequireLabel, d.Containers)
	}
	run, err := os.ReadFile("../scripts/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`docker run -d --name selfheal-demo --label (\S+) `).FindSubmatch(run)
	if m == nil {
		t.Fatal("scripts/run.sh does not start selfheal-demo with a label")
	}
	key, value, _ := strings.Cut(string(m[1]), "=")
	if !rule.Allows("selfheal-demo", map[string]string{key: value}) {
		t.Errorf("the demo's label %s is not the one the local stack opts in (%s)", m[1], d.RequireLabel)
	}
}
