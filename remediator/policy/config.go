// Package policy reads selfheal's configuration: what it may touch, which
// alerts map to which remediations, and the limits each remediation obeys.
// Loading validates everything up front and reports every problem with the
// file, the remediation and the field it is in.
package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/alertmanager/pkg/labels"
	"go.yaml.in/yaml/v3"
)

// Categories of remediation, as in the A–D table of docs/design.md.
const (
	CategoryA = "A" // service or container down: restart ladder
	CategoryB = "B" // overload
	CategoryC = "C" // critical recovery
	CategoryD = "D" // guarded reboot
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
}

// StatusPage configures the read-only page at /.
type StatusPage struct {
	// PrometheusURL, when set, is linked from the page (alertmanager.url
	// is too).
	PrometheusURL string `yaml:"prometheus_url"`
}

// Exporter configures the built-in exporter beyond its flags.
type Exporter struct {
	Probes []Probe `yaml:"probes"`
}

// Probe is an endpoint the probe collector checks on every scrape.
type Probe struct {
	Name string `yaml:"name"`
	// Type is http, tcp or postgres.
	Type string `yaml:"type"`
	// Target is a URL (http), host:port (tcp) or connection string (postgres).
	Target  string   `yaml:"target"`
	Timeout Duration `yaml:"timeout"`
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
	// PollInterval is how often workers look for due jobs when nothing
	// wakes them sooner.
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

// Targets says what selfheal may touch. Nothing else, ever.
type Targets struct {
	Docker Docker `yaml:"docker"`
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

	hostDefaulted bool // Host was not in the file: DOCKER_HOST may set it
}

// Remediation maps matching alerts to actions on one target.
type Remediation struct {
	Name     string   `yaml:"name"`
	Match    []string `yaml:"match"`
	Category string   `yaml:"category"`
	// Target is a Go template over the alert, e.g. '{{ .Labels.service }}'.
	Target string `yaml:"target"`
	// Steps is the ladder: attempt n runs Steps[n-1], the last one repeating.
	Steps []Action `yaml:"steps"`
	// Action is a single-step remediation; the same as Steps with one entry.
	Action *Action `yaml:"action"`
	// Sequence runs every action in order, each once, the next as soon as
	// the one before has finished (succeeded, failed or refused): category
	// C's critical recovery. Set one of Steps, Action and Sequence.
	Sequence      []Action `yaml:"sequence"`
	FailureWindow Duration `yaml:"failure_window"`
	MaxFailures   int      `yaml:"max_failures"`
	EscalateTo    string   `yaml:"escalate_to"`
	Cooldown      Duration `yaml:"cooldown"`
	// DryRun makes this remediation record what it would do; the global
	// dry_run always wins.
	DryRun  bool     `yaml:"dry_run"`
	Timeout Duration `yaml:"timeout"`
	Verify  Verify   `yaml:"verify"`

	matchers labels.Matchers
	target   *template.Template
	sequence bool
}

// IsSequence reports whether the remediation runs its steps as a sequence
// (each once, in order) rather than as a ladder (the next only on failure).
func (r *Remediation) IsSequence() bool { return r.sequence }

// Verify says how an action's effect is checked.
type Verify struct {
	// Timeout bounds the wait for the target to be running (and healthy).
	Timeout Duration `yaml:"timeout"`
	// StableFor is how long the target must then stay up.
	StableFor Duration `yaml:"stable_for"`
}

// UnmarshalYAML fills in the defaults before decoding, so a value written
// as zero (cooldown: 0s, stable_for: 0s, max_failures: 0) means zero.
func (r *Remediation) UnmarshalYAML(n *yaml.Node) error {
	type plain Remediation
	if err := knownKeys(n, plain{}, "remediation"); err != nil {
		return err
	}
	*r = Remediation{
		FailureWindow: Duration(DefaultFailureWindow),
		MaxFailures:   DefaultMaxFailures,
		Timeout:       Duration(DefaultTimeout),
		Verify:        Verify{Timeout: Duration(DefaultVerifyTimeout), StableFor: Duration(DefaultVerifyStableFor)},
	}
	if err := n.Decode((*plain)(r)); err != nil {
		return err
	}
	if r.Category == CategoryB && !hasKey(n, "cooldown") {
		r.Cooldown = Duration(DefaultCooldownB)
	}
	return nil
}

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

// knownKeys reports the keys of mapping n that are not yaml fields of v,
// looking into nested structs (but not into types with an unmarshaler of
// their own, which check themselves).
func knownKeys(n *yaml.Node, v any, where string) error {
	var errs []string
	checkKeys(n, reflect.TypeOf(v), where, &errs)
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	return nil
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func checkKeys(n *yaml.Node, t reflect.Type, where string, errs *[]string) {
	if n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct {
		return
	}
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			fields[name] = t.Field(i).Type
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		ft, ok := fields[k.Value]
		if !ok {
			*errs = append(*errs, fmt.Sprintf("line %d: field %s not found in type policy.%s", k.Line, k.Value, where))
			continue
		}
		if ft.Kind() == reflect.Struct && !reflect.PointerTo(ft).Implements(unmarshalerType) {
			checkKeys(n.Content[i+1], ft, k.Value, errs)
		}
	}
}

// Defaults for settings left out of the file.
const (
	DefaultMaxBodyBytes      = 1 << 20
	DefaultPersistTimeout    = 1500 * time.Millisecond
	DefaultWorkers           = 4
	DefaultMaxConcurrent     = 4
	DefaultStormMaxActions   = 20
	DefaultStormWindow       = 10 * time.Minute
	DefaultReopenAfter       = 5 * time.Minute
	DefaultPollInterval      = time.Second
	DefaultUnreachableFor    = 5 * time.Minute
	DefaultRetentionInterval = 10 * time.Minute
	DefaultRevertInterval    = 2 * time.Second
	DefaultRebootValidation  = 2 * time.Minute
	DefaultCriticalThreshold = 3
	DefaultCriticalWindow    = 30 * time.Minute
	DefaultCriticalInterval  = 10 * time.Second
	DefaultDockerHost        = "unix:///var/run/docker.sock"
	DefaultRequireLabel      = "selfheal.enable=true"
	DefaultStopTimeout       = 10 * time.Second
	DefaultFailureWindow     = 10 * time.Minute
	DefaultMaxFailures       = 3
	DefaultCooldownB         = 5 * time.Minute
	DefaultTimeout           = 2 * time.Minute
	DefaultVerifyTimeout     = 30 * time.Second
	DefaultVerifyStableFor   = 3 * time.Second
	DefaultProbeTimeout      = 2 * time.Second
	MaxFailureWindow         = time.Hour // service_failures keeps one hour
)

// Environment variables that override the file.
const (
	EnvDatabaseURL   = "SELFHEAL_DATABASE_URL"
	EnvWebhookToken  = "SELFHEAL_WEBHOOK_TOKEN"
	EnvRebootEnabled = "SELFHEAL_REBOOT_ENABLED"
)

// The seed system's names, understood too; selfheal's own win when both are
// set.
const (
	EnvSeedRebootEnabled = "SELF_HEALING_REBOOT_ENABLED"
	// EnvSeedEnabled=false pauses this replica: every decision is recorded
	// as skipped, nothing runs.
	EnvSeedEnabled  = "SELF_HEALING_ENABLED"
	EnvSeedLogLevel = "SELF_HEALING_LOG_LEVEL"
)

// ApplyEnvironment lets the environment override the file: the database URL
// and the webhook token, secrets that often come from the service manager.
func (c *Config) ApplyEnvironment(getenv func(string) string) {
	if v := getenv(EnvDatabaseURL); v != "" {
		c.DatabaseURL = v
	}
	if v := getenv(EnvWebhookToken); v != "" {
		c.Webhook.Token = v
	}
	if v := strings.TrimSpace(getenv(EnvNodeName)); v != "" {
		c.Node.Name = v
	}
	if c.Node.Name == "" {
		c.Node.Name = hostname()
	}
	reboot := getenv(EnvRebootEnabled)
	if reboot == "" {
		reboot = getenv(EnvSeedRebootEnabled)
	}
	c.RebootEnabled = strings.EqualFold(strings.TrimSpace(reboot), "true")
	if v := strings.TrimSpace(getenv(EnvSeedEnabled)); strings.EqualFold(v, "false") {
		c.PausedByEnvironment = EnvSeedEnabled + "=" + v
	}
	// Docker's own variable, as the docker CLI reads it; a host written in
	// the file wins.
	if v := getenv("DOCKER_HOST"); v != "" && c.Targets.Docker.hostDefaulted {
		c.Targets.Docker.Host = v
	}
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
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) { // io.EOF: an empty file
		return nil, cleanYAMLError(err, names)
	}
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// span is the lines a remediation occupies in the file.
type span struct {
	from int
	name string
}

// remediationSpans finds where each remediation starts, so a decoding error
// at a line can name the remediation it is in.
func remediationSpans(doc *yaml.Node) []span {
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	root := doc.Content[0]
	var spans []span
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != "remediations" || root.Content[i+1].Kind != yaml.SequenceNode {
			continue
		}
		for _, item := range root.Content[i+1].Content {
			s := span{from: item.Line}
			for j := 0; item.Kind == yaml.MappingNode && j+1 < len(item.Content); j += 2 {
				if item.Content[j].Value == "name" {
					s.name = item.Content[j+1].Value
				}
			}
			spans = append(spans, s)
		}
	}
	return spans
}

