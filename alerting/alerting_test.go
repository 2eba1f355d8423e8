// Package alerting holds selfheal's Prometheus rules, their promtool tests
// and the example Alertmanager configuration. These tests run the real
// promtool, amtool and Alertmanager over them.
package alerting

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/pkg/labels"
	"go.yaml.in/yaml/v3"

	"github.com/selfheal/selfheal/internal/testenv"
	_ "github.com/selfheal/selfheal/remediator/actions" // registers the action types the example configuration names
	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/simulate"
)

func tool(t *testing.T, name string) string {
	t.Helper()
	return testenv.Tool(t, name, true)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(tool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func globbed(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("no files match %s", pattern)
	}
	return files
}

func TestRulesAreValid(t *testing.T) {
	run(t, "promtool", append([]string{"check", "rules"}, globbed(t, "rules/*.yml")...)...)
}

func TestRuleUnitTests(t *testing.T) {
	run(t, "promtool", append([]string{"test", "rules"}, globbed(t, "tests/*.yml")...)...)
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// alerts reads every alerting rule in rules/.
func alerts(t *testing.T) []rule {
	t.Helper()
	var all []rule
	for _, f := range globbed(t, "rules/*.yml") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Groups []struct {
				Rules []rule `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range doc.Groups {
			all = append(all, g.Rules...)
		}
	}
	return all
}

// TestEveryAlertIsComplete: labels severity and category, the three
// annotations, a runbook section that exists, a promtool test, and a
// comment explaining its for:.
func TestEveryAlertIsComplete(t *testing.T) {
	runbooks, err := os.ReadFile("../docs/runbooks.md")
	if err != nil {
		t.Fatal(err)
	}
	var tests strings.Builder
	for _, f := range globbed(t, "tests/*.yml") {
		b, _ := os.ReadFile(f)
		tests.Write(b)
	}
	var sources strings.Builder
	for _, f := range globbed(t, "rules/*.yml") {
		b, _ := os.ReadFile(f)
		sources.Write(b)
	}
	seen := map[string]bool{}
	for _, r := range alerts(t) {
		if seen[r.Alert] {
			t.Errorf("%s is defined twice", r.Alert)
		}
		seen[r.Alert] = true
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q", r.Alert, s)
		}
		if c := r.Labels["category"]; !regexp.MustCompile(`^(A|B|C|D|notify)$`).MatchString(c) {
			t.Errorf("%s: category %q", r.Alert, c)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if r.Annotations[a] == "" {
				t.Errorf("%s: no %s", r.Alert, a)
			}
		}
		anchor := strings.ToLower(r.Alert)
		if r.Annotations["runbook_url"] != "https://github.com/selfheal/selfheal/blob/main/docs/runbooks.md#"+anchor {
			t.Errorf("%s: runbook_url %q", r.Alert, r.Annotations["runbook_url"])
		}
		if !strings.Contains(string(runbooks), "\n## "+r.Alert+"\n") {
			t.Errorf("%s: no section in docs/runbooks.md", r.Alert)
		}
		if !strings.Contains(tests.String(), "alertname: "+r.Alert+"\n") {
			t.Errorf("%s: no promtool test", r.Alert)
		}
		if r.For == "" {
			t.Errorf("%s: no for: (write for: 0s to say it is meant)", r.Alert)
		}
		// The comment above the rule explains the for: duration.
		if !regexp.MustCompile(`# for: ` + regexp.QuoteMeta(r.For) + ` —[^\n]*\n(?:\s*#[^\n]*\n)*\s*- alert: ` + r.Alert + `\n`).MatchString(sources.String()) {
			t.Errorf("%s: no comment saying why for: %s", r.Alert, r.For)
		}
	}
	// Every trigger of the A–D table (docs/design.md) that Prometheus can see.
	for _, want := range []string{"ServiceDown", "ContainerUnhealthy", "HostCPUHigh", "HostMemoryHigh", "GPUUtilizationHigh",
		"GPUTemperatureHigh", "GPUTemperatureCritical", "DiskSpaceWarning", "DiskSpaceCleanup", "DiskSpaceCritical",
		"DiskSpaceExhausted", "DatabaseDown", "ObjectStoreUnhealthy", "SelfhealExporterDown", "DiskWillFillIn24Hours",
		"GPUXidErrors", "GPUXidApplicationError", "GPUXidResetRequired", "GPUUncorrectableECCErrors", "GPUHardwareSlowdown"} {
		if !seen[want] {
			t.Errorf("no %s alert", want)
		}
	}
}

var alertmanagerConfigs = []string{"alertmanager.yml", "../deploy/local/alertmanager.yml"}

func TestAlertmanagerConfigs(t *testing.T) {
	for _, f := range alertmanagerConfigs {
		run(t, "amtool", "check-config", f)
	}
}

func TestRoutes(t *testing.T) {
	for _, f := range alertmanagerConfigs {
		for _, tc := range []struct {
			labels []string
			want   string
		}{
			{[]string{"alertname=ServiceDown", "category=A", "severity=critical"}, "selfheal,operators"},
			{[]string{"alertname=HostMemoryHigh", "category=B", "severity=warning"}, "selfheal,operators"},
			{[]string{"alertname=DiskSpaceCritical", "category=C", "severity=critical"}, "selfheal,operators"},
			{[]string{"alertname=DiskSpaceExhausted", "category=D", "severity=critical"}, "selfheal,operators"},
			{[]string{"alertname=DiskSpaceWarning", "category=notify", "severity=warning"}, "operators"},
			{[]string{"alertname=SelfhealExporterDown", "category=notify", "severity=critical"}, "operators"},
			// selfheal's hand-off: to people only, never back to selfheal.
			{[]string{"alertname=SelfhealEscalated", "category=A", "severity=critical", "source=selfheal"}, "operators"},
		} {
			args := append([]string{"config", "routes", "test", "--config.file=" + f, "--verify.receivers=" + tc.want}, tc.labels...)
			out, err := exec.Command(tool(t, "amtool"), args...).CombinedOutput()
			if err != nil {
				t.Errorf("%s: %v routes to %s, want %s", f, tc.labels, strings.TrimSpace(lastLine(string(out))), tc.want)
			}
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[0]
}

// TestNothingSelfhealActsOnIsInhibited runs the real Alertmanager with the
// example configuration (webhook pointed at a recorder, group_wait 0s):
// with the disk past 97 % (D) and a critical recovery (C) firing on a host,
// the smaller remediations there — the disk cleanups, the B actions — still
// reach selfheal. Inhibition is global in Alertmanager; with the reboot off
// by default, muting the cleanup would leave the disk full.
func TestNothingSelfhealActsOnIsInhibited(t *testing.T) {
	bin := tool(t, "prometheus-alertmanager")
	var mu sync.Mutex
	received := map[string]bool{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer t0ken" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		var m struct {
			Alerts []struct {
				Status string            `json:"status"`
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		}
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		mu.Lock()
		for _, a := range m.Alerts {
			if a.Status == "firing" {
				received[a.Labels["alertname"]+"@"+a.Labels["instance"]] = true
			}
		}
		mu.Unlock()
	}))
	defer hook.Close()

	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("alertmanager.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(
		"http://localhost:9595/api/v1/webhook", hook.URL,
		"/etc/alertmanager/selfheal-token", tokenFile,
		"group_wait: 5s", "group_wait: 0s",
	).Replace(string(raw))
	if err := os.WriteFile(filepath.Join(dir, "am.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "am.yml"), "--storage.path="+dir,
		"--web.listen-address="+addr, "--cluster.listen-address=")
	logs, _ := os.Create(filepath.Join(dir, "am.log"))
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() }()
	amURL := "http://" + addr
	testenv.WaitFor(t, 15*time.Second, "alertmanager ready", func() bool {
		resp, err := http.Get(amURL + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})

	send := func(alertname, category, instance string) {
		t.Helper()
		a := simulate.Alert{
			Labels:   map[string]string{"alertname": alertname, "category": category, "instance": instance, "severity": "critical"},
			StartsAt: time.Now().Add(-time.Minute),
		}
		if err := simulate.PostAlertmanager(context.Background(), http.DefaultClient, amURL, a, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// The bigger alerts first, so they are active when the smaller arrive.
	send("DiskSpaceExhausted", "D", "edge-01")
	send("DiskSpaceCritical", "C", "edge-02")
	testenv.WaitFor(t, 10*time.Second, "D and C delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return received["DiskSpaceExhausted@edge-01"] && received["DiskSpaceCritical@edge-02"]
	})
	send("DiskSpaceCritical", "C", "edge-01")
	send("DiskSpaceCleanup", "C", "edge-01")
	send("HostMemoryHigh", "B", "edge-01")
	send("GPUTemperatureCritical", "B", "edge-02")
	send("HostMemoryHigh", "B", "edge-02")
	want := []string{"DiskSpaceCleanup@edge-01", "DiskSpaceCritical@edge-01", "DiskSpaceCritical@edge-02",
		"DiskSpaceExhausted@edge-01", "GPUTemperatureCritical@edge-02", "HostMemoryHigh@edge-01", "HostMemoryHigh@edge-02"}
	testenv.WaitFor(t, 15*time.Second, "every alert delivered to selfheal", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range want {
			if !received[w] {
				return false
			}
		}
		return true
	})
}

// TestNoInhibitRuleTargetsRemediations checks every shipped Alertmanager
// configuration against every shipped rule: no inhibit rule's target
// matchers may match an alert selfheal acts on (category A–D).
func TestNoInhibitRuleTargetsRemediations(t *testing.T) {
	var acted []map[string]string
	for _, r := range alerts(t) {
		if strings.Contains("ABCD", r.Labels["category"]) {
			l := map[string]string{"alertname": r.Alert}
			for k, v := range r.Labels {
				l[k] = v
			}
			acted = append(acted, l)
		}
	}
	if len(acted) == 0 {
		t.Fatal("no rule selfheal acts on")
	}
	for _, f := range []string{"alertmanager.yml", "../deploy/local/alertmanager.yml", "../deploy/compose/alertmanager.yml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			InhibitRules []struct {
				TargetMatchers []string `yaml:"target_matchers"`
			} `yaml:"inhibit_rules"`
		}
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for i, r := range cfg.InhibitRules {
			var ms labels.Matchers
			for _, m := range r.TargetMatchers {
				parsed, err := labels.ParseMatchers(m)
				if err != nil {
					t.Fatalf("%s: inhibit_rules[%d]: %v", f, i, err)
				}
				ms = append(ms, parsed...)
			}
			for _, a := range acted {
				if matchesAll(ms, a) {
					t.Errorf("%s: inhibit_rules[%d] can mute %s, which selfheal acts on", f, i, a["alertname"])
				}
			}
		}
	}
}

