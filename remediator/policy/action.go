package policy

import (
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"
)

// Action types. Each has the parameters listed in actionParams.
const (
	ActionRestart         = "restart"           // Docker restart of the target container
	ActionStopStart       = "stop_start"        // stop, wait, start
	ActionHTTP            = "http"              // call a URL (e.g. the LLM cache clear)
	ActionGPUSessionReset = "gpu_session_reset" // restart the opted-in containers holding a GPU
	ActionGPUThrottle     = "gpu_throttle"      // lower a GPU's power limit until the alert resolves
	ActionHardRestart     = "hard_restart"      // restart all application services, in order
	ActionDockerPrune     = "docker_prune"      // opted-in containers stopped for a day, opted-in dangling images
	ActionLogCleanup      = "log_cleanup"       // old files under configured roots
	ActionVacuum          = "vacuum"            // VACUUM ANALYZE on configured databases
	ActionGPUReset        = "gpu_reset"         // nvidia-smi --gpu-reset, only when no process holds the GPU
	ActionReboot          = "reboot"            // the guarded reboot
)

// actionParams lists, per action type, the keys it accepts beside type.
var actionParams = map[string][]string{
	ActionRestart:         nil,
	ActionStopStart:       {"wait"},
	ActionHTTP:            {"url", "method", "headers"},
	ActionGPUSessionReset: nil,
	ActionGPUThrottle:     {"power_limit_ratio"},
	ActionHardRestart:     {"services", "concurrency"},
	ActionDockerPrune:     {"stopped_for"},
	ActionLogCleanup:      {"roots", "patterns", "older_than", "unsafe_allow_system_roots"},
	ActionVacuum:          {"databases"},
	ActionGPUReset:        {"command", "all"},
	ActionReboot:          {"command", "window", "max_per_day", "mountpoints"},
}

// ActionTypes lists the action types this build can run, sorted.
var ActionTypes = func() []string {
	var t []string
	for k := range actionParams {
		t = append(t, k)
	}
	sort.Strings(t)
	return t
}()

// Action defaults.
const (
	DefaultStopStartWait = 2 * time.Second
	DefaultHTTPMethod    = "POST"
	DefaultConcurrency   = 1
	DefaultRebootWindow  = 6 * time.Hour
	DefaultRebootsPerDay = 3
	DefaultLogCleanupAge = 7 * 24 * time.Hour
	DefaultPruneStopped  = 24 * time.Hour
	gpuIndexPlaceholder  = "{{ .GPU }}"
)

// Default commands; each argument is a template over the target
// ({{ .GPU }} is the GPU index for gpu_reset).
var (
	DefaultGPUResetCommand = []string{"nvidia-smi", "--gpu-reset", "-i", gpuIndexPlaceholder}
	// DefaultRebootMountpoints is where a reboot can free space: the root
	// filesystem (its /tmp, a runaway journal), not a data volume.
	DefaultRebootMountpoints = []string{"/"}
	DefaultRebootCommand     = []string{"systemctl", "reboot"}
)

// Action is one remediation step: a type and that type's parameters.
type Action struct {
	Type string `yaml:"type"`

	// stop_start: the pause between stop and start.
	Wait Duration `yaml:"wait"`

	// http: the request; success is a 2xx answer within the timeout.
	URL     string            `yaml:"url"`
	Method  string            `yaml:"method"`
	Headers map[string]string `yaml:"headers"`

	// gpu_throttle: the new power limit as a fraction of the default limit
	// (clamped to what NVML allows).
	PowerLimitRatio float64 `yaml:"power_limit_ratio"`

	// hard_restart: the services in the order they restart (empty: every
	// opted-in container, by name), and how many restart at once.
	Services    []string `yaml:"services"`
	Concurrency int      `yaml:"concurrency"`

	// log_cleanup: files under Roots whose name matches one of Patterns
	// (shell globs) and that were last written more than OlderThan ago.
	Roots     []string `yaml:"roots"`
	Patterns  []string `yaml:"patterns"`
	OlderThan Duration `yaml:"older_than"`
	// UnsafeAllowSystemRoots lets a root lie in a system directory (/etc,
	// /var/lib, …; see SystemRoot). Named to be seen in review.
	UnsafeAllowSystemRoots bool `yaml:"unsafe_allow_system_roots"`

	// docker_prune: opted-in containers are removed only once they have
	// been stopped this long; one that just died is to be healed.
	StoppedFor Duration `yaml:"stopped_for"`

	// vacuum: connection URLs of the application's databases.
	Databases []string `yaml:"databases"`

	// gpu_reset and reboot: the command and its arguments.
	Command []string `yaml:"command"`

	// gpu_reset: every GPU of the host that no process holds, rather than
	// the target's (critical recovery).
	AllGPUs bool `yaml:"all"`

	// reboot: at most one per Window, and none once MaxPerDay reboots
	// happened in 24 hours (the boot-loop guard).
	Window    Duration `yaml:"window"`
	MaxPerDay int      `yaml:"max_per_day"`
	// reboot: for an alert about a filesystem (a mountpoint label), the
	// mount points a reboot can free — temporary files, a journal in RAM.
	// A reboot cannot free a data volume, so any other is refused.
	Mountpoints []string `yaml:"mountpoints"`
}