var (
	yamlLine     = regexp.MustCompile(`^\s*line (\d+): (.*)$`)
	unknownField = regexp.MustCompile(`^field (\S+) not found in type policy\.(\w+)$`)
	badValue     = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.+)$")
)

var sectionNames = map[string]string{
	"Config": "the top level", "Webhook": "webhook", "BasicAuth": "webhook.basic_auth",
	"Engine": "engine", "StormBrake": "engine.storm_brake", "CriticalEvents": "engine.critical_events", "Targets": "targets",
	"Docker": "targets.docker", "remediation": "remediation", "verify": "verify",
	"Exporter": "exporter", "Probe": "exporter.probes",
	"action": "action",
}

// cleanYAMLError rewrites yaml.v3's messages into "line N: remediation
// "name": unknown field "x" in verify" form, one problem a line.
func cleanYAMLError(err error, spans []span) error {
	var te *yaml.TypeError
	var msgs []string
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		line := 0
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			line, _ = strconv.Atoi(sm[1])
			m = sm[2]
		}
		if sm := unknownField.FindStringSubmatch(m); sm != nil {
			where := sectionNames[sm[2]]
			if where == "" {
				where = sm[2]
			}
			m = fmt.Sprintf("unknown field %q in %s", sm[1], where)
		} else if sm := badValue.FindStringSubmatch(m); sm != nil {
			m = fmt.Sprintf("cannot use %s %q as %s", sm[1], sm[2], goTypeName(sm[3]))
		}
		if line > 0 {
			prefix := fmt.Sprintf("line %d: ", line)
			if name, ok := remediationAt(spans, line); ok {
				prefix += fmt.Sprintf("remediation %q: ", name)
			}
			m = prefix + m
		}
		out = append(out, m)
	}
	return errors.New(strings.Join(out, "\n"))
}

