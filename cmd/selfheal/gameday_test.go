package main

// Game days: the stack as shipped — alerting/rules, alerting/alertmanager.yml
// and deploy/selfheal.yml — with real Prometheus, Alertmanager, selfheal,
// PostgreSQL and Docker, for the scenarios in scenarios_test.go.
//
// Only what differs from one machine to the next is substituted: URLs,
// ports, paths, container names, the opt-in label, the reboot command, and
// time. Rules' for: durations run sixty times faster (2m becomes 2s), as do
// Alertmanager's selfheal route and selfheal's reopen_after, and the
// critical-events count is taken every second; cooldowns,
// failure windows, thresholds, expressions, labels, routing and the
// remediations themselves are the shipped ones. Every substitution must
// find its text in the shipped file, so a scenario cannot go on passing
// against a configuration that has drifted from what it tests.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/exporter/gpu/gputest"
	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

// roles are the application services deploy/selfheal.yml names; each game
// day runs one opted-in container for each.
var roles = []string{"postgres", "minio", "api", "n8n", "llm-service"}

type gameDayOptions struct {
	// RebootEnabled sets SELFHEAL_REBOOT_ENABLED=true.
	RebootEnabled bool
	// Mountpoints, when set, replaces the reboot's shipped `[/]`.
	Mountpoints string
	// LogRoots, when set, are the cleanups' roots; else two empty
	// directories.
	LogRoots []string
	// Watch is the one mount point the filesystem collector reports; empty
	// reports none, so no scenario is disturbed by the machine's own disks.
	Watch string
	// Specs override a role's container.
	Specs map[string]dockertest.Spec
	// GPU runs a build of selfheal whose NVML is go-nvml's mock of two
	// H100s with these readings changed (the H100 fixture otherwise), with
	// the api service's process holding GPU 0.
	GPU func(r *gputest.Reading)
	// GPUIntruder runs a container without the opt-in label (gameDay's
	// intruder) whose process holds GPU 0 beside the api service's.
	GPUIntruder bool
	// Extra are more old→new substitutions in deploy/selfheal.yml; $HOOK
	// in a new text is the recorder's URL.
	Extra []string
	// Args are more flags of selfheal serve.
	Args []string
}

// gameDay is one shipped stack and the world around it.
type gameDay struct {
	*stack
	t       testing.TB
	name    map[string]string // role → container name
	hook    *recorder         // the LLM cache-clear URL and the object store's health URL
	appDB   string            // the application's database: probed and vacuumed
	reboots string            // the fake reboot command appends a line here per reboot
	// intruder is the container without the opt-in label holding GPU 0
	// (gameDayOptions.GPUIntruder).
	intruder string
}

// recorder is an HTTP endpoint that counts requests by path, and answers
// Prometheus's instant queries with no samples.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

