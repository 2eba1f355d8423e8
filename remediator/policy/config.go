// Package policy reads selfheal's configuration: what it may touch, which
// alerts map to which remediations, and the limits each remediation obeys.
// Loading validates everything up front and reports every problem with the
// file, the remediation and the field it is in.
package policy

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	commoncfg "github.com/prometheus/common/config"
	"go.yaml.in/yaml/v3"

	"github.com/selfheal/selfheal/exporter/probe"
)

// Config is the whole configuration file.
type Config struct {
	// RebootEnabled comes from SELFHEAL_REBOOT_ENABLED, never from the file:
	// reboots need both the switch and a reboot remediation.
	RebootEnabled bool `yaml:"-"`
	// PausedByEnvironment, when set, says why this replica is paused by its
	// environment (the seed's SELF_HEALING_ENABLED=false).
	PausedByEnvironment string `yaml:"-"`

	DatabaseURL  string         `yaml:"database_url"`
	Node         Node           `yaml:"node"`
	Webhook      Webhook        `yaml:"webhook"`
	DryRun       bool           `yaml:"dry_run"`
	Engine       Engine         `yaml:"engine"`
	Targets      Targets        `yaml:"targets"`
	Exporter     Exporter       `yaml:"exporter"`
	Alertmanager Alertmanager   `yaml:"alertmanager"`
	StatusPage   StatusPage     `yaml:"status_page"`
	Remediations []*Remediation `yaml:"remediations"`
}

// Alertmanager is where selfheal hands off to people what it cannot fix:
// its own alerts, posted to Alertmanager's API v2.
type Alertmanager struct {
	// URL is Alertmanager's base URL; empty hands nothing off.
	URL string `yaml:"url"`
	// Interval is how often the alerts are sent again (Alertmanager
	// resolves an alert that is not).
	Interval Duration `yaml:"interval"`
	// PausedFor is how long remediation may stay paused before people are
	// told.
	PausedFor Duration `yaml:"paused_for"`
	// Lookback is how far back a failed or refused action still counts as
	// unresolved, when the target has had no success since.
	Lookback Duration `yaml:"lookback"`
	// HTTPConfig is how selfheal reaches Alertmanager (the hand-off, the
	// fast path's silences): TLS, basic auth, a bearer token, a proxy, as
	// every Prometheus component configures its HTTP clients.
	HTTPConfig commoncfg.HTTPClientConfig `yaml:"http_config"`
}

// Client returns the HTTP client for Alertmanager that HTTPConfig says.
func (a Alertmanager) Client() (*http.Client, error) {
	return commoncfg.NewClientFromConfig(a.HTTPConfig, "selfheal")
}

// StatusPage configures the read-only page at /.
type StatusPage struct {
	// PrometheusURL, when set, is linked from the page (alertmanager.url
	// is too).
	PrometheusURL string `yaml:"prometheus_url"`
}

// Exporter configures the built-in exporter beyond its flags.
type Exporter struct {
	// Probes are the endpoints the probe collector checks on every scrape.
	Probes []probe.Probe `yaml:"probes"`
}

// Webhook configures the Alertmanager receiver endpoint.
type Webhook struct {
	BearerTokenFile string     `yaml:"bearer_token_file"`
	BasicAuth       *BasicAuth `yaml:"basic_auth"`
	// AllowUnauthenticated must be set to accept requests without
	// credentials; otherwise a webhook with no credentials is an error.
	AllowUnauthenticated bool  `yaml:"allow_unauthenticated"`
	MaxBodyBytes         int64 `yaml:"max_body_bytes"`
	// PersistTimeout bounds how long a delivery may wait for the database
	// before it is answered 503.
	PersistTimeout Duration `yaml:"persist_timeout"`
	// Token comes from SELFHEAL_WEBHOOK_TOKEN, never from the file.
	Token string `yaml:"-"`
}

