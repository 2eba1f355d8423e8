package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/jackc/pgx/v5"

	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
)

// fleetNodeConfig is each simulated node's configuration: a fleet node
// with one worker and the shipped defaults otherwise (heartbeat 10s, poll
// 10s, retention, reverts and critical-event checks as in production) —
// but for the storm brake (20 actions in 10 minutes per node), which the
// run's alerts over 50 nodes would engage: this measures the queue.
const fleetNodeConfig = `
node: {name: %s, fleet: true}
engine: {workers: 1, storm_brake: {max_actions: 100000}}
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart]
`

// fakeRestart stands in for Docker: it acts at once, and counts any
// request for an alert of another node than its own.
type fakeRestart struct {
	node  string
	wrong *atomic.Int64
}

func (f fakeRestart) Permit(context.Context, action.Request) error { return nil }

func (f fakeRestart) Execute(_ context.Context, req action.Request) (action.Result, error) {
	if req.Labels["node"] != f.node {
		f.wrong.Add(1)
	}
	return action.Result{}, nil
}

// BenchmarkFleet: N node engines (the real engine, in this one process,
// each with its own database role and connection pool, and a fake restart
// in place of Docker) on one durable PostgreSQL; alerts arrive at 100/s
// spread over the nodes, ingested and announced as the webhook does.
// Reported for each N in SELFHEAL_BENCH_FLEET_NODES (default 50,200,500): alert
// received → its action started by the right node (claimed, decided,
// intent written), p50/p99; and, idle, PostgreSQL's CPU and connections per
// node.
func BenchmarkFleet(b *testing.B) {
	sizes := envInts(b, "SELFHEAL_BENCH_FLEET_NODES", []int{50, 200, 500})
	seconds := envInt("SELFHEAL_BENCH_FLEET_SECONDS", 20)
	maxNodes := 0
	for _, n := range sizes {
		maxNodes = max(maxNodes, n)
	}
	settings := append(benchSettings(), "-c", fmt.Sprintf("max_connections=%d", 4*maxNodes+50))
	if statementsWanted() {
		settings = append(settings, statementSettings...)
	}
	cluster := pgtest.NewDurableCluster(b, settings...)
	fmt.Printf("\nfleet: N node engines on one PostgreSQL, %d alerts/s for %d s spread over them\n", 100, seconds)
	fmt.Printf("%-6s %-8s %-8s %-8s %-6s %-12s %-19s %-12s %-14s %-11s\n", "nodes", "p50 ms", "p99 ms", "max ms", "wrong",
		"cold p50/p99", "load PG/engines CPU", "idle PG CPU", "idle ms/s/node", "conns/node")
	for _, n := range sizes {
		r := runFleet(b, cluster, n, seconds)
		fmt.Printf("%-6d %-8.1f %-8.1f %-8.1f %-6d %-12s %-19s %-12s %-14.3f %-11.2f\n", n, r.p50, r.p99, r.max, r.wrong,
			fmt.Sprintf("%.0f/%.0f", r.coldP50, r.coldP99), fmt.Sprintf("%.0f/%.0f %%", r.loadCPU*100, r.enginesCPU*100), fmt.Sprintf("%.2f %%", r.idleCPU*100), r.idleCPU*1000/float64(n), r.conns)
		b.ReportMetric(r.p99, fmt.Sprintf("p99-ms-%dnodes", n))
	}
}

type fleetResult struct {
	p50, p99, max float64
	coldP50       float64 // the first alert of each node
	coldP99       float64
	wrong         int64
	idleCPU       float64 // seconds of PostgreSQL CPU per second
	loadCPU       float64 // the same under load
	enginesCPU    float64 // this process's (the engines', the ingest's) under load
	conns         float64 // server connections per node
}

