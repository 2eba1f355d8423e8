// Package grafana holds selfheal's dashboards and their provisioning. These
// tests run every panel's query: the SQL ones against the migrated schema
// on a real PostgreSQL (as the read-only dashboard role), the PromQL ones
// against a real Prometheus scraping selfheal.
package grafana

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
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
	"go.yaml.in/yaml/v3"

	"github.com/selfheal/selfheal/exporter"
	"github.com/selfheal/selfheal/exporter/system"
	"github.com/selfheal/selfheal/internal/dashsql"
	"github.com/selfheal/selfheal/internal/pgtest"
	"github.com/selfheal/selfheal/internal/testenv"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/server"
	"github.com/selfheal/selfheal/remediator/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, pgtest.Template(store.MigrateURL))) }

type target struct {
	RefID      string `json:"refId"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	RawSQL string `json:"rawSql"`
	Expr   string `json:"expr"`
}

type panel struct {
	ID         int    `json:"id"`
	Title      string `json:"title"`
	Datasource struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []target `json:"targets"`
}

type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
			// A query variable's query is an object; a data source
			// variable's, the plugin type.
			Query   json.RawMessage `json:"query"`
			Current struct {
				Value string `json:"value"`
			} `json:"current"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

func dashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, _ := filepath.Glob("dashboards/*.json")
	if len(files) != 2 {
		t.Fatalf("dashboards: %v", files)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s is not valid JSON: %v", f, err)
		}
		out[f] = d
	}
	return out
}

// panelQuery is one panel query, with where it stands.
type panelQuery struct {
	file, panel string
	target
}

// panelQueries returns every panel query of every dashboard.
func panelQueries(t *testing.T) []panelQuery {
	t.Helper()
	var qs []panelQuery
	for f, d := range dashboards(t) {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				qs = append(qs, panelQuery{f, p.Title, tg})
			}
		}
	}
	return qs
}