func matchesAll(ms labels.Matchers, l map[string]string) bool {
	for _, m := range ms {
		if !m.Matches(l[m.Name]) {
			return false
		}
	}
	return true
}

// TestExampleConfigCoversEveryAlert: deploy/selfheal.yml is valid, and
// each alert selfheal acts on (category A–D) is handled by a remediation of
// its own category, the alerts for people (notify) reach none, only the
// critical recovery (the seed's C triggers) and the GPU ladder (an XID
// that needs a reset, uncorrectable ECC errors) handle several alerts —
// one target each, so one action per cooldown whichever alert asked —
// and every other remediation is reached by escalation.
func TestExampleConfigCoversEveryAlert(t *testing.T) {
	cfg, err := policy.Load("../deploy/selfheal.yml")
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]string{}
	internal := []rule{{Alert: engine.CriticalEventsAlert, Labels: map[string]string{"category": "D", "severity": "critical"}}}
	for _, r := range append(alerts(t), internal...) {
		labels := map[string]string{"alertname": r.Alert, "service": "llm-service", "gpu": "0", "mountpoint": "/", "instance": "edge-01:9595"}
		for k, v := range r.Labels {
			labels[k] = v
		}
		rem := cfg.Match(labels)
		if r.Labels["category"] == "notify" {
			if rem != nil {
				t.Errorf("%s is for people, but remediation %s matches it", r.Alert, rem.Name)
			}
			continue
		}
		if rem == nil {
			t.Errorf("no remediation for %s", r.Alert)
			continue
		}
		if rem.Category != r.Labels["category"] {
			t.Errorf("%s (category %s) is handled by %s of category %s", r.Alert, r.Labels["category"], rem.Name, rem.Category)
		}
		if other, dup := used[rem.Name]; dup && rem.Name != "critical-recovery" && rem.Name != "gpu-recovery" {
			t.Errorf("remediation %s handles both %s and %s", rem.Name, other, r.Alert)
		}
		used[rem.Name] = r.Alert
		if target, err := rem.RenderTarget(policy.TemplateData{Labels: labels}); err != nil || target == "" {
			t.Errorf("%s: target %q, %v", rem.Name, target, err)
		}
	}
	escalated := map[string]bool{}
	for _, r := range cfg.Remediations {
		escalated[r.EscalateTo] = true
	}
	categories := map[string]bool{}
	for _, r := range cfg.Remediations {
		categories[r.Category] = true
		if used[r.Name] == "" && !escalated[r.Name] {
			t.Errorf("remediation %s matches no alert and no remediation escalates to it", r.Name)
		}
	}
	if len(categories) != 4 {
		t.Errorf("the example covers categories %v, want A, B, C and D", categories)
	}
	for _, a := range []string{"DatabaseDown", "ObjectStoreUnhealthy", "DiskSpaceCritical"} {
		if r := cfg.Match(map[string]string{"alertname": a}); r == nil || r.Name != "critical-recovery" || !r.IsSequence() {
			t.Errorf("%s does not start the critical recovery sequence", a)
		}
	}
	// The A → C → D chain.
	if sd := cfg.Remediation("service-down"); sd == nil || sd.EscalateTo != "critical-recovery" ||
		cfg.Remediation("critical-recovery").EscalateTo != "reboot" {
		t.Error("the example does not escalate service-down → critical-recovery → reboot")
	}
}
