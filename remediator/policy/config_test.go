package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/actions" // registers the action types
)

func wait(a Action) time.Duration { return a.Params.(*actions.StopStartParams).Wait.D() }

func TestLoadGood(t *testing.T) {
	cfg, err := Load("testdata/good.yml")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Names(), ","); got != "service-down,memory-pressure,critical-recovery" {
		t.Fatalf("names = %s", got)
	}
	sd := cfg.Remediation("service-down")
	if len(sd.Steps) != 2 || sd.Steps[0].Type != "restart" || sd.Steps[1].Type != "stop_start" || wait(sd.Steps[1]) != 5*time.Second {
		t.Errorf("ladder = %+v", sd.Steps)
	}
	if sd.Cooldown.D() != 0 {
		t.Errorf("category A has no default cooldown, got %s", sd.Cooldown)
	}
	mp := cfg.Remediation("memory-pressure")
	if mp.Cooldown.D() != DefaultCooldownB {
		t.Errorf("category B default cooldown = %s", mp.Cooldown)
	}
	if len(mp.Steps) != 1 || mp.Steps[0].Type != "restart" {
		t.Errorf("action becomes the single step: %+v", mp.Steps)
	}
	cr := cfg.Remediation("critical-recovery")
	if wait(cr.Steps[0]) != actions.DefaultStopStartWait {
		t.Errorf("stop_start default wait = %s", wait(cr.Steps[0]))
	}
	if !cfg.IsDryRun(cr) || cfg.IsDryRun(sd) {
		t.Error("per-remediation dry_run")
	}
	cfg.DryRun = true
	if !cfg.IsDryRun(sd) {
		t.Error("global dry_run wins")
	}
	if cfg.Webhook.MaxBodyBytes != 65536 || cfg.Webhook.PersistTimeout.D() != DefaultPersistTimeout {
		t.Errorf("webhook = %+v", cfg.Webhook)
	}
	if cfg.Targets.Docker.Host != DefaultDockerHost {
		t.Errorf("docker host default = %q", cfg.Targets.Docker.Host)
	}
}