// provisionedUIDs reads the data source UIDs Grafana is provisioned with.
func provisionedUIDs(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("provisioning/datasources/selfheal.yml")
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Datasources []struct {
			UID  string `yaml:"uid"`
			Type string `yaml:"type"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	uids := map[string]string{}
	for _, d := range p.Datasources {
		uids[d.UID] = d.Type
	}
	return uids
}

// TestDashboardsAreValid: unique uids and panel ids, a query in every
// panel, and data sources only through the dashboard's own inputs, so that
// it imports into any Grafana: every data source reference is ${DS_…},
// declared in __inputs (what the import dialog asks for) and as a data
// source variable (what a provisioned dashboard resolves it with) whose
// default is the data source the repository provisions.
func TestDashboardsAreValid(t *testing.T) {
	t.Parallel()
	uids := provisionedUIDs(t)
	seenUID := map[string]bool{}
	for f, d := range dashboards(t) {
		if d.UID == "" || seenUID[d.UID] {
			t.Errorf("%s: uid %q missing or not unique", f, d.UID)
		}
		seenUID[d.UID] = true
		// plugin of each input, and the provisioned default of each
		// data source variable.
		inputs, defaults := map[string]string{}, map[string]string{}
		for _, in := range d.Inputs {
			if in.Type == "datasource" {
				inputs[in.Name] = in.PluginID
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "datasource" {
				continue
			}
			var plugin string
			_ = json.Unmarshal(v.Query, &plugin)
			if inputs[v.Name] != plugin {
				t.Errorf("%s: data source variable %s (%s) has no __inputs entry of that plugin", f, v.Name, plugin)
			}
			if uids[v.Current.Value] != plugin {
				t.Errorf("%s: data source variable %s defaults to %q, not a provisioned %s data source", f, v.Name, v.Current.Value, plugin)
			}
			defaults[v.Name] = plugin
		}
		ref := func(where, typ, uid string) {
			name, ok := strings.CutPrefix(uid, "${")
			name, closed := strings.CutSuffix(name, "}")
			if !ok || !closed || defaults[name] == "" {
				t.Errorf("%s: %s names data source %q: only ${DS_…} of a data source variable lets the dashboard be imported", f, where, uid)
			} else if typ != "" && defaults[name] != typ {
				t.Errorf("%s: %s is of type %s but names %s, a %s data source", f, where, typ, uid, defaults[name])
			}
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] || p.ID == 0 {
				t.Errorf("%s: panel id %d missing or repeated (%s)", f, p.ID, p.Title)
			}
			ids[p.ID] = true
			ref("panel "+p.Title, "", p.Datasource.UID)
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
			for _, tg := range p.Targets {
				ref("panel "+p.Title+" query "+tg.RefID, tg.Datasource.Type, tg.Datasource.UID)
			}
		}
		for _, v := range d.Templating.List {
			if v.Type != "datasource" {
				ref("variable "+v.Name, "", v.Datasource.UID)
			}
		}
	}
}

// sample fills the schema with a little of everything the panels show.
const sample = `
INSERT INTO alert_occurrences (fingerprint, starts_at, alertname, status, labels, remediation, ends_at, resolved_at)
VALUES ('f1', now() - interval '1 hour', 'ServiceDown', 'resolved', '{"service":"llm"}', 'service-down', now() - interval '59 minutes', now()),
       ('f2', now() - interval '10 minutes', 'ServiceDown', 'firing', '{"service":"n8n"}', 'service-down', NULL, NULL);
INSERT INTO remediation_jobs (occurrence_id, remediation, step, state, outcome, target, finished_at)
SELECT id, 'service-down', 1, 'done', 'succeeded', 'llm', now() FROM alert_occurrences WHERE fingerprint = 'f1';
INSERT INTO recovery_actions (service_name, action_type, status, started_at, completed_at, remediation, category, attempt, details, cooldown_until)
VALUES ('llm', 'restart', 'succeeded', now() - interval '2 minutes', now() - interval '1 minute', 'service-down', 'A', 1, '{"cooldown_seconds": 600}', now() + interval '8 minutes'),
       ('n8n', 'restart', 'failed', now() - interval '5 minutes', now() - interval '4 minutes', 'memory-high', 'B', 1, '{}', NULL),
       ('0', 'gpu_throttle', 'dry_run', now() - interval '3 minutes', now() - interval '3 minutes', 'gpu-hot', 'B', 1, '{"cooldown_seconds": 300}', now() + interval '2 minutes'),
       ('llm', 'stop_start', 'succeeded', now() - interval '2 days', now() - interval '2 days', 'service-down', 'A', 2, '{}', NULL);
INSERT INTO service_failures (service_name, failure_type, status, remediation) VALUES ('n8n', 'restart', 'failed', 'memory-high');
INSERT INTO self_healing_events (severity, event_type, service_name, remediation, message)
VALUES ('INFO', 'decision', 'llm', 'service-down', 'running restart (attempt 1)'),
       ('CRITICAL', 'escalation', 'n8n', 'service-down', '3 failures within 10m (limit 3): escalating to critical-recovery');
INSERT INTO escalations (service_name, remediation, escalate_to, reason) VALUES ('n8n', 'service-down', 'critical-recovery', '3 failures');
INSERT INTO reboot_events (reason, status, pre_state, post_state, validated_at)
VALUES ('disk full', 'validated', '{"services":["llm","n8n"]}', '{"services":["llm","n8n"],"missing":[]}', now());
`

// newestFirst are the table panels whose rows must come newest first.
var newestFirst = map[string]bool{"Recent actions": true, "Events": true}

func TestSQLPanelsReturnRows(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	st, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sample); err != nil {
		t.Fatal(err)
	}
	// Its queries are small windows: no parallel workers (their start alone
	// costs more than the query; migration 0013).
	var settings string
	if err := conn.QueryRow(ctx, `SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting s
		JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = 'selfheal_grafana'`).Scan(&settings); err != nil ||
		!strings.Contains(settings, "max_parallel_workers_per_gather=0") {
		t.Errorf("selfheal_grafana's settings %q (%v)", settings, err)
	}
	// Grafana logs in as the read-only role: its grants must suffice.
	if _, err := conn.Exec(ctx, `SET ROLE selfheal_grafana`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM self_healing_events`); err == nil {
		t.Fatal("the dashboard role can delete rows")
	}
	queries, err := dashsql.Queries("dashboards")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range queries {
		n++
		sql, err := dashsql.Expand(q.SQL, "1 day")
		if err != nil {
			t.Errorf("%s: panel %q: %v", q.File, q.Panel, err)
			continue
		}
		rows, err := conn.Query(ctx, sql)
		if err != nil {
			t.Errorf("%s: panel %q: %v", q.File, q.Panel, err)
			continue
		}
		count := 0
		var last time.Time
		for rows.Next() {
			count++
			// Table panels of recent rows list them newest first; "Recent
			// actions" takes its order from its view, so that the LIMIT
			// reaches the view's index scan (BenchmarkHistory).
			if newestFirst[q.Panel] {
				v, err := rows.Values()
				if err != nil {
					t.Fatal(err)
				}
				at, ok := v[0].(time.Time)
				if !ok {
					t.Fatalf("panel %q: first column is %T, not a time", q.Panel, v[0])
				}
				if count > 1 && at.After(last) {
					t.Errorf("%s: panel %q: %s after %s: not newest first", q.File, q.Panel, at, last)
				}
				last = at
			}
		}
		if err := rows.Err(); err != nil {
			t.Errorf("%s: panel %q: %v", q.File, q.Panel, err)
		}
		if count == 0 {
			t.Errorf("%s: panel %q returned no rows over the sample", q.File, q.Panel)
		}
	}
	if n < 10 {
		t.Fatalf("only %d SQL queries found", n)
	}
}

