package main

// Load scenarios for `make bench` (scripts/bench.sh), run against the
// selfheal binary as its own process, a PostgreSQL cluster with default
// durability (fsync and synchronous commit on) and the real Docker daemon.
// Each runs its fixed scenario once, whatever b.N, and reports its figures
// with ReportMetric: run them with -benchtime=1x. The load generator runs on
// the same machine and shares its cores.

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

const benchToken = "bench-token"

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// envInts is a comma-separated list of integers from the environment, or
// def when the variable is unset.
func envInts(b *testing.B, name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		out = append(out, n)
	}
	return out
}

// benchDaemon starts selfheal on a fresh durable cluster with the
// service-down remediation, and returns its URL and a database connection.
// The remediation only restarts and never escalates (one step,
// max_failures: 0): the benchmarks take one container down many times on
// purpose, which the shipped configuration would rightly call a crash loop
// and answer with stop and start, then critical recovery.
func benchDaemon(b *testing.B, extraConfig string, env ...string) (string, *pgx.Conn) {
	b.Helper()
	dockertest.Client(b)
	settings := benchSettings()
	if statementsWanted() {
		settings = append(settings, statementSettings...)
	}
	cluster := pgtest.NewDurableCluster(b, settings...)
	config := writeFile(b, "selfheal.yml", `
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart]
    max_failures: 0
    verify: {timeout: 10s, stable_for: 0s}
`+extraConfig)
	addr := freeAddr(b)
	env = append([]string{"SELFHEAL_DATABASE_URL=" + cluster.URL(), "SELFHEAL_WEBHOOK_TOKEN=" + benchToken}, env...)
	daemon(b, env, config, addr, "--log.level=warn")
	conn, err := pgx.Connect(context.Background(), cluster.URL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(context.Background()) })
	if statementsWanted() {
		if _, err := conn.Exec(context.Background(), "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()"); err != nil {
			b.Fatal(err)
		}
	}
	return "http://" + addr, conn
}

// statementsWanted is SELFHEAL_BENCH_STATEMENTS=1: the daemon's cluster
// loads pg_stat_statements, and benchmarks that can print where
// PostgreSQL's time went by statement.
func statementsWanted() bool { return os.Getenv("SELFHEAL_BENCH_STATEMENTS") == "1" }

// benchSettings is SELFHEAL_BENCH_PG_SETTINGS, PostgreSQL settings as
// name=value separated by spaces, for the daemon's cluster: to find what a
// figure owes to one, e.g. synchronous_commit=off for the commit's flush.
func benchSettings() []string {
	var settings []string
	for _, kv := range strings.Fields(os.Getenv("SELFHEAL_BENCH_PG_SETTINGS")) {
		settings = append(settings, "-c", kv)
	}
	return settings
}

var statementSettings = []string{"-c", "shared_preload_libraries=pg_stat_statements", "-c", "pg_stat_statements.track=all",
	"-c", "pg_stat_statements.track_planning=on", "-c", "pg_stat_statements.max=20000"}

// alerts returns a webhook payload of n firing alerts, labelled
// i=prefix-0 … prefix-(n-1) (with fingerprints derived from it, as
// Alertmanager's are: 16 hex digits); the service label cycles over
// services.
func alerts(alertname, prefix string, services []string, startsAt time.Time, n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"receiver":"selfheal","status":"firing","alerts":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"status":"firing","labels":{"alertname":%q,"service":%q,"severity":"critical","category":"A","i":"%s-%d"},`+
			`"annotations":{"summary":"bench"},"startsAt":%q,"endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"%016x"}`,
			alertname, services[i%len(services)], prefix, i, startsAt.UTC().Format(time.RFC3339Nano), benchFingerprint(prefix, i))
	}
	fmt.Fprintf(&b, `],"groupLabels":{"alertname":%q},"commonLabels":{},"commonAnnotations":{},"externalURL":"http://bench","version":"4","groupKey":"bench","truncatedAlerts":0}`, alertname)
	return b.Bytes()
}

func benchFingerprint(prefix string, i int) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s-%d", prefix, i)
	return h.Sum64()
}

var benchClient = &http.Client{
	Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512},
	Timeout:   30 * time.Second,
}

func postAlerts(url string, body []byte) error {
	return postAlertsAs(url, benchToken, http.StatusOK, body)
}