// BasicAuth holds HTTP basic credentials; the password lives in a file.
type BasicAuth struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// Engine tunes the workers and the safety brakes.
type Engine struct {
	// Workers is how many jobs one replica works on at once.
	Workers int `yaml:"workers"`
	// MaxConcurrentActions bounds running actions across all replicas.
	MaxConcurrentActions int `yaml:"max_concurrent_actions"`
	// StormBrake bounds how many actions start per window across replicas.
	StormBrake StormBrake `yaml:"storm_brake"`
	// ReopenAfter is how long after a finished job a still-firing alert may
	// get its next step.
	ReopenAfter Duration `yaml:"reopen_after"`
	// UnreachableFor is how long a job may wait for a target it cannot
	// reach (the Docker Engine down) before it is refused as unreachable, a
	// CRITICAL event.
	UnreachableFor Duration `yaml:"unreachable_for"`
	// PollInterval is how often an idle replica looks for due jobs when
	// nothing wakes it sooner: one idle worker polls, and wakes another
	// when it finds a job.
	PollInterval Duration `yaml:"poll_interval"`
	// RetentionInterval is how often old rows are deleted.
	RetentionInterval Duration `yaml:"retention_interval"`
	// RevertInterval is how often temporary changes whose alert resolved
	// are undone.
	RevertInterval Duration `yaml:"revert_interval"`
	// RebootValidationDelay lets services come up after a reboot before
	// selfheal checks they all run again.
	RebootValidationDelay Duration `yaml:"reboot_validation_delay"`
	// CriticalEvents raises the CriticalEventsThreshold alert inside
	// selfheal when that many CRITICAL or EMERGENCY events fall in the
	// window (category D's "3 critical events in 30 minutes").
	CriticalEvents CriticalEvents `yaml:"critical_events"`
	// Chronic notices a target selfheal keeps repairing: the cause is not
	// fixed, however well each repair holds.
	Chronic Chronic `yaml:"chronic"`
}

// Chronic is a long-window count of remediations per target, from the
// audit trail: MaxRemediations actions on one target within Window (since
// its last selfheal clear) hand it to people (SelfhealChronic) and, with
// Hold, stop automatic action on it until a person clears it.
type Chronic struct {
	MaxRemediations int      `yaml:"max_remediations"` // 0: off
	Window          Duration `yaml:"window"`
	Hold            bool     `yaml:"hold"`

	set bool
}

// UnmarshalYAML decodes the section, the defaults first, so that
// max_remediations: 0 means off.
func (c *Chronic) UnmarshalYAML(n *yaml.Node) error {
	type plain Chronic
	if err := knownKeys(n, plain{}, "chronic"); err != nil {
		return err
	}
	p := plain{MaxRemediations: DefaultChronicMax, Window: Duration(DefaultChronicWindow)}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*c = Chronic(p)
	c.set = true
	return nil
}

// CriticalEvents configures the critical-event counter.
type CriticalEvents struct {
	Threshold int      `yaml:"threshold"`
	Window    Duration `yaml:"window"`
	Interval  Duration `yaml:"interval"`
}

// StormBrake limits actions per window.
type StormBrake struct {
	MaxActions int      `yaml:"max_actions"`
	Window     Duration `yaml:"window"`
}

// Evidence bounds what selfheal reads and keeps of a container before an
// action changes it: its last log lines and exit state.
type Evidence struct {
	// LogLines is how many of the last log lines to keep; 0 keeps none.
	LogLines int `yaml:"log_lines"`
	// LogBytes bounds them, in memory and in the record.
	LogBytes int `yaml:"log_bytes"`
	// Redact are regular expressions (RE2) whose matches in the kept
	// logs and health-check output are replaced by [REDACTED]; they
	// replace the defaults (DefaultRedactions) when set.
	Redact []string `yaml:"redact"`

	set    bool // in the file: its zeroes are the file's, not defaults
	redact []*regexp.Regexp
}