func freeListener(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// exporterFlags enables the system and docker collectors.
func exporterFlags() *exporter.Flags {
	on, off := true, false
	s := func(v string) *string { return &v }
	return &exporter.Flags{
		Enabled:   map[string]*bool{exporter.System: &on, exporter.GPU: &off, exporter.Docker: &on, exporter.Probe: &off},
		DockerAll: &off, ProcPath: s("/proc"), SysPath: s("/sys"), RootfsPath: s("/"),
		FSTypesExclude: s(system.DefaultFSTypesExclude), MountPointsExclude: s(system.DefaultMountPointsExclude), NVMLLibrary: s(""),
	}
}

func TestPromQLPanelsRun(t *testing.T) {
	t.Parallel()
	prometheus := testenv.Tool(t, "prometheus", true)
	dsn := pgtest.DSN(t)
	cfg, err := policy.Parse([]byte("webhook: {allow_unauthenticated: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DatabaseURL = dsn
	l := freeListener(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- server.Run(ctx, server.Options{Config: cfg, Listener: l, Logger: slog.New(slog.DiscardHandler), ExporterFlags: exporterFlags()})
	}()
	defer func() { cancel(); <-done }()

	dir := t.TempDir()
	promAddr := testenv.FreeAddr(t)
	promFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(promFile, []byte(fmt.Sprintf(`
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: selfheal
    static_configs: [{targets: ['%s']}]
`, l.Addr())), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(prometheus, "--config.file="+promFile, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() }()

	query := func(expr string) (int, string) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(expr))
		if err != nil {
			return -1, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
			Data   struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
			return -1, r.Error + string(body)
		}
		return len(r.Data.Result), ""
	}
	// Wait for enough samples for rate() over a few scrapes.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n, _ := query(`count_over_time(selfheal_load1[1m])`); n > 0 {
			if v, _ := query(`count_over_time(selfheal_load1[1m]) >= 4`); v > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("Prometheus did not scrape selfheal")
		}
		time.Sleep(500 * time.Millisecond)
	}
	vars := strings.NewReplacer(`$instance`, `.*`, `$gpu`, `.*`, `$__rate_interval`, `4s`, `$__interval`, `1s`)
	mustHaveData := map[string]bool{"CPU busy": true, "Memory used": true, "Disk used": true, "Load": true,
		"selfheal: webhook": true, "selfheal: collectors": true}
	n := 0
	for _, q := range panelQueries(t) {
		if q.Expr == "" {
			continue
		}
		n++
		series, errMsg := query(vars.Replace(q.Expr))
		if series < 0 {
			t.Errorf("%s: panel %q query %s: %s", q.file, q.panel, q.RefID, errMsg)
		} else if mustHaveData[q.panel] && series == 0 {
			t.Errorf("%s: panel %q query %s returned no series", q.file, q.panel, q.RefID)
		}
	}
	for f, d := range dashboards(t) {
		for _, v := range d.Templating.List {
			if v.Type == "datasource" {
				continue
			}
			var vq struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &vq); err != nil {
				t.Fatalf("%s: variable %s: %v", f, v.Name, err)
			}
			q := strings.TrimSuffix(strings.TrimPrefix(vq.Query, "label_values("), ")")
			metric := strings.TrimSpace(q[:strings.LastIndex(q, ",")])
			if series, errMsg := query(vars.Replace(metric)); series < 0 {
				t.Errorf("%s: variable %s: %s", f, v.Name, errMsg)
			}
		}
	}
	if n < 15 {
		t.Fatalf("only %d PromQL queries found", n)
	}
}

