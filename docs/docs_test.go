// Package docs holds selfheal's documentation. Its test checks every YAML
// snippet of README.md and docs/*.md with the tool that would read it, as
// an operator pasting it would: Alertmanager's amtool, Prometheus'
// promtool, selfheal's own configuration loader.
package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/selfheal/selfheal/exporter/gpu/xid"
	"github.com/selfheal/selfheal/internal/testenv"
	_ "github.com/selfheal/selfheal/remediator/actions" // registers the action types snippets name
	"github.com/selfheal/selfheal/remediator/policy"
)

type snippet struct {
	file string
	line int
	text string
	// after is the documentation that follows, up to the next snippet of
	// YAML: where a routes test and its expected output are written.
	after string
}

var fence = regexp.MustCompile("(?ms)^```yaml\n(.*?)^```\n")

func snippets(t *testing.T) []snippet {
	t.Helper()
	files, _ := filepath.Glob("*.md")
	files = append([]string{"../README.md"}, files...)
	var out []snippet
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		ms := fence.FindAllStringSubmatchIndex(s, -1)
		for i, m := range ms {
			end := len(s)
			if i+1 < len(ms) {
				end = ms[i+1][0]
			}
			out = append(out, snippet{file: f, line: strings.Count(s[:m[0]], "\n") + 1, text: s[m[2]:m[3]], after: s[m[1]:end]})
		}
	}
	if len(out) < 8 {
		t.Fatalf("only %d YAML snippets found", len(out))
	}
	return out
}

// isXIDCatalogue: every key of the snippet is an XID action
// (--collector.gpu.xid-catalogue).
func isXIDCatalogue(top map[string]any) bool {
	for k := range top {
		if !slices.Contains(xid.Actions, xid.Action(k)) {
			return false
		}
	}
	return len(top) > 0
}

// ordinaryAlertmanager is the configuration an Alertmanager snippet is
// pasted into: a root route to people, and nothing else.
const ordinaryAlertmanager = `
route:
  receiver: operators
receivers:
  - name: operators
`

// routesTest is a documented `amtool config routes test` with the output
// the documentation says it prints.
var routesTest = regexp.MustCompile("amtool config routes test --config.file=\\S+ ((?:\\S+=\\S+ ?)+)\n# (\\S+)\n")

func TestSnippets(t *testing.T) {
	for _, sn := range snippets(t) {
		t.Run(filepath.Base(sn.file)+":"+strconv.Itoa(sn.line), func(t *testing.T) {
			var top map[string]any
			if err := yaml.Unmarshal([]byte(sn.text), &top); err != nil {
				t.Fatalf("%s:%d: not YAML: %v", sn.file, sn.line, err)
			}
			switch {
			case top["route"] != nil || top["receivers"] != nil:
				checkAlertmanager(t, sn, top)
			case top["scrape_configs"] != nil || top["rule_files"] != nil:
				checkPrometheus(t, sn)
			case isXIDCatalogue(top):
				if _, err := xid.Parse([]byte(sn.text)); err != nil {
					t.Errorf("%s:%d: XID catalogue: %v", sn.file, sn.line, err)
				}
			default:
				if _, err := policy.Parse([]byte(sn.text)); err != nil {
					t.Errorf("%s:%d: selfheal's configuration: %v", sn.file, sn.line, err)
				}
			}
		})
	}
}

// checkAlertmanager pastes the snippet into ordinaryAlertmanager — its
// receivers added, its routes under the root — and runs amtool over it:
// check-config, and the routes test the documentation shows after it.
func checkAlertmanager(t *testing.T, sn snippet, top map[string]any) {
	amtool := testenv.Tool(t, "amtool", true)
	var base map[string]any
	if err := yaml.Unmarshal([]byte(ordinaryAlertmanager), &base); err != nil {
		t.Fatal(err)
	}
	if rs, ok := top["receivers"].([]any); ok {
		base["receivers"] = append(base["receivers"].([]any), rs...)
	}
	if r, ok := top["route"].(map[string]any); ok {
		root := base["route"].(map[string]any)
		for k, v := range r {
			root[k] = v
		}
	}
	for k, v := range top {
		if k != "route" && k != "receivers" {
			base[k] = v
		}
	}
	b, err := yaml.Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "alertmanager.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(amtool, "check-config", path).CombinedOutput(); err != nil {
		t.Fatalf("%s:%d: amtool check-config: %v\n%s\n%s", sn.file, sn.line, err, out, b)
	}
	for _, m := range routesTest.FindAllStringSubmatch(sn.after, -1) {
		out, err := exec.Command(amtool, append([]string{"config", "routes", "test", "--config.file=" + path}, strings.Fields(m[1])...)...).Output()
		if err != nil || strings.TrimSpace(string(out)) != m[2] {
			t.Errorf("%s:%d: amtool config routes test %s: %q (%v), the documentation says %s\n%s", sn.file, sn.line, m[1], out, err, m[2], b)
		}
	}
	// A route to selfheal in an ordinary configuration must leave people
	// their notifications: selfheal acts, people hear of it.
	if strings.Contains(sn.text, "receiver: selfheal") && top["route"] != nil {
		out, err := exec.Command(amtool, "config", "routes", "test", "--config.file="+path,
			"category=A", "alertname=ServiceDown", "severity=critical").Output()
		if got := strings.TrimSpace(string(out)); err != nil || !strings.Contains(got, "selfheal") || !strings.Contains(got, "operators") {
			t.Errorf("%s:%d: pasted into an ordinary configuration, a category A alert goes to %q (%v): people lose it", sn.file, sn.line, got, err)
		}
	}
}

// checkPrometheus runs promtool check config over the snippet.
func checkPrometheus(t *testing.T, sn snippet) {
	promtool := testenv.Tool(t, "promtool", true)
	path := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(path, []byte(sn.text), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "config", "--syntax-only", path).CombinedOutput(); err != nil {
		t.Errorf("%s:%d: promtool check config: %v\n%s", sn.file, sn.line, err, out)
	}
}