// UnmarshalYAML decodes the section, the defaults first, so that
// log_lines: 0 means no logs.
func (e *Evidence) UnmarshalYAML(n *yaml.Node) error {
	type plain Evidence
	if err := knownKeys(n, plain{}, "evidence"); err != nil {
		return err
	}
	p := plain{LogLines: DefaultEvidenceLogLines, LogBytes: DefaultEvidenceLogBytes}
	if err := n.Decode(&p); err != nil {
		return err
	}
	*e = Evidence(p)
	e.set = true
	return nil
}

// Redactions are the compiled Redact patterns (after validation).
func (e Evidence) Redactions() []*regexp.Regexp { return e.redact }

// Targets says what selfheal may touch. Nothing else, ever.
type Targets struct {
	Docker Docker `yaml:"docker"`
	Exec   Exec   `yaml:"exec"`
}

// Exec says which programs the exec action may run.
type Exec struct {
	// Allow lists them by absolute path; an exec step of any other is an
	// error in the configuration.
	Allow []string `yaml:"allow"`
}

// Docker configures the Docker Engine and which containers are opted in.
type Docker struct {
	Host string `yaml:"host"`
	// RequireLabel opts a container in: key=value, or key alone for any value.
	RequireLabel string `yaml:"require_label"`
	// Containers opts containers in by name, label or not.
	Containers []string `yaml:"containers"`
	// StopTimeout is the grace period before a stopped container is killed.
	StopTimeout Duration `yaml:"stop_timeout"`
	// Evidence is what is kept of a container before an action changes it.
	Evidence Evidence `yaml:"evidence"`

	hostDefaulted bool // Host was not in the file: DOCKER_HOST may set it
}

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(b)
	if err != nil {
		return nil, prefixLines(path, err)
	}
	// Files named in http_config are relative to the configuration's
	// directory, as in Prometheus.
	cfg.Alertmanager.HTTPConfig.SetDirectory(filepath.Dir(path))
	return cfg, nil
}

// prefixLines puts the file name in front of every line of err.
func prefixLines(path string, err error) error {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "line ") {
			// "line 12: …" becomes "path:12: …", the form editors jump to.
			l = strings.TrimPrefix(l, "line ")
			lines[i] = path + ":" + l
			continue
		}
		lines[i] = path + ": " + l
	}
	return errors.New(strings.Join(lines, "\n"))
}

// Parse decodes and validates a configuration. Unknown keys are errors.
func Parse(b []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, cleanYAMLError(err, nil)
	}
	names := remediationSpans(&doc)
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var problems []string
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		// Unknown fields leave the rest decoded: validate it too, so that
		// one run lists every problem. Any other error stops here.
		if !onlyUnknownFields(err) {
			return nil, cleanYAMLError(err, names)
		}
		problems = strings.Split(cleanYAMLError(err, names).Error(), "\n")
	}
	cfg.setDefaults()
	problems = append(problems, cfg.validate().lines(&doc)...)
	if len(problems) > 0 {
		// In the file's order, so a list of problems reads top to bottom;
		// those no line is known for (defaults, the environment) last.
		slices.SortStableFunc(problems, func(a, b string) int { return cmp.Compare(lineOf(a), lineOf(b)) })
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	return cfg, nil
}

// lineOf is the line a problem names ("line 12: …"), or the largest int.
func lineOf(problem string) int {
	rest, ok := strings.CutPrefix(problem, "line ")
	if n, _, _ := strings.Cut(rest, ":"); ok {
		if i, err := strconv.Atoi(n); err == nil {
			return i
		}
	}
	return math.MaxInt
}

// Fingerprint identifies what the configuration makes the engine do — its
// remediations, engine limits, targets and dry-run — so that replicas
// sharing a database can tell whether they run the same policy. Secrets
// and the database URL are not part of it.
func (c *Config) Fingerprint() string {
	b, _ := json.Marshal(struct {
		DryRun       bool
		Engine       Engine
		Targets      Targets
		Remediations []*Remediation
	}{c.DryRun, c.Engine, c.Targets, c.Remediations})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}