// UnmarshalYAML accepts a bare type name ("restart") or a mapping. Unknown
// keys, and keys of another action type, are errors; yaml.v3 would not
// check them below a custom unmarshaler.
func (a *Action) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*a = Action{Type: n.Value}
	} else {
		type plain Action
		if err := knownKeys(n, plain{}, "action"); err != nil {
			return err
		}
		if err := n.Decode((*plain)(a)); err != nil {
			return err
		}
		if allowed, known := actionParams[a.Type]; known {
			var errs []string
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				if k.Value != "type" && !contains(allowed, k.Value) {
					errs = append(errs, fmt.Sprintf("line %d: %s does not apply to action type %s", k.Line, k.Value, a.Type))
				}
			}
			if len(errs) > 0 {
				return &yaml.TypeError{Errors: errs}
			}
		}
	}
	a.setDefaults(n)
	return nil
}

func (a *Action) setDefaults(n *yaml.Node) {
	switch a.Type {
	case ActionStopStart:
		if !hasKey(n, "wait") {
			a.Wait = Duration(DefaultStopStartWait)
		}
	case ActionHTTP:
		if a.Method == "" {
			a.Method = DefaultHTTPMethod
		}
	case ActionHardRestart:
		if a.Concurrency == 0 {
			a.Concurrency = DefaultConcurrency
		}
	case ActionDockerPrune:
		if !hasKey(n, "stopped_for") {
			a.StoppedFor = Duration(DefaultPruneStopped)
		}
	case ActionLogCleanup:
		if !hasKey(n, "older_than") {
			a.OlderThan = Duration(DefaultLogCleanupAge)
		}
	case ActionGPUReset:
		if len(a.Command) == 0 {
			a.Command = DefaultGPUResetCommand
		}
	case ActionReboot:
		if len(a.Command) == 0 {
			a.Command = DefaultRebootCommand
		}
		if !hasKey(n, "window") {
			a.Window = Duration(DefaultRebootWindow)
		}
		if a.MaxPerDay == 0 {
			a.MaxPerDay = DefaultRebootsPerDay
		}
		if !hasKey(n, "mountpoints") {
			a.Mountpoints = DefaultRebootMountpoints
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// problems returns what is wrong with the action, one message each.
func (a Action) problems() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	if _, known := actionParams[a.Type]; !known {
		add("unknown action type %q (known: %s)", a.Type, strings.Join(ActionTypes, ", "))
		return p
	}
	switch a.Type {
	case ActionHTTP:
		if u, err := url.Parse(a.URL); a.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("url: %q is not an http or https URL", a.URL)
		}
	case ActionGPUThrottle:
		if a.PowerLimitRatio <= 0 || a.PowerLimitRatio > 1 {
			add("power_limit_ratio: %v is not in (0, 1]", a.PowerLimitRatio)
		}
	case ActionHardRestart:
		if a.Concurrency < 1 {
			add("concurrency: must be at least 1")
		}
	case ActionVacuum:
		if len(a.Databases) == 0 {
			add("databases: needs the application's database URL(s); selfheal's own is kept by its retention")
		}
	case ActionLogCleanup:
		if len(a.Roots) == 0 {
			add("roots: needs at least one directory")
		}
		for _, r := range a.Roots {
			if !filepath.IsAbs(r) || filepath.Clean(r) == "/" {
				add("roots: %q must be an absolute directory other than /", r)
			} else if d, sys := SystemRoot(r); sys && !a.UnsafeAllowSystemRoots {
				add("roots: %q is in the system directory %s (set unsafe_allow_system_roots: true to allow it)", r, d)
			}
		}
		if len(a.Patterns) == 0 {
			add("patterns: needs at least one glob")
		}
		for _, g := range a.Patterns {
			if _, err := filepath.Match(g, ""); err != nil || strings.Contains(g, "/") {
				add("patterns: %q is not a file name glob", g)
			}
		}
		if a.OlderThan.D() < time.Hour {
			add("older_than: %s is less than an hour", a.OlderThan)
		}
	case ActionGPUReset, ActionReboot:
		if len(a.Command) == 0 {
			add("command: must not be empty")
		}
		for _, arg := range a.Command {
			if _, err := template.New("").Parse(arg); err != nil {
				add("command: %v", err)
			}
		}
		if a.Type == ActionReboot && a.MaxPerDay < 1 {
			add("max_per_day: must be at least 1")
		}
		for _, m := range a.Mountpoints {
			if !filepath.IsAbs(m) {
				add("mountpoints: %q is not an absolute path", m)
			}
		}
	}
	return p
}