func TestMatchAndTarget(t *testing.T) {
	cfg, err := Load("testdata/good.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		labels map[string]string
		want   string
		target string
	}{
		{map[string]string{"alertname": "ServiceDown", "service": "llm-service"}, "service-down", "llm-service"},
		{map[string]string{"alertname": "HostMemoryHigh", "severity": "critical"}, "memory-pressure", "n8n"},
		{map[string]string{"alertname": "HostMemoryHigh", "severity": "info"}, "", ""},
		{map[string]string{"alertname": "Other"}, "", ""},
	} {
		r := cfg.Match(tc.labels)
		if tc.want == "" {
			if r != nil {
				t.Errorf("%v matched %s, want none", tc.labels, r.Name)
			}
			continue
		}
		if r == nil || r.Name != tc.want {
			t.Errorf("%v matched %v, want %s", tc.labels, r, tc.want)
			continue
		}
		got, err := r.RenderTarget(TemplateData{Labels: tc.labels})
		if err != nil || got != tc.target {
			t.Errorf("target = %q, %v; want %q", got, err, tc.target)
		}
	}
	_, err = cfg.Remediation("service-down").RenderTarget(TemplateData{Labels: map[string]string{"alertname": "ServiceDown"}})
	if err == nil || err.Error() != `target template "{{ .Labels.service }}" rendered empty for this alert` {
		t.Errorf("missing label: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml string
		want string
	}{
		"unknown top-level key": {
			"databse_url: x\n",
			`line 1: unknown field "databse_url" in the top level`,
		},
		"unknown key in a remediation names it": {
			"remediations:\n  - name: a\n    match: ['x=\"y\"']\n    category: A\n    target: t\n    steps: [restart]\n  - name: b\n    match: ['x=\"y\"']\n    colldown: 5m\n",
			`line 9: remediation "b": unknown field "colldown" in remediation`,
		},
		"bad duration": {
			"remediations:\n  - name: a\n    cooldown: 5x\n",
			`line 3: remediation "a": cannot use str "5x" as a duration (like 30s, 5m, 1h)`,
		},
		"unknown key in an action": {
			"remediations:\n  - name: a\n    action: {type: restart, timout: 3s}\n",
			`line 3: remediation "a": unknown field "timout" in action`,
		},
		"validation problems, all of them": {
			`remediations:
  - name: a
    match: ['alertname=~"(']
    category: E
    target: '{{ .Labelz.x }}'
    steps: [reboot_now]
    failure_window: 2h
    escalate_to: nowhere
  - name: a
    match: []
    category: B
    target: x
    action: {type: restart}
`,
			// Every problem, each with its line, in the file's order (the
			// second "a" is told from the first by its line).
			`line 3: remediation "a": match: "alertname=~\"(": matcher value contains unescaped double quote: "(
line 4: remediation "a": category: "E" is not one of A, B, C, D
line 5: remediation "a": target: template: a:1:10: executing "a" at <.Labelz.x>: can't evaluate field Labelz in type policy.TemplateData
line 6: remediation "a": steps[0]: unknown action type "reboot_now" (known: docker_prune, exec, gpu_recover, gpu_reset, gpu_session_reset, gpu_throttle, hard_restart, http, log_cleanup, reboot, restart, restart_project, stop_start, vacuum)
line 7: remediation "a": failure_window: 2h is longer than the 1h failures are kept
line 8: remediation "a": escalate_to: no remediation is named "nowhere"
line 9: remediation "a": name: used by another remediation
line 10: remediation "a": match: needs at least one matcher`,
		},
		"missing fields": {
			"remediations:\n  - match: ['a=\"b\"']\n",
			`line 2: remediation #1: name: must be set
line 2: remediation #1: category: must be set (A, B, C or D)
line 2: remediation #1: target: must be set (a template such as '{{ .Labels.service }}')
line 2: remediation #1: steps: needs at least one step (or set action or sequence)`,
		},
		"webhook credentials": {
			"webhook:\n  bearer_token_file: /t\n  basic_auth: {username: u}\n",
			`line 1: webhook: bearer_token_file and basic_auth: set one, not both
line 3: webhook: basic_auth.password_file: must be set`,
		},
		"parameter of another action type": {
			"remediations:\n  - name: a\n    action: {type: restart, wait: 1s}\n",
			`line 3: remediation "a": wait does not apply to action type restart`,
		},
		"action parameters": {
			`remediations:
  - {name: h, match: ['a="b"'], category: B, target: t, action: {type: http, url: "ftp://x"}}
  - {name: g, match: ['a="b"'], category: B, target: t, action: {type: gpu_throttle, power_limit_ratio: 1.5}}
  - {name: l, match: ['a="b"'], category: C, target: t, action: {type: log_cleanup, roots: [/, var/log], patterns: ["a/*.log"], older_than: 1m}}
  - {name: r, match: ['a="b"'], category: D, target: t, action: {type: reboot, command: ["{{ .Oops"]}}
`,
			`line 2: remediation "h": action: url: "ftp://x" is not an http or https URL
line 3: remediation "g": action: power_limit_ratio: 1.5 is not in (0, 1]
line 4: remediation "l": action: roots: "/" must be an absolute directory other than /
line 4: remediation "l": action: roots: "var/log" must be an absolute directory other than /
line 4: remediation "l": action: patterns: "a/*.log" is not a file name glob
line 4: remediation "l": action: older_than: 1m is less than an hour
line 5: remediation "r": action: command: template: :1: unclosed action`,
		},
		"self escalation": {
			"remediations:\n  - {name: a, match: ['a=\"b\"'], category: A, target: t, steps: [restart], escalate_to: a}\n",
			`line 2: remediation "a": escalate_to: a remediation cannot escalate to itself`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatal("want an error")
			}
			if err.Error() != tc.want {
				t.Fatalf("error:\n%s\nwant:\n%s", err, tc.want)
			}
		})
	}
}

func TestLoadPrefixesFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "selfheal.yml")
	if err := os.WriteFile(p, []byte("remediations:\n  - name: a\n    bogus: 1\n  - {name: b, match: ['a=\"b\"'], category: Z, target: t, steps: [restart]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Every problem at once: the unknown field, and what validation finds
	// in the rest.
	_, err := Load(p)
	want := p + `:3: remediation "a": unknown field "bogus" in remediation` + "\n" + p + `:4: remediation "b": category: "Z" is not one of A, B, C, D`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	if err := os.WriteFile(p, []byte("remediations:\n  - {name: b, match: ['a=\"b\"'], category: Z, target: t, steps: [restart]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(p)
	want = p + `:2: remediation "b": category: "Z" is not one of A, B, C, D`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func TestEmptyConfigIsValid(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Engine.Workers != DefaultWorkers || len(cfg.Remediations) != 0 {
		t.Fatalf("defaults not applied: %+v", cfg.Engine)
	}
}

func TestExplicitZeroIsKept(t *testing.T) {
	cfg, err := Parse([]byte(`
remediations:
  - {name: b, match: ['a="b"'], category: B, target: t, action: restart, cooldown: 0s, verify: {stable_for: 0s}, max_failures: 0}
  - {name: c, match: ['a="c"'], category: B, target: t, action: {type: stop_start, wait: 0s}}
`))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Remediation("b")
	if b.Cooldown != 0 || b.Verify.StableFor != 0 || b.MaxFailures != 0 {
		t.Errorf("explicit zeros replaced by defaults: cooldown %s, stable_for %s, max_failures %d", b.Cooldown, b.Verify.StableFor, b.MaxFailures)
	}
	if b.Verify.Timeout.D() != DefaultVerifyTimeout || b.Timeout.D() != DefaultTimeout {
		t.Errorf("unset fields lost their defaults: %+v", b.Verify)
	}
	c := cfg.Remediation("c")
	if c.Cooldown.D() != DefaultCooldownB || wait(c.Steps[0]) != 0 {
		t.Errorf("c: cooldown %s, wait %s", c.Cooldown, wait(c.Steps[0]))
	}
}

func TestUnknownKeyInVerify(t *testing.T) {
	_, err := Parse([]byte("remediations:\n  - name: a\n    verify: {timeout: 1s, stabel_for: 2s}\n"))
	if err == nil || err.Error() != `line 3: remediation "a": unknown field "stabel_for" in verify` {
		t.Fatalf("got %v", err)
	}
}

func TestAlertmanagerURLFromEnvironment(t *testing.T) {
	cfg, err := Parse([]byte("alertmanager: {url: 'http://file:9093'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.ApplyEnvironment(func(k string) string {
		return map[string]string{EnvAlertmanagerURL: "http://alertmanager:9093"}[k]
	}); err != nil || cfg.Alertmanager.URL != "http://alertmanager:9093" {
		t.Fatalf("url %q, err %v: the environment must win", cfg.Alertmanager.URL, err)
	}
	err = cfg.ApplyEnvironment(func(k string) string { return map[string]string{EnvAlertmanagerURL: "alertmanager:9093"}[k] })
	if err == nil || err.Error() != `SELFHEAL_ALERTMANAGER_URL: "alertmanager:9093" is not an http or https URL` {
		t.Fatalf("got %v", err)
	}
}

func TestEnvironment(t *testing.T) {
	env := map[string]string{"SELFHEAL_DATABASE_URL": "postgres://env", "SELFHEAL_WEBHOOK_TOKEN": "tok",
		"SELFHEAL_REBOOT_ENABLED": "true", "DOCKER_HOST": "tcp://proxy:2375"}
	cfg, err := Parse([]byte("database_url: postgres://file\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.ApplyEnvironment(func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if cfg.DatabaseURL != "postgres://env" || cfg.Webhook.Token != "tok" || !cfg.RebootEnabled || cfg.Targets.Docker.Host != "tcp://proxy:2375" {
		t.Fatalf("%+v", cfg)
	}
	cfg, _ = Parse([]byte("targets: {docker: {host: unix:///x.sock}}\n"))
	env["SELFHEAL_REBOOT_ENABLED"] = "yes" // only "true" enables reboots
	_ = cfg.ApplyEnvironment(func(k string) string { return env[k] })
	if cfg.Targets.Docker.Host != "unix:///x.sock" || cfg.RebootEnabled {
		t.Fatalf("a host in the file must win over DOCKER_HOST, and only \"true\" enables reboots: %+v", cfg.Targets.Docker)
	}
}

// TestLogCleanupRefusesSystemDirectories: roots in or under a system
// directory are refused, after resolving ".." and symbolic links, unless
// the loudly named override is set.
func TestLogCleanupRefusesSystemDirectories(t *testing.T) {
	link := filepath.Join(t.TempDir(), "logs")
	if err := os.Symlink("/etc", link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		root, dir string
	}{
		{"/etc", "/etc"}, {"/proc", "/proc"}, {"/boot/grub", "/boot"}, {"/var/lib/postgresql", "/var/lib"},
		{"/var/log/../../etc", "/etc"}, {"/usr/share", "/usr"}, {"/sys/kernel", "/sys"}, {link, "/etc"},
	} {
		t.Run(tc.root, func(t *testing.T) {
			yaml := "remediations:\n  - {name: l, match: ['a=\"b\"'], category: C, target: t, action: {type: log_cleanup, roots: [" + tc.root + "], patterns: ['*.log']}}\n"
			_, err := Parse([]byte(yaml))
			want := `line 2: remediation "l": action: roots: "` + tc.root + `" is in the system directory ` + tc.dir + ` (set unsafe_allow_system_roots: true to allow it)`
			if err == nil || err.Error() != want {
				t.Fatalf("got %v\nwant %s", err, want)
			}
			allowed := strings.Replace(yaml, "patterns:", "unsafe_allow_system_roots: true, patterns:", 1)
			if _, err := Parse([]byte(allowed)); err != nil {
				t.Fatalf("with the override: %v", err)
			}
		})
	}
}

func TestAlertNode(t *testing.T) {
	n := Node{Name: "edge-01", Aliases: []string{"10.0.0.5"}, Unlabelled: UnlabelledAct}
	for _, tc := range []struct {
		labels  map[string]string
		node    string
		foreign bool
	}{
		{map[string]string{"instance": "edge-01:9595"}, "edge-01", false},
		{map[string]string{"instance": "EDGE-01:9595"}, "EDGE-01", false},
		{map[string]string{"instance": "edge-02:9595"}, "edge-02", true},
		{map[string]string{"instance": "edge-01:9595", "node": "edge-02"}, "edge-02", true},
		{map[string]string{"instance": "edge-02:9595", "node": "edge-01"}, "edge-01", false},
		{map[string]string{"instance": "10.0.0.5:9100"}, "10.0.0.5", false},
		{map[string]string{"instance": "[::1]:9595"}, "::1", false},
		{map[string]string{"instance": "localhost:9595"}, "localhost", false},
		{map[string]string{"instance": "edge-02"}, "edge-02", true},
		{map[string]string{}, "", false},
	} {
		if got := AlertNode(tc.labels); got != tc.node {
			t.Errorf("AlertNode(%v) = %q, want %q", tc.labels, got, tc.node)
		}
		if got := n.Foreign(tc.labels) != ""; got != tc.foreign {
			t.Errorf("Foreign(%v) = %v, want %v", tc.labels, got, tc.foreign)
		}
	}
	n.Unlabelled = UnlabelledRefuse
	if n.Foreign(map[string]string{"alertname": "x"}) == "" {
		t.Error("an unlabelled alert acted on with node.unlabelled: refuse")
	}
	cfg, err := Parse([]byte("node: {name: edge-01}\n"))
	if err != nil {
		t.Fatal(err)
	}
	_ = cfg.ApplyEnvironment(func(k string) string { return map[string]string{EnvNodeName: "edge-07"}[k] })
	if cfg.Node.Name != "edge-07" || cfg.Node.Unlabelled != UnlabelledAct {
		t.Errorf("node %+v: SELFHEAL_NODE_NAME must win, unlabelled default to act", cfg.Node)
	}
	if _, err := Parse([]byte("node: {unlabelled: maybe}\n")); err == nil || err.Error() != `line 1: node: unlabelled: "maybe" is not one of act, refuse` {
		t.Errorf("bad unlabelled: %v", err)
	}
}

// TestFleetNode: in a fleet an alert for another node is queued (for that
// node's engine) but still never acted on here; an unlabelled one is
// refused by default; polling slows down; silence needs two heartbeats.
func TestFleetNode(t *testing.T) {
	cfg, err := Parse([]byte("node: {name: Edge-01, aliases: [10.0.0.1, edge-01], fleet: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Node
	if n.Unlabelled != UnlabelledRefuse || cfg.Engine.PollInterval.D() != DefaultFleetPollInterval ||
		n.HeartbeatInterval.D() != DefaultHeartbeatInterval || n.SilentAfter.D() != DefaultSilentAfter {
		t.Errorf("fleet defaults: %+v, poll %s", n, cfg.Engine.PollInterval.D())
	}
	// Every host is localhost to itself: in a fleet that names no node.
	if got := strings.Join(n.Names(), ","); got != "edge-01,10.0.0.1" {
		t.Errorf("Names() = %s", got)
	}
	local := map[string]string{"instance": "localhost:9100"}
	if why := n.NotQueued(local); !strings.Contains(why, "which in a fleet names no node") || n.Owns("localhost") {
		t.Errorf("an alert for localhost in a fleet: not queued %q, owned %v", why, n.Owns("localhost"))
	}
	other := map[string]string{"node": "edge-02"}
	if n.NotQueued(other) != "" || n.Foreign(other) == "" || n.Of(other) != "edge-02" {
		t.Errorf("another node's alert: queued %q, foreign %q", n.NotQueued(other), n.Foreign(other))
	}
	none := map[string]string{"alertname": "x"}
	if n.NotQueued(none) == "" || n.Of(none) != "" {
		t.Error("an unlabelled alert queued in a fleet")
	}
	n.Unlabelled = UnlabelledAct
	if n.NotQueued(none) != "" || n.Of(none) != "Edge-01" {
		t.Errorf("unlabelled: act queues it for this node: %q, %q", n.NotQueued(none), n.Of(none))
	}
	one, err := Parse([]byte("node: {name: edge-01}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if one.Node.NotQueued(other) == "" || one.Engine.PollInterval.D() != DefaultPollInterval {
		t.Error("one host queued another node's alert")
	}
	if _, err := Parse([]byte("node: {heartbeat_interval: 10s, silent_after: 15s}\n")); err == nil ||
		!strings.Contains(err.Error(), "silent_after (15s) must be at least twice heartbeat_interval (10s)") {
		t.Errorf("silent_after below two heartbeats: %v", err)
	}
}

func TestFastPath(t *testing.T) {
	base := "node: {name: edge-01}\nalertmanager: {url: 'http://am:9093'}\nremediations:\n"
	cfg, err := Parse([]byte(base + `  - {name: down, match: ['alertname="ServiceDown"'], category: A, target: '{{ .Labels.service }}', steps: [restart], fast_path: {on: die}}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.FastPathFor(FastPathDie, "llm")
	if r == nil || r.FastPath.JoinWithin.D() != DefaultFastPathJoin || cfg.FastPathFor(FastPathUnhealthy, "llm") != nil {
		t.Fatalf("fast path = %+v", r)
	}
	l := r.FastAlert("llm", "edge-01")
	if l["alertname"] != "ServiceDown" || l["service"] != "llm" || l["node"] != "edge-01" || !IsFastAlert(l) || cfg.Match(l) != r {
		t.Errorf("fast alert %v", l)
	}
	for _, tc := range []struct{ yaml, want string }{
		{`  - {name: a, match: ['alertname="X"'], category: A, target: '{{ .Labels.service }}', steps: [restart], fast_path: {on: exit}}`,
			`remediation "a": fast_path.on: "exit" is not die or unhealthy`},
		{`  - {name: a, match: ['alertname="X"'], category: B, target: '{{ .Labels.service }}', steps: [restart], fast_path: {on: die}}`,
			`remediation "a": fast_path: only for category A (a container down or unhealthy)`},
		{`  - {name: a, match: ['alertname=~"X|Y"'], category: A, target: '{{ .Labels.service }}', steps: [restart], fast_path: {on: die}}`,
			`remediation "a": fast_path: the remediation needs an alertname="…" matcher, the alert the fast path stands for`},
		{`  - {name: a, match: ['alertname="X"', 'severity="critical"'], category: A, target: '{{ .Labels.service }}', steps: [restart], fast_path: {on: die}}`,
			`remediation "a": fast_path: the matcher severity="critical" does not match the fast path's alert`},
		{`  - {name: a, match: ['alertname="X"'], category: A, target: 'llm-service', steps: [restart], fast_path: {on: die}}`,
			`remediation "a": fast_path: the target must render the container's name from the alert`},
	} {
		_, err := Parse([]byte(base + tc.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\ngot  %v\nwant %s", tc.yaml, err, tc.want)
		}
	}
	cfg, err = Parse([]byte(base + `  - {name: llm, match: ['alertname="ServiceDown"', 'service=~"llm-.*"'], category: A, target: '{{ .Labels.service }}', steps: [restart], fast_path: {on: die}}
`))
	if err != nil || cfg.FastPathFor(FastPathDie, "llm-1") == nil || cfg.FastPathFor(FastPathDie, "db") != nil {
		t.Errorf("a service matcher chooses the containers: %v", err)
	}
	_, err = Parse([]byte("remediations:\n  - {name: a, match: ['alertname=\"X\"'], category: A, target: '{{ .Labels.service }}', steps: [restart], fast_path: {on: die}}\n"))
	if err == nil || !strings.Contains(err.Error(), "fast_path: needs alertmanager.url") {
		t.Errorf("without Alertmanager: %v", err)
	}
}

// TestStartOnlyChanges: a reload that changes a setting read only at
// start is named; one that changes what takes effect on reload — what
// selfheal may touch included — is not.
func TestStartOnlyChanges(t *testing.T) {
	base := `
database_url: postgres://a@db/selfheal
webhook: {allow_unauthenticated: true}
targets: {docker: {require_label: selfheal.enable=true, containers: [x], stop_timeout: 10s}}
remediations:
  - {name: service-down, match: ['alertname="ServiceDown"'], category: A, target: '{{ .Labels.service }}', steps: [restart]}
`
	running, err := Parse([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, from, to string
		want           string
	}{
		{"opt-in withdrawn", "containers: [x]", "containers: []", ""},
		{"label changed", "require_label: selfheal.enable=true", "require_label: other", ""},
		{"stop timeout", "stop_timeout: 10s", "stop_timeout: 3s", ""},
		{"remediation", "steps: [restart]", "steps: [restart, stop_start]", ""},
		{"database", "postgres://a@db/selfheal", "postgres://b@db/selfheal", "database_url"},
		{"body limit and docker host", "webhook: {allow_unauthenticated: true}", "webhook: {allow_unauthenticated: true, max_body_bytes: 10}\nengine: {workers: 9}",
			"webhook.max_body_bytes,engine.workers"},
		{"docker host", "stop_timeout: 10s", "stop_timeout: 10s, host: 'tcp://x:2375'", "targets.docker.host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(base, tc.from) {
				t.Fatalf("%q not in the base configuration", tc.from)
			}
			next, err := Parse([]byte(strings.Replace(base, tc.from, tc.to, 1)))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(running.StartOnlyChanges(next), ","); got != tc.want {
				t.Fatalf("StartOnlyChanges = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestUnreadEnvironment(t *testing.T) {
	env := map[string]string{"SELF_HEALING_INTERVAL": "60", "DISK_REBOOT_PERCENT": "97", "SELF_HEALING_ENABLED": "true"}
	got := UnreadEnvironment(func(k string) string { return env[k] })
	if len(got) != 2 || !strings.HasPrefix(got[0], "SELF_HEALING_INTERVAL is set but not read: ") ||
		!strings.Contains(got[1], "DiskSpaceExhausted") {
		t.Errorf("%q", got)
	}
}

func TestHTTPClientConfigs(t *testing.T) {
	cfg, err := Parse([]byte(`
alertmanager:
  url: https://am:9093
  http_config: {basic_auth: {username: selfheal, password_file: pw}, tls_config: {ca_file: ca.pem}}
remediations:
  - name: cache
    match: ['alertname="HostCPUHigh"']
    category: B
    target: llm
    action: {type: http, url: 'https://llm:8000/cache/clear', http_config: {authorization: {credentials: t}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Alertmanager.HTTPConfig.BasicAuth == nil || cfg.Alertmanager.HTTPConfig.BasicAuth.Username != "selfheal" {
		t.Errorf("alertmanager.http_config: %+v", cfg.Alertmanager.HTTPConfig)
	}
	if _, err := cfg.Alertmanager.Client(); err == nil {
		t.Error("a client with a CA file that is not there")
	}
	_, err = Parse([]byte(`
alertmanager:
  url: https://am:9093
  http_config: {basic_auth: {username: a, password: b}, authorization: {credentials: c}}
`))
	if err == nil || !strings.Contains(err.Error(), "at most one of basic_auth, oauth2 & authorization must be configured") {
		t.Errorf("two kinds of credentials: %v", err)
	}
}

func TestEvidenceSettings(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev := cfg.Targets.Docker.Evidence; ev.LogLines != DefaultEvidenceLogLines || ev.LogBytes != DefaultEvidenceLogBytes ||
		len(ev.Redactions()) != len(DefaultRedactions) {
		t.Errorf("defaults: %+v", ev)
	}
	// Written zeroes are kept: no logs at all.
	cfg, err = Parse([]byte("targets: {docker: {evidence: {log_lines: 0}}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if ev := cfg.Targets.Docker.Evidence; ev.LogLines != 0 || ev.LogBytes != DefaultEvidenceLogBytes {
		t.Errorf("log_lines: 0 → %+v", ev)
	}
	_, err = Parse([]byte("targets:\n  docker:\n    evidence:\n      redact: ['(unclosed']\n      log_bytes: -1\n"))
	want := "line 4: targets.docker: evidence.redact[0]: \"(unclosed\": error parsing regexp: missing closing ): `(unclosed`\n" +
		"line 5: targets.docker: evidence.log_bytes: must be positive when log_lines is"
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

func TestCauses(t *testing.T) {
	cfg, err := Parse([]byte(`
remediations:
  - name: service-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    steps: [restart, stop_start]
    escalate_to: critical-recovery
    causes:
      - {name: oom-killed, when: {oom_killed: true}, max_failures: 2, escalate_to: ''}
      - {name: config-error, when: {exit_codes: [2, 78], died_within: 5s}, max_failures: 1}
  - {name: critical-recovery, match: ['alertname="X"'], category: C, target: t, action: restart}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Remediation("service-down")
	for _, tc := range []struct {
		facts       action.Facts
		cause       string
		maxFailures int
		escalateTo  string
	}{
		{action.Facts{Stopped: true, OOMKilled: true, ExitCode: 137, RanFor: time.Minute}, "cause oom-killed (OOM-killed)", 2, ""},
		{action.Facts{Stopped: true, ExitCode: 78, RanFor: 300 * time.Millisecond}, "cause config-error (exit code 78, died 300ms after starting (within 5s))", 1, "critical-recovery"},
		{action.Facts{Stopped: true, ExitCode: 78, RanFor: time.Minute}, "", 3, "critical-recovery"}, // ran long: an ordinary crash
		{action.Facts{Stopped: true, ExitCode: 1, RanFor: time.Second}, "", 3, "critical-recovery"},
		{action.Facts{OOMKilled: true}, "", 3, "critical-recovery"}, // running again: no cause to choose on
	} {
		got, why := r.ForCause(tc.facts)
		if why != tc.cause || got.MaxFailures != tc.maxFailures || got.EscalateTo != tc.escalateTo {
			t.Errorf("%+v: %q, max_failures %d, escalate_to %q", tc.facts, why, got.MaxFailures, got.EscalateTo)
		}
	}
	if r.MaxFailures != 3 || r.EscalateTo != "critical-recovery" {
		t.Error("ForCause changed the remediation itself")
	}
	// A cause can change a decision only from the smallest max_failures
	// (config-error's 1): below it the evidence need not be read.
	if r.CauseMatters(0) || !r.CauseMatters(1) || !r.CauseMatters(3) || cfg.Remediation("critical-recovery").CauseMatters(9) {
		t.Error("CauseMatters")
	}

	_, err = Parse([]byte(`
remediations:
  - name: a
    match: ['alertname="X"']
    category: A
    target: t
    steps: [restart]
    causes:
      - {name: x, when: {}}
      - {name: x, when: {exit_codes: [300]}, escalate_to: nowhere}
`))
	want := `line 9: remediation "a": causes[0].when: needs at least one of oom_killed, exit_codes, died_within
line 9: remediation "a": causes[0]: changes nothing: set max_failures or escalate_to
line 10: remediation "a": causes[1].name: "x" is used by another cause
line 10: remediation "a": causes[1].when: exit_codes: 300 is not an exit code (0–255)
line 10: remediation "a": causes[1].escalate_to: no remediation is named "nowhere"`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant\n%s", err, want)
	}
}

func TestExecAllowList(t *testing.T) {
	const exec = `
remediations:
  - name: flush
    match: ['alertname="LLMCacheFull"']
    category: B
    target: '{{ .Labels.service }}'
    action: {type: exec, command: [/usr/local/bin/flush-cache, '{{ .Labels.service }}'], timeout: 10s}
`
	_, err := Parse([]byte(exec))
	want := `line 7: remediation "flush": action: command: "/usr/local/bin/flush-cache" is not in targets.exec.allow []: list it there to let selfheal run it`
	if err == nil || err.Error() != want {
		t.Errorf("not allowed: %v\nwant %s", err, want)
	}
	if _, err := Parse([]byte("targets: {exec: {allow: [/usr/local/bin/flush-cache]}}\n" + exec)); err != nil {
		t.Errorf("allowed: %v", err)
	}
	if _, err := Parse([]byte("targets: {exec: {allow: [flush-cache]}}\n")); err == nil || !strings.Contains(err.Error(), `allow[0]: "flush-cache" is not an absolute path`) {
		t.Errorf("a relative allow entry: %v", err)
	}
}

// TestDrainConfiguration: a drain's hook takes the http action's keys,
// its defaults are filled in, and a wrong one is an error naming the key.
func TestDrainConfiguration(t *testing.T) {
	const head = `
remediations:
  - name: a
    match: ['alertname="X"']
    category: A
    target: x
    action: restart
`
	cfg, err := Parse([]byte(head + `    drain: {http: {url: 'http://llm:8000/drain', headers: {X-Reason: selfheal}}, until: 'sum(inflight)', prometheus_url: 'http://prom:9090'}
`))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Remediations[0].Drain
	if d == nil || d.Timeout.D() != DefaultDrainTimeout || d.OnTimeout != DrainProceed || d.Until != "sum(inflight)" || d.HTTP == nil {
		t.Fatalf("drain %+v", d)
	}
	for _, tc := range []struct{ drain, want string }{
		{`{}`, `drain: set http (the hook), until (the PromQL expression to wait on), or both`},
		{`{until: 'sum(x)'}`, `drain: prometheus_url: "" is not an http or https URL (until needs the Prometheus to ask)`},
		{`{http: {url: 'ftp://x'}, timeout: 0s}`, `drain: http: url: "ftp://x" is not an http or https URL`},
		{`{http: {url: 'http://x'}, timeout: 0s}`, `drain: timeout: must be positive`},
		{`{http: {url: 'http://x'}, on_timeout: wait}`, `drain: on_timeout: "wait" is not "proceed" or "fail"`},
		{`{http: 'http://x'}`, `drain: http: must be a mapping`},
		{`{http: {url: 'http://x', command: [ls]}}`, `command does not apply to action type http`},
		{`{hook: {url: 'http://x'}}`, `unknown field "hook" in drain`},
	} {
		_, err := Parse([]byte(head + "    drain: " + tc.drain + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("drain %s: %v, want %q", tc.drain, err, tc.want)
		}
	}
}