func goTypeName(t string) string {
	switch {
	case t == "Duration":
		return "a duration (like 30s, 5m, 1h)"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case t == "int" || t == "int64":
		return "a whole number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	}
	return "a " + strings.TrimPrefix(t, "policy.")
}

func remediationAt(spans []span, line int) (string, bool) {
	for i := len(spans) - 1; i >= 0; i-- {
		if line >= spans[i].from {
			if spans[i].name == "" {
				return fmt.Sprintf("#%d", i+1), true
			}
			return spans[i].name, true
		}
	}
	return "", false
}

func (c *Config) setDefaults() {
	w := &c.Webhook
	if w.MaxBodyBytes == 0 {
		w.MaxBodyBytes = DefaultMaxBodyBytes
	}
	setDuration(&w.PersistTimeout, DefaultPersistTimeout)
	e := &c.Engine
	if e.Workers == 0 {
		e.Workers = DefaultWorkers
	}
	if e.MaxConcurrentActions == 0 {
		e.MaxConcurrentActions = DefaultMaxConcurrent
	}
	if e.StormBrake.MaxActions == 0 {
		e.StormBrake.MaxActions = DefaultStormMaxActions
	}
	setDuration(&e.StormBrake.Window, DefaultStormWindow)
	setDuration(&e.ReopenAfter, DefaultReopenAfter)
	setDuration(&e.PollInterval, DefaultPollInterval)
	setDuration(&e.UnreachableFor, DefaultUnreachableFor)
	setDuration(&e.RetentionInterval, DefaultRetentionInterval)
	setDuration(&e.RevertInterval, DefaultRevertInterval)
	setDuration(&e.RebootValidationDelay, DefaultRebootValidation)
	if e.CriticalEvents.Threshold == 0 {
		e.CriticalEvents.Threshold = DefaultCriticalThreshold
	}
	setDuration(&e.CriticalEvents.Window, DefaultCriticalWindow)
	setDuration(&e.CriticalEvents.Interval, DefaultCriticalInterval)
	setDuration(&c.Alertmanager.Interval, 15*time.Second)
	setDuration(&c.Alertmanager.PausedFor, 15*time.Minute)
	setDuration(&c.Alertmanager.Lookback, time.Hour)
	if c.Node.Unlabelled == "" {
		c.Node.Unlabelled = UnlabelledAct
	}
	d := &c.Targets.Docker
	if d.Host == "" {
		d.Host, d.hostDefaulted = DefaultDockerHost, true
	}
	if d.RequireLabel == "" {
		d.RequireLabel = DefaultRequireLabel
	}
	setDuration(&d.StopTimeout, DefaultStopTimeout)
	for i := range c.Exporter.Probes {
		setDuration(&c.Exporter.Probes[i].Timeout, DefaultProbeTimeout)
	}
	// Remediations get their defaults as they are decoded.
	for _, r := range c.Remediations {
		switch {
		case r == nil:
		case r.Action != nil && len(r.Steps) == 0 && len(r.Sequence) == 0:
			r.Steps = []Action{*r.Action}
		case len(r.Sequence) > 0 && len(r.Steps) == 0 && r.Action == nil:
			r.Steps, r.sequence = r.Sequence, true
		}
	}
}

func setDuration(d *Duration, def time.Duration) {
	if *d == 0 {
		*d = Duration(def)
	}
}

// problems collects validation errors, each with where it was found.
type problems []string

func (p *problems) add(where, format string, args ...any) {
	*p = append(*p, where+": "+fmt.Sprintf(format, args...))
}

func (c *Config) validate() error {
	var p problems
	w := c.Webhook
	if w.MaxBodyBytes < 0 {
		p.add("webhook", "max_body_bytes: must be positive")
	}
	if w.BasicAuth != nil {
		if w.BasicAuth.Username == "" {
			p.add("webhook", "basic_auth.username: must be set")
		}
		if w.BasicAuth.PasswordFile == "" {
			p.add("webhook", "basic_auth.password_file: must be set")
		}
		if w.BearerTokenFile != "" {
			p.add("webhook", "bearer_token_file and basic_auth: set one, not both")
		}
	}
	e := c.Engine
	for _, f := range []struct {
		name string
		v    int
	}{{"workers", e.Workers}, {"max_concurrent_actions", e.MaxConcurrentActions}, {"storm_brake.max_actions", e.StormBrake.MaxActions}} {
		if f.v < 0 {
			p.add("engine", "%s: must be positive", f.name)
		}
	}
	for _, f := range []struct {
		name string
		v    Duration
	}{{"persist_timeout", w.PersistTimeout}} {
		if f.v < 0 {
			p.add("webhook", "%s: must be positive", f.name)
		}
	}
	if u := c.Alertmanager.URL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			p.add("alertmanager", "url: %q is not an http or https URL", u)
		}
	}
	switch c.Node.Unlabelled {
	case UnlabelledAct, UnlabelledRefuse:
	default:
		p.add("node", "unlabelled: %q is not one of act, refuse", c.Node.Unlabelled)
	}
	if c.Targets.Docker.RequireLabel != "" && strings.HasPrefix(c.Targets.Docker.RequireLabel, "=") {
		p.add("targets.docker", "require_label: %q has no label name", c.Targets.Docker.RequireLabel)
	}

	probes := map[string]bool{}
	for i, pr := range c.Exporter.Probes {
		where := fmt.Sprintf("exporter.probes[%d]", i)
		switch {
		case pr.Name == "":
			p.add(where, "name: must be set")
		case probes[pr.Name]:
			p.add(where, "name: %q is used by another probe", pr.Name)
		}
		probes[pr.Name] = true
		switch pr.Type {
		case "http", "tcp", "postgres":
		default:
			p.add(where, "type: %q is not one of http, tcp, postgres", pr.Type)
		}
		if pr.Target == "" {
			p.add(where, "target: must be set")
		}
	}

	byName := map[string]*Remediation{}
	for i, r := range c.Remediations {
		if r == nil {
			p.add(fmt.Sprintf("remediation #%d", i+1), "empty entry")
			continue
		}
		where := fmt.Sprintf("remediation %q", r.Name)
		if r.Name == "" {
			where = fmt.Sprintf("remediation #%d", i+1)
			p.add(where, "name: must be set")
		} else if _, dup := byName[r.Name]; dup {
			p.add(where, "name: used by another remediation")
		} else {
			byName[r.Name] = r
		}
		r.validate(where, &p)
	}
	for _, r := range c.Remediations {
		if r == nil || r.EscalateTo == "" {
			continue
		}
		where := fmt.Sprintf("remediation %q", r.Name)
		switch to, ok := byName[r.EscalateTo]; {
		case !ok:
			p.add(where, "escalate_to: no remediation is named %q", r.EscalateTo)
		case to == r:
			p.add(where, "escalate_to: a remediation cannot escalate to itself")
		}
	}
	if len(p) > 0 {
		return errors.New(strings.Join(p, "\n"))
	}
	return nil
}