// TestThresholdsMatchTheRules: the threshold lines on the host and GPU
// panels are the alert rules' own values, read from alerting/rules.
func TestThresholdsMatchTheRules(t *testing.T) {
	t.Parallel()
	ruleValue := map[string]string{}
	files, _ := filepath.Glob("../alerting/rules/*.yml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Groups []struct {
				Rules []struct {
					Alert string `yaml:"alert"`
					Expr  string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		for _, g := range doc.Groups {
			for _, r := range g.Rules {
				// The rule's constant: at the end, or, in the GPU
				// temperature rules (a margin to NVML's slowdown threshold),
				// the fallback for a GPU without one — the H100's figures.
				if m := regexp.MustCompile(`> ([0-9.]+)(?:\s*$|\s+unless )`).FindStringSubmatch(r.Expr); m != nil {
					v, err := strconv.ParseFloat(m[1], 64)
					if err != nil {
						t.Fatal(err)
					}
					ruleValue[r.Alert] = fmt.Sprint(v)
				}
			}
		}
	}
	b, err := os.ReadFile("dashboards/host-gpu.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title       string `json:"title"`
			FieldConfig struct {
				Defaults struct {
					Thresholds struct {
						Steps []struct {
							Value *float64 `json:"value"`
						} `json:"steps"`
					} `json:"thresholds"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	steps := map[string][]string{}
	for _, p := range d.Panels {
		for _, s := range p.FieldConfig.Defaults.Thresholds.Steps {
			if s.Value != nil {
				steps[p.Title] = append(steps[p.Title], fmt.Sprint(*s.Value))
			}
		}
	}
	for panel, alerts := range map[string][]string{
		"CPU busy":        {"HostCPUHigh"},
		"Memory used":     {"HostMemoryHigh"},
		"Disk used":       {"DiskSpaceWarning", "DiskSpaceCleanup", "DiskSpaceCritical", "DiskSpaceExhausted"},
		"GPU utilisation": {"GPUUtilizationHigh"},
		"GPU temperature": {"GPUTemperatureHigh", "GPUTemperatureCritical"},
	} {
		var want []string
		for _, a := range alerts {
			if ruleValue[a] == "" {
				t.Fatalf("no threshold found in the rule %s", a)
			}
			want = append(want, ruleValue[a])
		}
		if strings.Join(steps[panel], " ") != strings.Join(want, " ") {
			t.Errorf("panel %q draws thresholds %v; the rules %v say %v", panel, steps[panel], alerts, want)
		}
	}
}