func newRecorder(t testing.TB) *recorder {
	r := &recorder{hits: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.hits[req.Method+" "+req.URL.Path]++
		r.mu.Unlock()
		if req.URL.Path == "/api/v1/query" { // a Prometheus where the drain's series is gone: nothing in flight
			fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
		}
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) count(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits[key]
}

// shipped returns a file of the repository with each old→new pair
// replaced; an old text missing from the file fails the test.
func shipped(t testing.TB, path string, pairs ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("../..", path))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("%s no longer contains %q: update the game day with the shipped file", path, pairs[i])
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

var forDuration = regexp.MustCompile(`(?m)^(\s+for: )(\d+)([smh])\s*$`)

// fastRules copies the shipped rules with every for: sixty times shorter
// (at least a second when it was not zero).
func fastRules(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	files, err := filepath.Glob("../../alerting/rules/*.yml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped rules: %v", err)
	}
	unit := map[string]int{"s": 1, "m": 60, "h": 3600}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fast := forDuration.ReplaceAllStringFunc(string(b), func(m string) string {
			g := forDuration.FindStringSubmatch(m)
			n, _ := strconv.Atoi(g[2])
			secs := n * unit[g[3]]
			if secs > 0 {
				secs = max(1, secs/60)
			}
			return fmt.Sprintf("%s%ds", g[1], secs)
		})
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), []byte(fast), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startGameDay runs the shipped stack: one container per role, the
// application's database, the recorder, and Prometheus at 1 s intervals.
func startGameDay(t testing.TB, o gameDayOptions) *gameDay {
	t.Helper()
	s := newStack(t, dockertest.UniqueName("selfheal.gameday"), false)
	g := &gameDay{stack: s, t: t, name: map[string]string{}, hook: newRecorder(t), appDB: pgtest.DSN(t)}
	prefix := dockertest.UniqueName("gd")
	for _, role := range roles {
		spec := o.Specs[role]
		spec.Name = prefix + "-" + role
		spec.Labels = s.Label
		g.name[role] = dockertest.Run(t, spec)
	}
	dir := t.TempDir()
	g.reboots = filepath.Join(dir, "reboots")
	roots := o.LogRoots
	if len(roots) == 0 {
		roots = []string{filepath.Join(dir, "logs"), filepath.Join(dir, "cache")}
		for _, r := range roots {
			if err := os.MkdirAll(r, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = g.name[r]
	}
	pairs := []string{
		"require_label: selfheal.enable=true", "require_label: " + s.labelKey() + "=true",
		"stop_timeout: 30s", "stop_timeout: 2s",
		"reopen_after: 5m", "reopen_after: 5s",
		"critical_events: {threshold: 3, window: 30m}", "critical_events: {threshold: 3, window: 30m, interval: 1s}",
		"services: [postgres, minio, api, n8n, llm-service]", "services: [" + strings.Join(names, ", ") + "]",
		"target: n8n", "target: " + g.name["n8n"],
		"target: llm-service", "target: " + g.name["llm-service"],
		"http://localhost:8000/v1/cache/clear", g.hook.URL + "/v1/cache/clear",
		// The probes, shipped commented out, switched on as an operator would.
		"  probes: []\n  #   - {name: database", "  probes:\n    - {name: database",
		"\n  #   - {name: object-store-minio", "\n    - {name: object-store-minio",
		"http://localhost:9000/minio/health/live", g.hook.URL + "/minio/health/live",
		"postgres://app@localhost/app?sslmode=disable", g.appDB,
		"roots: [/var/log/apps, /var/cache/llm]", "roots: [" + strings.Join(roots, ", ") + "]",
		"command: [systemctl, reboot]", fmt.Sprintf("command: [sh, -c, 'echo reboot >> %s']", g.reboots),
		"verify: {timeout: 120s, stable_for: 10s}", "verify: {timeout: 60s, stable_for: 2s}",
	}
	for i, e := range o.Extra {
		if i%2 == 1 {
			e = strings.ReplaceAll(e, "$HOOK", g.hook.URL)
		}
		pairs = append(pairs, e)
	}
	if o.Mountpoints != "" {
		pairs = append(pairs, "mountpoints: [/]", "mountpoints: "+o.Mountpoints)
	}
	tokenFile := filepath.Join(dir, "token")
	gpuArgs := []string{"--no-collector.gpu"}
	var gpuEnv []string
	var bin string
	if o.GPU != nil {
		bin, gpuArgs = fixtureBinary(t), nil
		procs := fmt.Sprintf("0=%d", dockertest.State(t, g.name["api"]).Pid)
		if o.GPUIntruder {
			g.intruder = dockertest.Run(t, dockertest.Spec{Name: prefix + "-intruder"})
			procs += fmt.Sprintf(",0=%d", dockertest.State(t, g.intruder).Pid)
		}
		gpuEnv = []string{"SELFHEAL_NVML_FIXTURE=" + gpuFixture(t, o.GPU), "SELFHEAL_NVML_PROCESSES=" + procs}
	}
	f := files{
		Binary:   bin,
		Env:      gpuEnv,
		Selfheal: shipped(t, "deploy/selfheal.yml", pairs...),
		Alertmanager: shipped(t, "alerting/alertmanager.yml",
			"http://localhost:9595/api/v1/webhook", "http://"+s.Selfheal+"/api/v1/webhook",
			"/etc/alertmanager/selfheal-token", tokenFile,
			"      group_wait: 5s\n      group_interval: 1m\n      repeat_interval: 5m\n",
			"      group_wait: 0s\n      group_interval: 1s\n      repeat_interval: 5s\n"),
		Args: append([]string{"--log.level=debug",
			"--collector.filesystem.mount-points-exclude=" + mountsExcept(t, o.Watch)}, append(gpuArgs, o.Args...)...),
	}
	if o.RebootEnabled {
		f.Env = append(f.Env, "SELFHEAL_REBOOT_ENABLED=true")
	}
	s.launch(t, f, tokenFile)
	s.prometheus(t, fastRules(t), time.Second, time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			_, out, _ := selfheal(t, s.Env, "events", "--limit=80")
			t.Logf("selfheal events:\n%s", out)
			rows, err := s.DB.Query(context.Background(), `SELECT format('%s %s %s %s %s %s', id, remediation, service_name,
				action_type, status, details) FROM recovery_actions ORDER BY id`)
			if err == nil {
				lines, _ := pgx.CollectRows(rows, pgx.RowTo[string])
				t.Logf("recovery_actions:\n%s", strings.Join(lines, "\n"))
			}
		}
	})
	return g
}