func (r *Remediation) validate(where string, p *problems) {
	if len(r.Match) == 0 {
		p.add(where, "match: needs at least one matcher")
	}
	for _, m := range r.Match {
		ms, err := labels.ParseMatchers(m)
		if err != nil {
			p.add(where, "match: %q: %v", m, err)
			continue
		}
		r.matchers = append(r.matchers, ms...)
	}
	switch r.Category {
	case CategoryA, CategoryB, CategoryC, CategoryD:
	case "":
		p.add(where, "category: must be set (A, B, C or D)")
	default:
		p.add(where, "category: %q is not one of A, B, C, D", r.Category)
	}
	if r.Target == "" {
		p.add(where, "target: must be set (a template such as '{{ .Labels.service }}')")
	} else if t, err := template.New(r.Name).Option("missingkey=zero").Parse(r.Target); err != nil {
		p.add(where, "target: %v", err)
	} else if err := t.Execute(&bytes.Buffer{}, TemplateData{}); err != nil {
		p.add(where, "target: %v", err)
	} else {
		r.target = t
	}
	switch {
	case len(r.Sequence) > 0 && !r.sequence:
		p.add(where, "sequence: set one of steps, action and sequence")
	case r.Action != nil && len(r.Steps) > 1:
		p.add(where, "steps and action: set one, not both")
	case len(r.Steps) == 0:
		p.add(where, "steps: needs at least one step (or set action or sequence)")
	}
	for i, s := range r.Steps {
		field := fmt.Sprintf("steps[%d]", i)
		switch {
		case r.sequence:
			field = fmt.Sprintf("sequence[%d]", i)
		case r.Action != nil:
			field = "action"
		}
		for _, msg := range s.problems() {
			p.add(where, "%s: %s", field, msg)
		}
	}
	if time.Duration(r.FailureWindow) > MaxFailureWindow {
		p.add(where, "failure_window: %s is longer than the %s failures are kept", r.FailureWindow, Duration(MaxFailureWindow))
	}
	if r.MaxFailures < 0 {
		p.add(where, "max_failures: must be positive")
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"failure_window", r.FailureWindow}, {"cooldown", r.Cooldown}, {"timeout", r.Timeout}, {"verify.timeout", r.Verify.Timeout}, {"verify.stable_for", r.Verify.StableFor}} {
		if d.v < 0 {
			p.add(where, "%s: must be positive", d.name)
		}
	}
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

// Names returns the remediation names in file order.
func (c *Config) Names() []string {
	var n []string
	for _, r := range c.Remediations {
		n = append(n, r.Name)
	}
	return n
}

// Remediation returns the remediation called name, or nil.
func (c *Config) Remediation(name string) *Remediation {
	for _, r := range c.Remediations {
		if r.Name == name {
			return r
		}
	}
	return nil
}