func runFleet(b *testing.B, cluster *pgtest.Cluster, nodes, seconds int) fleetResult {
	ctx := context.Background()
	dbname := fmt.Sprintf("fleet_%d", nodes)
	admin, err := pgx.Connect(ctx, cluster.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+dbname); err != nil {
		b.Fatal(err)
	}
	// Dropped after the run: its autovacuum must not run during the next.
	defer func() {
		if _, err := admin.Exec(ctx, "DROP DATABASE "+dbname+" WITH (FORCE)"); err != nil {
			b.Error(err)
		}
	}()
	dsn := strings.Replace(cluster.URL(), "/postgres?", "/"+dbname+"?", 1)
	statements := statementsWanted()

	hook, err := store.Open(ctx, dsn, store.Options{MaxConns: 16, NodeSilentAfter: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer hook.Close()
	if _, err := hook.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close(ctx)
	if statements {
		if _, err := db.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()"); err != nil {
			b.Fatal(err)
		}
	}
	count := func(sql string) int {
		var n int
		if err := db.QueryRow(ctx, sql).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}

	// The nodes: a role, a pool and an engine each.
	runCtx, stop := context.WithCancel(ctx)
	interval := store.WakeInterval
	if d, err := time.ParseDuration(os.Getenv("SELFHEAL_BENCH_FLEET_WAKE")); err == nil {
		interval = d
	}
	waker := store.NewNodeWaker(hook, interval, func(err error) { b.Error(err) })
	go waker.Run(runCtx)
	var wg sync.WaitGroup
	var wrong atomic.Int64
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	names := make([]string, nodes)
	var stores []*store.Store
	for i := range nodes {
		names[i] = fmt.Sprintf("node-%04d", i)
		e, err := hook.Enrol(ctx, names[i], false, dsn)
		if err != nil {
			b.Fatal(err)
		}
		st, err := store.Open(ctx, e.DSN, store.NodeOptions(1, names[i]))
		if err != nil {
			b.Fatal(err)
		}
		stores = append(stores, st)
		cfg, err := policy.Parse([]byte(fmt.Sprintf(fleetNodeConfig, names[i])))
		if err != nil {
			b.Fatal(err)
		}
		eng, err := engine.New(st, cfg, map[string]action.Executor{"restart": fakeRestart{node: names[i], wrong: &wrong}}, quiet, nil)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() { eng.Run(runCtx) })
	}
	defer func() {
		stop()
		wg.Wait()
		for _, st := range stores {
			st.Close()
		}
	}()
	waitFor(b, 2*time.Minute, "every node's first heartbeat", func() bool {
		return count(`SELECT count(*) FROM nodes`) == nodes
	})
	time.Sleep(3 * time.Second) // let start-up settle

	// deliver sends n alerts at 100/s, each a delivery of its own, as the
	// webhook does (store, then wake the node), the i-th for node(i), and
	// waits until every one was acted on.
	acted := 0
	deliver := func(kind string, n int, node func(i int) string) {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var sends sync.WaitGroup
		var failed atomic.Int64
		for i := range n {
			<-tick.C
			node := node(i)
			sends.Go(func() {
				a := model.Alert{Fingerprint: fmt.Sprintf("%s%015x", kind, i), StartsAt: time.Now().UTC().Truncate(time.Millisecond), Status: "firing",
					Alertname: "ServiceDown", Labels: map[string]string{"alertname": "ServiceDown", "service": fmt.Sprintf("svc-%s%d", kind, i), "node": node},
					Remediation: "service-down", Node: node}
				res, err := hook.IngestAlerts(ctx, []model.Alert{a}, time.Minute)
				if err != nil {
					failed.Add(1)
				} else if os.Getenv("SELFHEAL_BENCH_FLEET_NOTIFY") != "0" {
					waker.Wake(res.Nodes)
				}
			})
		}
		sends.Wait()
		if n := failed.Load(); n > 0 {
			b.Fatalf("%d deliveries failed", n)
		}
		acted += n
		if !within(time.Minute, func() bool { return count(`SELECT count(*) FROM recovery_actions WHERE status = 'succeeded'`) == acted }) {
			rows, _ := db.Query(ctx, `SELECT state || '/' || COALESCE(outcome, '-') || ': ' || COALESCE(reason, ''), count(*) FROM remediation_jobs GROUP BY 1`)
			states, _ := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
				var s string
				var n int
				err := r.Scan(&s, &n)
				return fmt.Sprintf("%d × %s", n, s), err
			})
			b.Fatalf("not every alert was acted on within a minute: %s", strings.Join(states, "; "))
		}
	}

	// First, one alert for each node: its engine's connections are new,
	// and PostgreSQL loads its catalog caches for each (cold).
	deliver("c", nodes, func(i int) string { return names[i] })
	cold := latencies(b, db, "c")

	// Idle: PostgreSQL's CPU over two heartbeat intervals, and connections.
	conns := count(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'node-%'`)
	cpu0, err := cluster.CPUTime()
	if err != nil {
		b.Fatal(err)
	}
	if statements {
		if _, err := db.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
			b.Fatal(err)
		}
	}
	idle := 20 * time.Second
	time.Sleep(idle)
	cpu1, err := cluster.CPUTime()
	if err != nil {
		b.Fatal(err)
	}
	if statements {
		fmt.Printf("idle, %d nodes:\n", nodes)
		printStatements(b, db)
	}

	// Load: 100 alerts/s over the nodes, for seconds.
	total := 100 * seconds
	loadStart := time.Now()
	self0 := processCPU()
	if statements {
		if _, err := db.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
			b.Fatal(err)
		}
	}
	deliver("l", total, func(i int) string { return names[(i*7919)%nodes] })
	if statements {
		fmt.Printf("load, %d nodes:\n", nodes)
		printStatements(b, db)
	}
	cpu2, err := cluster.CPUTime()
	if err != nil {
		b.Fatal(err)
	}
	loadCPU := (cpu2 - cpu1).Seconds() / time.Since(loadStart).Seconds()
	enginesCPU := (processCPU() - self0).Seconds() / time.Since(loadStart).Seconds()
	lat := latencies(b, db, "l")
	if len(lat) != total || len(cold) != nodes {
		b.Fatalf("%d latencies for %d alerts, %d for %d nodes", len(lat), total, len(cold), nodes)
	}
	return fleetResult{
		p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], max: lat[len(lat)-1], wrong: wrong.Load(),
		enginesCPU: enginesCPU,
		coldP50:    cold[len(cold)/2], coldP99: cold[len(cold)*99/100],
		idleCPU: (cpu1 - cpu0).Seconds() / idle.Seconds(), conns: float64(conns) / float64(nodes), loadCPU: loadCPU,
	}
}

// latencies are, sorted, per alert whose fingerprint starts with kind,
// the milliseconds from its receipt to the start of its action, by the
// database's clock.
func latencies(b *testing.B, db *pgx.Conn, kind string) []float64 {
	rows, err := db.Query(context.Background(), `
		SELECT EXTRACT(EPOCH FROM a.started_at - o.first_received_at) * 1000
		FROM recovery_actions a JOIN remediation_jobs j ON j.id = a.job_id JOIN alert_occurrences o ON o.id = j.occurrence_id
		WHERE o.fingerprint LIKE $1 || '%' ORDER BY 1`, kind)
	if err != nil {
		b.Fatal(err)
	}
	lat, err := pgx.CollectRows(rows, pgx.RowTo[float64])
	if err != nil {
		b.Fatal(err)
	}
	return lat
}

func waitFor(b *testing.B, d time.Duration, what string, ok func() bool) {
	if !within(d, ok) {
		b.Fatalf("timed out after %s waiting for %s", d, what)
	}
}

func within(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

// printStatements prints where PostgreSQL's time went, by statement
// (SELFHEAL_BENCH_STATEMENTS=1).
func printStatements(b *testing.B, db *pgx.Conn) {
	rows, err := db.Query(context.Background(), `
		SELECT round(sum(total_exec_time + total_plan_time)::numeric, 0), sum(calls)::bigint,
		       round((sum(total_exec_time + total_plan_time) / greatest(sum(calls), 1))::numeric, 3),
		       round(sum(wal_bytes) / 1024)::bigint, sum(wal_fpi)::bigint,
		       left(regexp_replace(query, '\s+', ' ', 'g'), 110)
		FROM pg_stat_statements GROUP BY query ORDER BY 1 DESC LIMIT 15`)
	if err != nil {
		b.Fatal(err)
	}
	defer rows.Close()
	fmt.Println("total ms   calls    ms/call  WAL kB   WAL FPIs statement")
	for rows.Next() {
		var total, per float64
		var calls, walKB, fpi int64
		var q string
		if err := rows.Scan(&total, &calls, &per, &walKB, &fpi, &q); err != nil {
			b.Fatal(err)
		}
		fmt.Printf("%-10.0f %-8d %-8.3f %-8d %-8d %s\n", total, calls, per, walKB, fpi, q)
	}
	if err := rows.Err(); err != nil {
		b.Fatal(err)
	}
}

// processCPU is the processor time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostCPU is a reading of the machine's CPU time (/proc/stat's first
// line), to say how busy the host was over a measurement and how much time
// the hypervisor gave to other guests (steal): a run whose figures moved
// with the host's own load can then be told from one that moved with the
// code.
type hostCPU struct{ busy, idle, steal uint64 }

func readHostCPU(b *testing.B) hostCPU {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("unexpected /proc/stat: %q", line)
	}
	var v [8]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			b.Fatalf("/proc/stat: %v", err)
		}
	}
	return hostCPU{busy: v[0] + v[1] + v[2] + v[5] + v[6], idle: v[3] + v[4], steal: v[7]}
}

// reportSince reports the host's busy and steal shares of its CPU time
// since c was read.
func (c hostCPU) reportSince(b *testing.B) {
	now := readHostCPU(b)
	busy, idle, steal := now.busy-c.busy, now.idle-c.idle, now.steal-c.steal
	total := float64(busy + idle + steal)
	if total == 0 {
		return
	}
	b.ReportMetric(100*float64(busy)/total, "host-busy-%")
	b.ReportMetric(100*float64(steal)/total, "host-steal-%")
}