var (
	fixtureOnce sync.Once
	fixtureBin  string
	fixtureErr  error
)

// fixtureBinary builds, once, the selfheal whose NVML is a mock filled from
// a fixture file (nvml_fixture.go).
func fixtureBinary(t testing.TB) string {
	t.Helper()
	fixtureOnce.Do(func() {
		fixtureBin = binary + "-nvml-fixture"
		out, err := exec.Command("go", "build", "-ldflags=-w", "-tags", "selfheal_nvml_fixture", "-o", fixtureBin, ".").CombinedOutput()
		if err != nil {
			fixtureErr = fmt.Errorf("build selfheal with the NVML fixture: %v\n%s", err, out)
		}
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureBin
}

// gpuFixture writes the H100 fixture with change applied and returns its
// path.
func gpuFixture(t testing.TB, change func(r *gputest.Reading)) string {
	t.Helper()
	f, err := gputest.Load("../../exporter/gpu/testdata/h100-nvml_idle.json")
	if err != nil {
		t.Fatal(err)
	}
	change(&f.Devices[0])
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "nvml.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// mountsExcept returns a regular expression matching every mount point of
// this machine but keep ("" keeps none).
func mountsExcept(t testing.TB, keep string) string {
	t.Helper()
	if keep == "" {
		return ".*"
	}
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var others []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		mp := strings.ReplaceAll(fields[1], `\040`, " ")
		if mp != keep {
			others = append(others, regexp.QuoteMeta(mp))
		}
	}
	return "^(?:" + strings.Join(others, "|") + ")$"
}

// count runs a query returning one integer.
func (g *gameDay) count(sql string, args ...any) int {
	g.t.Helper()
	return queryInt(g.t, g.DB, sql, args...)
}

// waitFor polls cond; on timeout the test fails, and its cleanup prints the
// events.
func (g *gameDay) waitFor(timeout time.Duration, what string, cond func() bool) {
	g.t.Helper()
	dockertest.WaitFor(g.t, timeout, what, cond)
}

// actions returns the actions of a remediation in order, as
// "type:status" strings.
func (g *gameDay) actions(remediation string) []string {
	g.t.Helper()
	rows, err := g.DB.Query(g.t.Context(), `SELECT action_type || ':' || status FROM recovery_actions
		WHERE remediation = $1 ORDER BY id`, remediation)
	if err != nil {
		g.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			g.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// rebootCount is how many times the fake reboot command ran.
func (g *gameDay) rebootCount() int {
	b, err := os.ReadFile(g.reboots)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "reboot")
}

// loopFS is a real, small ext4 filesystem on a loop device, mounted for
// the test: the disk that fills.
type loopFS struct {
	Mountpoint string
}

// diskMu keeps disk scenarios one at a time: each watches only its own
// mount point, which the others' must not be mistaken for.
var diskMu sync.Mutex

func newLoopFS(t testing.TB, sizeMiB int) *loopFS {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "mount", "umount"} {
		requireTool(t, tool)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the disk scenarios mount a loop device and need root (CI=true)")
		}
		t.Skip("the disk scenarios mount a loop device and need root")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	mp := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]string{
		{"truncate", "-s", fmt.Sprintf("%dM", sizeMiB), img},
		{"mkfs.ext4", "-q", "-m", "0", img},
		{"mount", "-o", "loop", img, mp},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mp).Run() })
	return &loopFS{Mountpoint: mp}
}

// used returns the share of the filesystem in use, as the rules compute it.
func (l *loopFS) used(t testing.TB) float64 {
	t.Helper()
	size, avail := statfs(t, l.Mountpoint)
	return 1 - float64(avail)/float64(size)
}

// fill writes files of about step bytes under dir until the filesystem is
// at least share full; old sets their modification time eight days back,
// as rotated logs a cleanup may delete.
func (l *loopFS) fill(t testing.TB, dir, prefix string, share float64, old bool) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	for i := 0; l.used(t) < share; i++ {
		p := filepath.Join(dir, fmt.Sprintf("%s.%d", prefix, i))
		if err := os.WriteFile(p, chunk, 0o644); err != nil {
			t.Fatalf("fill %s: %v", p, err)
		}
		if old {
			when := time.Now().Add(-8 * 24 * time.Hour)
			if err := os.Chtimes(p, when, when); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func statfs(t testing.TB, path string) (size, avail uint64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize)
}