// postAlertsAs posts body with token and fails unless answered want.
func postAlertsAs(url, token string, want int, body []byte) error {
	req, _ := http.NewRequest(http.MethodPost, url+"/api/v1/webhook", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := benchClient.Do(req)
	if err != nil {
		return err
	}
	// Read to the end so the connection is reused, as Alertmanager does.
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func reportLatencies(b *testing.B, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) time.Duration { return lat[int(float64(len(lat)-1)*p)] }
	b.ReportMetric(ms(q(0.50)), "p50-ms")
	b.ReportMetric(ms(q(0.95)), "p95-ms")
	b.ReportMetric(ms(q(0.99)), "p99-ms")
	b.ReportMetric(ms(lat[len(lat)-1]), "max-ms")
}

// BenchmarkWebhookAccept sends one alert per request at a fixed rate
// (SELFHEAL_BENCH_RATE, default 1000/s) for SELFHEAL_BENCH_SECONDS (default
// 10), after 2 s of warm-up at the same rate, and measures each request
// from the moment it was due, so a stall counts against every request it
// delays. In "persist" the alerts match no remediation; in "persist+engine"
// each queues a job that the engine decides while the load runs (its target
// does not exist: a Docker lookup, then a refusal written to the database).
// "http" is the floor under both: the same requests with a wrong token,
// answered 401 by selfheal before any database work, so its figures are the
// load generator's, the HTTP server's and the two cores' scheduling.
// SELFHEAL_BENCH_WORKERS sets engine.workers (4).
func BenchmarkWebhookAccept(b *testing.B) {
	rate := envInt("SELFHEAL_BENCH_RATE", 1000)
	seconds := envInt("SELFHEAL_BENCH_SECONDS", 10)
	for _, sc := range []struct {
		name, alertname, token string
		want                   int
	}{
		{"http", "BenchUnmatched", "not-" + benchToken, http.StatusUnauthorized},
		{"persist", "BenchUnmatched", benchToken, http.StatusOK},
		{"persist+engine", "ServiceDown", benchToken, http.StatusOK},
	} {
		b.Run(sc.name, func(b *testing.B) {
			extra := ""
			if w := envInt("SELFHEAL_BENCH_WORKERS", 0); w > 0 {
				extra = fmt.Sprintf("engine: {workers: %d}\n", w)
			}
			url, conn := benchDaemon(b, extra)
			services := []string{"bench-absent-a", "bench-absent-b", "bench-absent-c"}
			load := func(prefix string, total int) ([]time.Duration, int64) {
				lat := make([]time.Duration, total)
				var failed atomic.Int64
				var wg sync.WaitGroup
				begin := time.Now().Add(50 * time.Millisecond)
				for i := range total {
					due := begin.Add(time.Duration(i) * time.Second / time.Duration(rate))
					body := alerts(sc.alertname, prefix+strconv.Itoa(i), services, begin, 1)
					time.Sleep(time.Until(due))
					wg.Go(func() {
						if err := postAlertsAs(url, sc.token, sc.want, body); err != nil {
							failed.Add(1)
						}
						lat[i] = time.Since(due)
					})
				}
				wg.Wait()
				return lat, failed.Load()
			}
			load("warm", 2*rate)
			total := rate * seconds
			before := handlerOver5ms(b, url)
			profileDaemon(b, url)
			host := readHostCPU(b)
			start := time.Now()
			lat, failed := load("m", total)
			elapsed := time.Since(start)
			host.reportSince(b)
			// Where the tail is: requests over 5 ms as the client saw them, and
			// as selfheal's handler timed itself (from its histogram).
			over := 0
			for _, d := range lat {
				if d > 5*time.Millisecond {
					over++
				}
			}
			b.ReportMetric(float64(over), "over-5ms")
			b.ReportMetric(handlerOver5ms(b, url)-before, "handler-over-5ms")
			if statementsWanted() {
				printStatements(b, conn)
			}
			reportLatencies(b, lat)
			b.ReportMetric(float64(total)/elapsed.Seconds(), "alerts/s")
			b.ReportMetric(float64(failed), "failed")
			// Every alert answered 200 is stored; one the client gave up on may
			// be stored too (Alertmanager would send it again: at least once).
			// None answered 401 is.
			n := queryInt(b, conn, `SELECT count(*) FROM alert_occurrences WHERE labels->>'i' LIKE 'm%'`)
			if sc.want != http.StatusOK {
				if n != 0 {
					b.Fatalf("%d alerts persisted from requests answered %d", n, sc.want)
				}
			} else if n < total-int(failed) || n > total {
				b.Fatalf("%d alerts persisted, want %d to %d", n, total-int(failed), total)
			}
		})
	}
}

// handlerOver5ms is how many webhook requests selfheal's handler has timed
// at over 5 ms, from selfheal_webhook_request_duration_seconds on /metrics.
func handlerOver5ms(b *testing.B, url string) float64 {
	var count, within float64
	for _, line := range strings.Split(scrape(b, url+"/metrics"), "\n") {
		name, value, _ := strings.Cut(line, " ")
		switch name {
		case "selfheal_webhook_request_duration_seconds_count":
			count, _ = strconv.ParseFloat(value, 64)
		case `selfheal_webhook_request_duration_seconds_bucket{le="0.005"}`:
			within, _ = strconv.ParseFloat(value, 64)
		}
	}
	if count == 0 {
		b.Fatal("no webhook request histogram on /metrics")
	}
	return count - within
}

// EnvAMExecutor names a prometheus-am-executor binary (built with go build
// from the public repository imgix/prometheus-am-executor) that
// BenchmarkDecisionLatency measures beside selfheal, running docker
// restart for each alert; unset, it is not measured.
const EnvAMExecutor = "SELFHEAL_BENCH_AM_EXECUTOR"

// BenchmarkDecisionLatency measures, over SELFHEAL_BENCH_DECISIONS alerts
// (default 50), the time from posting a ServiceDown alert to selfheal's
// restart request reaching the Docker Engine, seen on a socket proxy
// between them. Before each alert the container is killed (a ServiceDown
// for a container that runs, in the run selfheal itself started, is rightly
// left alone). Alerts are sent one at a time, each after the previous
// action finished. With SELFHEAL_BENCH_AM_EXECUTOR, prometheus-am-executor
// running `docker restart` for the alert's service is measured the same
// way on a container of its own, alert after alert in turn with selfheal,
// and the ratio taken alert by alert (selfheal-vs-am-executor-ratio-p50).
func BenchmarkDecisionLatency(b *testing.B) {
	n := envInt("SELFHEAL_BENCH_DECISIONS", 50)
	rig := newDecisionRig(b, n)
	var peer func(i int) time.Duration
	if bin := os.Getenv(EnvAMExecutor); bin != "" {
		peer = amExecutor(b, bin)
	} else {
		b.Logf("%s is not set: prometheus-am-executor is not measured beside selfheal", EnvAMExecutor)
	}
	var lat, peerLat []time.Duration
	var ratios []float64
	for i := range n {
		lat = append(lat, rig.once(b, "d", i))
		if peer != nil {
			peerLat = append(peerLat, peer(i))
			ratios = append(ratios, float64(lat[i])/float64(peerLat[i]))
		}
	}
	reportLatencies(b, lat)
	if peer != nil {
		sort.Slice(peerLat, func(i, j int) bool { return peerLat[i] < peerLat[j] })
		sort.Float64s(ratios)
		b.ReportMetric(ms(peerLat[len(peerLat)/2]), "am-executor-p50-ms")
		b.ReportMetric(ms(peerLat[int(float64(len(peerLat)-1)*0.95)]), "am-executor-p95-ms")
		b.ReportMetric(ratios[len(ratios)/2], "selfheal-vs-am-executor-ratio-p50")
	}
	if got := queryInt(b, rig.conn, `SELECT count(*) FROM recovery_actions WHERE status = 'succeeded'`); got != n {
		b.Fatalf("%d actions succeeded, want %d", got, n)
	}
}

// amExecutor runs prometheus-am-executor with one command, docker restart
// of the alert's service, its Docker calls through a proxy of their own,
// and returns a function that kills its container, posts it the alert
// and returns how long until its restart request reached the Engine.
func amExecutor(b *testing.B, bin string) func(i int) time.Duration {
	proxy := newDockerProxy(b)
	proxy.restarts = make(chan time.Time, 1)
	name := dockertest.Run(b, dockertest.Spec{Name: dockertest.UniqueName("am-executor-target")})
	addr := freeAddr(b)
	config := writeFile(b, "executor.yml", fmt.Sprintf(`listen_address: %q
commands:
  - cmd: sh
    args: ["-c", "docker restart \"$AMX_ALERT_1_LABEL_service\" >/dev/null"]
    notify_on_failure: false
    ignore_resolved: true
`, addr))
	background(b, []string{"DOCKER_HOST=unix://" + proxy.path}, bin, "-f", config)
	waitReady(b, "prometheus-am-executor", "http://"+addr+"/_health")
	return func(i int) time.Duration {
		dockertest.Kill(b, name)
		body := alerts("ServiceDown", "amx"+strconv.Itoa(i), []string{name}, time.Now(), 1)
		sent := time.Now()
		resp, err := benchClient.Post("http://"+addr+"/", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		select {
		case at := <-proxy.restarts:
			dockertest.WaitFor(b, 20*time.Second, name+" running", func() bool { return dockertest.State(b, name).Running })
			return at.Sub(sent)
		case <-time.After(10 * time.Second):
			b.Fatalf("alert %d: prometheus-am-executor sent no restart request within 10s (answered %d)", i, resp.StatusCode)
			return 0
		}
	}
}

// decisionRig is an opted-in container, a socket proxy in front of the
// Docker Engine that reports selfheal's restart requests, and selfheal on a
// fresh durable cluster whose storm brake allows n actions.
type decisionRig struct {
	name, url string
	conn      *pgx.Conn
	proxy     *dockerProxy
}

func newDecisionRig(b *testing.B, n int) decisionRig {
	r := decisionRig{name: dockertest.Run(b, dockertest.Spec{Labels: map[string]string{"selfheal.enable": "true"}}), proxy: newDockerProxy(b)}
	r.proxy.restarts = make(chan time.Time, 1)
	r.url, r.conn = benchDaemon(b, fmt.Sprintf("engine: {storm_brake: {max_actions: %d}}\n", n+1), "DOCKER_HOST=unix://"+r.proxy.path)
	return r
}

// measure kills the container n times, each time posts its ServiceDown,
// and returns how long each took from the post to selfheal's restart
// request; each alert waits until the previous action finished.
func (r decisionRig) measure(b *testing.B, prefix string, n int) []time.Duration {
	lat := make([]time.Duration, 0, n)
	for i := range n {
		lat = append(lat, r.once(b, prefix, i))
	}
	return lat
}

// once kills the container, posts its ServiceDown and returns how long
// until selfheal's restart request, once the action has finished.
func (r decisionRig) once(b *testing.B, prefix string, i int) time.Duration {
	dockertest.Kill(b, r.name)
	body := alerts("ServiceDown", prefix+strconv.Itoa(i), []string{r.name}, time.Now(), 1)
	sent := time.Now()
	if err := postAlerts(r.url, body); err != nil {
		b.Fatal(err)
	}
	var lat time.Duration
	select {
	case at := <-r.proxy.restarts:
		lat = at.Sub(sent)
	case <-time.After(10 * time.Second):
		b.Fatalf("alert %d: no restart request within 10s", i)
	}
	dockertest.WaitFor(b, 20*time.Second, "action finished", func() bool {
		return queryInt(b, r.conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 0 &&
			queryInt(b, r.conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued'`) == 0
	})
	return lat
}

// BenchmarkAlertStorm delivers a storm of SELFHEAL_BENCH_STORM_ALERTS
// alerts (default 50,000) over SELFHEAL_BENCH_STORM_SERVICES services
// (10,000), SELFHEAL_BENCH_STORM_CONTAINERS (20) of them real opted-in
// containers and the rest absent, in one burst: one request per service
// carrying its alerts, as the shipped route (grouped by service) sends them,
// 50 requests at a time. It measures how long until all are persisted and
// until every job is decided. The storm brake (10 actions per 10 minutes,
// fewer than the containers) must hold: at most 10 actions, every other job
// skipped or refused with its reason, nothing lost. With
// SELFHEAL_BENCH_STORM_CONTAINERS below 10 the brake never engages, and
// the storm is decided by refusals of the absent services.
func BenchmarkAlertStorm(b *testing.B) {
	total := envInt("SELFHEAL_BENCH_STORM_ALERTS", 50000)
	services := envInt("SELFHEAL_BENCH_STORM_SERVICES", 10000)
	containers := envInt("SELFHEAL_BENCH_STORM_CONTAINERS", 20)
	const senders, brake = 50, 10
	if total%services != 0 || containers > services {
		b.Fatalf("%d alerts over %d services (%d containers): want a whole number of alerts per service", total, services, containers)
	}
	names := make([]string, services)
	for i := range services {
		if i < containers {
			names[i] = dockertest.Run(b, dockertest.Spec{Labels: map[string]string{"selfheal.enable": "true"}})
		} else {
			names[i] = fmt.Sprintf("bench-absent-%05d", i)
		}
	}
	url, conn := benchDaemon(b, fmt.Sprintf("engine: {storm_brake: {max_actions: %d}}\n", brake))
	bodies := make(chan []byte, services)
	now := time.Now()
	for i, name := range names {
		bodies <- alerts("ServiceDown", "s"+strconv.Itoa(i), []string{name}, now, total/services)
	}
	close(bodies)
	var retried atomic.Int64
	var wg sync.WaitGroup
	profileDaemon(b, url)
	begin := time.Now()
	for range senders {
		wg.Go(func() {
			for body := range bodies {
				for postAlerts(url, body) != nil { // Alertmanager retries too
					retried.Add(1)
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	persisted := time.Since(begin)
	if n := queryInt(b, conn, `SELECT count(*) FROM alert_occurrences`); n != total {
		b.Fatalf("%d alerts persisted, want %d", n, total)
	}
	dockertest.WaitFor(b, 10*time.Minute, "every job decided", func() bool {
		return queryInt(b, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued'`) == 0
	})
	decided := time.Since(begin)
	actions := queryInt(b, conn, `SELECT count(*) FROM recovery_actions`)
	braked := queryInt(b, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'skipped' AND reason LIKE 'storm brake:%'`)
	refused := queryInt(b, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused' AND reason LIKE '%no container named%'`)
	// Once restarted, a container runs in the run selfheal started: the
	// other alerts for it are its own doing, or it came back.
	recovered := queryInt(b, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'skipped'
		AND (reason LIKE '%is running again since%' OR reason LIKE '%not an outage')`)
	done := queryInt(b, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'done'`)
	if other := done - actions - braked - refused - recovered; other != 0 {
		rows, _ := conn.Query(context.Background(), `SELECT outcome, left(reason, 60), count(*) FROM remediation_jobs
			WHERE NOT (outcome = 'skipped' AND (reason LIKE 'storm brake:%' OR reason LIKE '%is running again since%' OR reason LIKE '%not an outage'))
			  AND NOT (outcome = 'refused' AND reason LIKE '%no container named%')
			GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5`)
		for rows.Next() {
			var o, r string
			var n int
			_ = rows.Scan(&o, &r, &n)
			b.Logf("%d jobs %s: %s", n, o, r)
		}
	}
	if statementsWanted() {
		printStatements(b, conn)
	}
	b.ReportMetric(persisted.Seconds(), "persisted-s")
	b.ReportMetric(decided.Seconds(), "decided-s")
	b.ReportMetric(float64(actions), "actions")
	b.ReportMetric(float64(braked), "braked")
	b.ReportMetric(float64(refused), "refused")
	b.ReportMetric(float64(recovered), "recovered")
	b.ReportMetric(float64(retried.Load()), "retried")
	// With fewer containers than the brake allows actions, it never
	// engages: the storm is refusals (absent services) and recoveries.
	if actions > min(brake, containers) || (containers > brake && braked == 0) || done != total {
		b.Fatalf("storm brake did not hold: %d actions, %d braked, %d of %d jobs done", actions, braked, done, total)
	}
}

// profileDaemon, with SELFHEAL_BENCH_PROFILE=FILE, writes a CPU profile
// of the daemon at url over the next SELFHEAL_BENCH_PROFILE_SECONDS (10)
// to FILE (go tool pprof reads it with the binary).
func profileDaemon(b *testing.B, url string) {
	file := os.Getenv("SELFHEAL_BENCH_PROFILE")
	if file == "" {
		return
	}
	seconds := envInt("SELFHEAL_BENCH_PROFILE_SECONDS", 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", url, seconds))
		if err != nil {
			b.Errorf("profile: %v", err)
			return
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err == nil {
			err = os.WriteFile(file, raw, 0o644)
		}
		if err != nil {
			b.Errorf("profile: %v", err)
		}
	}()
	b.Cleanup(func() { <-done })
}

// BenchmarkIdleMemory reports selfheal serve's resident memory after
// SELFHEAL_BENCH_IDLE_SECONDS (default 60: it grows for about a minute, then
// holds) of idling with the database connected and Prometheus-style scrapes
// of /metrics every second (gzip accepted, as Prometheus asks).
//
// It runs serve twice. First from a copy of the binary written the way
// install(1), a package or an image layer writes it: that is the figure
// reported as rss-MiB, anon-MiB and file-MiB. Then from the file the Go linker
// just wrote (linked-rss-MiB, linked-file-MiB): the linker writes through a
// shared mapping, and the kernel then maps more of those cached pages into
// every process that runs the file — about 3 MiB more here for the same bytes
// (docs/benchmarks.md).
func BenchmarkIdleMemory(b *testing.B) {
	installed := filepath.Join(b.TempDir(), "selfheal")
	if err := copyExecutable(binary, installed); err != nil {
		b.Fatal(err)
	}
	rss, anon, file := idleMemory(b, installed)
	b.ReportMetric(rss, "rss-MiB")
	b.ReportMetric(anon, "anon-MiB")
	b.ReportMetric(file, "file-MiB")
	rss, _, file = idleMemory(b, binary)
	b.ReportMetric(rss, "linked-rss-MiB")
	b.ReportMetric(file, "linked-file-MiB")
}

// idleMemory runs bin's serve as BenchmarkIdleMemory says and returns its
// VmRSS, RssAnon and RssFile in MiB. VmRSS is RssAnon (heap, stacks, runtime)
// + RssFile (the binary's and libraries' pages mapped in: clean, shared and
// reclaimable) + RssShmem.
func idleMemory(b *testing.B, bin string) (rss, anon, file float64) {
	cluster := pgtest.NewDurableCluster(b)
	config := writeFile(b, "selfheal.yml", "remediations: []\n")
	addr := freeAddr(b)
	cmd := daemonOf(b, bin, []string{"SELFHEAL_DATABASE_URL=" + cluster.URL(), "SELFHEAL_WEBHOOK_TOKEN=t"}, config, addr, "--log.level=warn")
	defer func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	}()
	for range envInt("SELFHEAL_BENCH_IDLE_SECONDS", 60) {
		if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		time.Sleep(time.Second)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		kb, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rss = float64(kb) / 1024
		case "RssAnon:":
			anon = float64(kb) / 1024
		case "RssFile:":
			file = float64(kb) / 1024
		}
	}
	return rss, anon, file
}

// copyExecutable copies the executable src to dst through the file API, not
// a mapping, as install(1) does.
func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// cpuNanos is the CPU time a process has used: the sum over its threads of
// /proc/<pid>/task/<tid>/schedstat (nanoseconds, unlike /proc/<pid>/stat).
func cpuNanos(b *testing.B, pid int) int64 {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("no threads for pid %d: %v", pid, err)
	}
	var total int64
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		v, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		total += v
	}
	return total
}

// BenchmarkSystemVsNodeExporter runs `selfheal exporter` with only the
// system collector and Debian's prometheus-node-exporter with only the
// collectors for the same metric families (cpu, meminfo, filesystem, hwmon,
// thermal_zone, loadavg) side by side, scrapes each in turn
// SELFHEAL_BENCH_SCRAPES times (default 300), and reports per scrape: the
// client-side latency, the process's CPU time, and the collector time each
// reports about itself.
func BenchmarkSystemVsNodeExporter(b *testing.B) {
	nodeBin, err := exec.LookPath("prometheus-node-exporter")
	if err != nil {
		b.Skip("prometheus-node-exporter is not installed (make bench installs it)")
	}
	n := envInt("SELFHEAL_BENCH_SCRAPES", 300)
	type target struct {
		name, addr, selfTime string
		cmd                  *exec.Cmd
		lat                  []time.Duration
		cpu                  int64
		self                 float64
	}
	selfAddr, nodeAddr := freeAddr(b), freeAddr(b)
	targets := []*target{
		{name: "selfheal", addr: selfAddr, selfTime: "selfheal_exporter_collector_duration_seconds",
			cmd: exec.Command(binary, "exporter", "--web.listen-address="+selfAddr, "--log.level=warn",
				"--no-collector.gpu", "--no-collector.docker", "--no-collector.probe")},
		{name: "node", addr: nodeAddr, selfTime: "node_scrape_collector_duration_seconds",
			cmd: exec.Command(nodeBin, "--web.listen-address="+nodeAddr, "--log.level=warn", "--collector.disable-defaults",
				"--collector.cpu", "--collector.meminfo", "--collector.filesystem", "--collector.hwmon",
				"--collector.thermal_zone", "--collector.loadavg")},
	}
	scrape := func(t *target) string {
		resp, err := http.Get("http://" + t.addr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	for _, t := range targets {
		if err := t.cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = t.cmd.Process.Kill(); _, _ = t.cmd.Process.Wait() })
		dockertest.WaitFor(b, 10*time.Second, t.name+" up", func() bool { return scrape(t) != "" })
		for range 20 { // warm up
			scrape(t)
		}
	}
	for _, t := range targets {
		t.cpu = -cpuNanos(b, t.cmd.Process.Pid)
	}
	for range n {
		for _, t := range targets {
			start := time.Now()
			body := scrape(t)
			t.lat = append(t.lat, time.Since(start))
			// The collector time each reports about itself, summed over its collectors.
			for _, line := range strings.Split(body, "\n") {
				if strings.HasPrefix(line, t.selfTime+"{") {
					f := strings.Fields(line)
					v, _ := strconv.ParseFloat(f[len(f)-1], 64)
					t.self += v
				}
			}
		}
	}
	for _, t := range targets {
		t.cpu += cpuNanos(b, t.cmd.Process.Pid)
		sort.Slice(t.lat, func(i, j int) bool { return t.lat[i] < t.lat[j] })
		b.ReportMetric(ms(t.lat[len(t.lat)/2]), t.name+"-p50-ms")
		b.ReportMetric(float64(t.cpu)/float64(n)/1e6, t.name+"-cpu-ms/scrape")
		b.ReportMetric(t.self/float64(n)*1000, t.name+"-collector-ms/scrape")
	}
	// Both expose the same families; a scrape each shows what was compared.
	for _, fam := range []string{"cpu_seconds_total", "filesystem_avail", "load1"} {
		for _, t := range targets {
			if !strings.Contains(scrape(t), fam) && !(fam == "filesystem_avail" && strings.Contains(scrape(t), "filesystem_available")) {
				b.Errorf("%s exposes no %s", t.name, fam)
			}
		}
	}
}

// BenchmarkTimeToHeal kills an opted-in container SELFHEAL_BENCH_KILLS
// times (default 20) under the whole loop and measures kill → running
// again, in two settings: the demo's (1 s scrape and evaluation, group_wait
// 0s) and the shipped defaults (15 s scrape and evaluation — Prometheus'
// usual — and the example Alertmanager route's group_wait of 5 s). Each
// kill waits until the previous alert has resolved, so every one starts a
// new Alertmanager group. Besides heal time it reports detection (kill →
// the alert reaching selfheal) and selfheal's own part (alert received →
// Docker's StartedAt), and the floor: half a scrape and half an
// evaluation on average, plus group_wait, plus the restart itself.
func BenchmarkTimeToHeal(b *testing.B) {
	kills := envInt("SELFHEAL_BENCH_KILLS", 20)
	for _, sc := range []struct {
		name                    string
		scrape, eval, groupWait time.Duration
	}{
		{"demo", time.Second, time.Second, 0},
		{"defaults", 15 * time.Second, 15 * time.Second, 5 * time.Second},
	} {
		b.Run(sc.name, func(b *testing.B) {
			s := startStack(b, stackOptions{ScrapeInterval: sc.scrape, EvalInterval: sc.eval, GroupWait: sc.groupWait,
				// Restart only: since every outage counts as a failure, a ladder's
				// later steps (stop_start's wait) would be measured from the
				// second kill on. Twenty kills on purpose: not a crash loop.
				Remediations: strings.Replace(serviceDownRemediation, "steps: [restart, stop_start]", "steps: [restart]", 1) +
					"    max_failures: 0\n", Durable: true})
			api, _ := dockertest.Client(b)
			name := dockertest.Run(b, dockertest.Spec{Labels: s.Label, Args: []string{"-http", ":8080"}, NetworkMode: "bridge"})
			var heal, detect, own []time.Duration
			for i := range kills {
				dockertest.WaitFor(b, 3*time.Minute, "Prometheus sees it running, nothing open", func() bool {
					v, ok := s.promValue(b, `selfheal_container_running{name="`+name+`"}`)
					open := queryInt(b, s.DB, `SELECT (SELECT count(*) FROM alert_occurrences WHERE status = 'firing')
						+ (SELECT count(*) FROM recovery_actions WHERE status = 'running')`)
					return ok && v == "1" && open == 0
				})
				time.Sleep(time.Duration(i%4) * sc.scrape / 4) // spread kills over the scrape cycle
				killed := time.Now()
				if _, err := api.ContainerKill(context.Background(), name, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
					b.Fatal(err)
				}
				dockertest.WaitFor(b, 3*time.Minute, "running again", func() bool { return running(b, name) })
				heal = append(heal, time.Since(killed))
				var received time.Time
				if err := s.DB.QueryRow(context.Background(),
					`SELECT max(first_received_at) FROM alert_occurrences WHERE alertname = 'ServiceDown'`).Scan(&received); err != nil {
					b.Fatal(err)
				}
				started, err := time.Parse(time.RFC3339Nano, dockertest.State(b, name).StartedAt)
				if err != nil {
					b.Fatal(err)
				}
				detect = append(detect, received.Sub(killed))
				own = append(own, started.Sub(received))
			}
			reportLatencies(b, heal)
			sort.Slice(detect, func(i, j int) bool { return detect[i] < detect[j] })
			sort.Slice(own, func(i, j int) bool { return own[i] < own[j] })
			b.ReportMetric(ms(detect[len(detect)/2]), "detect-p50-ms")
			b.ReportMetric(ms(own[len(own)/2]), "selfheal-p50-ms")
			b.ReportMetric(ms(own[len(own)*95/100]), "selfheal-p95-ms")
			floor := sc.scrape/2 + sc.eval/2 + sc.groupWait + 400*time.Millisecond
			b.ReportMetric(ms(floor), "floor-ms")
			dockertest.WaitFor(b, 30*time.Second, "last action finished", func() bool {
				return queryInt(b, s.DB, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 0
			})
			if n := queryInt(b, s.DB, `SELECT count(*) FROM recovery_actions WHERE status = 'succeeded'`); n != kills {
				rows, _ := s.DB.Query(context.Background(), `SELECT j.step, j.outcome, j.reason, o.starts_at FROM remediation_jobs j JOIN alert_occurrences o ON o.id = j.occurrence_id ORDER BY j.id`)
				for rows.Next() {
					var step int
					var outcome, reason *string
					var at time.Time
					_ = rows.Scan(&step, &outcome, &reason, &at)
					b.Logf("job step %d %v %v %v", step, deref(outcome), deref(reason), at)
				}
				b.Fatalf("%d restarts succeeded, want %d", n, kills)
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// BenchmarkCrashToRunning kills a container's main process from the host
// (kill -9, which a restart policy counts as a crash) and measures until
// Docker reports it running again (its new StartedAt), alternating, over
// SELFHEAL_BENCH_KILLS (20) crashes each: a container with Docker's own
// --restart=always, created afresh each time so every restart is its
// first (no backoff); the floor, a container this process starts again
// through the Engine's API on its die event, at once; the script, one a
// shell script starts again with docker start on its die event (docker
// events piped into a loop, as an operator would write it); one healed by
// selfheal's fast path; and one healed by the slow path (scrape → rule →
// Alertmanager → webhook) with the demo's 1 s intervals. They run under
// the same stack, one crash after the other; each fast-path crash follows
// a floor and a script crash, and its ratio to each is taken crash by
// crash (…-ratio-p50, the median of those ratios).
func BenchmarkCrashToRunning(b *testing.B) {
	kills := envInt("SELFHEAL_BENCH_KILLS", 20)
	remediation := func(name, pattern, extra string) string {
		return fmt.Sprintf(`  - name: %s
    match: ['alertname="ServiceDown"', 'service=~"%s"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart]
    max_failures: 0   # crashes on purpose: not a crash loop to escalate
    verify: {timeout: 10s, stable_for: 0s}
%s`, name, pattern, extra)
	}
	s := startStack(b, stackOptions{ScrapeInterval: time.Second, EvalInterval: time.Second, Durable: true, Handoff: true,
		Engine:       fmt.Sprintf("{storm_brake: {max_actions: %d}}", 2*kills+5), // every crash is healed, on purpose
		Remediations: remediation("fast", "crash-fast-.*", "    fast_path: {on: die}\n") + remediation("slow", "crash-slow-.*", "")})
	c, _ := dockertest.Client(b)
	ctx := context.Background()
	fast := dockertest.Run(b, dockertest.Spec{Name: dockertest.UniqueName("crash-fast"), Labels: s.Label})
	slow := dockertest.Run(b, dockertest.Spec{Name: dockertest.UniqueName("crash-slow"), Labels: s.Label})
	dockertest.WaitFor(b, 30*time.Second, "Prometheus sees both", func() bool {
		v, ok := s.promValue(b, `count(selfheal_container_running{name=~"crash-.*"} == 1)`)
		return ok && v == "2"
	})

	// crash kills name's main process and returns how long until it runs
	// again in a new run.
	crash := func(name string) time.Duration {
		info, err := inspect(c, name)
		if err != nil || info.State == nil || !info.State.Running {
			b.Fatalf("%s is not running: %v", name, err)
		}
		before := info.State.StartedAt
		killed := time.Now()
		if err := syscall.Kill(info.State.Pid, syscall.SIGKILL); err != nil {
			b.Fatalf("kill %s: %v", name, err)
		}
		for time.Since(killed) < 30*time.Second {
			info, err := inspect(c, name)
			if err == nil && info.State != nil && info.State.Running && info.State.StartedAt != before {
				started, _ := time.Parse(time.RFC3339Nano, info.State.StartedAt)
				return started.Sub(killed)
			}
			time.Sleep(5 * time.Millisecond)
		}
		_, out, _ := selfheal(b, s.Env, "events", "--limit=40")
		b.Fatalf("%s not running again 30s after the crash; selfheal events:\n%s", name, out)
		return 0
	}
	// settle waits until selfheal has nothing left to do, and Prometheus
	// sees name up again, so that every crash is a new outage.
	settle := func(name string) {
		dockertest.WaitFor(b, 30*time.Second, "quiet", func() bool {
			v, ok := s.promValue(b, fmt.Sprintf(`selfheal_container_running{name=%q}`, name))
			return ok && v == "1" &&
				queryInt(b, s.DB, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued'`) == 0 &&
				queryInt(b, s.DB, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 0
		})
		time.Sleep(2 * time.Second) // the alert resolves; the next crash is a new one
	}
	// The floor: what a script that starts the container on Docker's die
	// event would do, in this process, as fast as it can.
	floorKey := dockertest.UniqueName("crash-floor")
	floor := dockertest.Run(b, dockertest.Spec{Name: dockertest.UniqueName("crash-floor"), Labels: map[string]string{floorKey: "true"}})
	fctx, stopFloor := context.WithCancel(ctx)
	defer stopFloor()
	dies := c.Events(fctx, client.EventsListOptions{Filters: make(client.Filters).Add("label", floorKey).Add("event", "die")})
	go func() {
		for m := range dies.Messages {
			_, _ = c.ContainerStart(fctx, m.Actor.ID, client.ContainerStartOptions{})
		}
	}()
	// The peer the floor stands for: a shell script that runs docker start
	// on each die event, as an operator would write it.
	scriptKey := dockertest.UniqueName("crash-script")
	script := dockertest.Run(b, dockertest.Spec{Name: dockertest.UniqueName("crash-script"), Labels: map[string]string{scriptKey: "true"}})
	background(b, nil, "sh", "-c", fmt.Sprintf(`docker events --filter label=%s --filter event=die --format '{{.Actor.ID}}' |
		while read -r id; do docker start "$id" >/dev/null; done`, scriptKey))
	time.Sleep(time.Second) // docker events is listening
	var always, fastLat, slowLat, floorLat, scriptLat []time.Duration
	var ratios, scriptRatios []float64 // fast path ÷ floor, ÷ script, crash by crash
	host := readHostCPU(b)
	for range kills {
		name := dockertest.Run(b, dockertest.Spec{Name: dockertest.UniqueName("crash-policy"), Restart: container.RestartPolicyAlways})
		dockertest.WaitFor(b, 10*time.Second, name+" running", func() bool { return dockertest.State(b, name).Running })
		always = append(always, crash(name))
		_, _ = c.ContainerRemove(ctx, name, client.ContainerRemoveOptions{Force: true})

		floorLat = append(floorLat, crash(floor))
		scriptLat = append(scriptLat, crash(script))
		fastLat = append(fastLat, crash(fast))
		last := float64(fastLat[len(fastLat)-1])
		ratios = append(ratios, last/float64(floorLat[len(floorLat)-1]))
		scriptRatios = append(scriptRatios, last/float64(scriptLat[len(scriptLat)-1]))
		settle(fast)
		slowLat = append(slowLat, crash(slow))
		settle(slow)
	}
	p50 := func(l []time.Duration) float64 {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		return ms(l[len(l)/2])
	}
	p95 := func(l []time.Duration) float64 { return ms(l[int(float64(len(l)-1)*0.95)]) }
	host.reportSince(b)
	b.ReportMetric(p50(always), "restart-always-p50-ms")
	b.ReportMetric(p95(always), "restart-always-p95-ms")
	b.ReportMetric(p50(floorLat), "start-floor-p50-ms")
	b.ReportMetric(p95(floorLat), "start-floor-p95-ms")
	b.ReportMetric(p50(scriptLat), "start-script-p50-ms")
	b.ReportMetric(p95(scriptLat), "start-script-p95-ms")
	sort.Float64s(ratios)
	sort.Float64s(scriptRatios)
	b.ReportMetric(ratios[len(ratios)/2], "fast-path-vs-floor-ratio-p50")
	b.ReportMetric(scriptRatios[len(scriptRatios)/2], "fast-path-vs-script-ratio-p50")
	b.ReportMetric(p50(fastLat), "fast-path-p50-ms")
	b.ReportMetric(p95(fastLat), "fast-path-p95-ms")
	b.ReportMetric(p50(slowLat), "slow-path-p50-ms")
	b.ReportMetric(p95(slowLat), "slow-path-p95-ms")
	if n := queryInt(b, s.DB, `SELECT count(*) FROM recovery_actions WHERE service_name = $1`, fast); n != kills {
		b.Errorf("%d actions on the fast path's container for %d crashes: not exactly once", n, kills)
	}
}

// inspect is the Docker Engine's view of a container.
func inspect(c *client.Client, name string) (container.InspectResponse, error) {
	res, err := c.ContainerInspect(context.Background(), name, client.ContainerInspectOptions{})
	return res.Container, err
}
