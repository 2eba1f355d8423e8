package policy

import (
	"bytes"
	"fmt"
	"text/template"
	"time"

	"github.com/prometheus/alertmanager/pkg/labels"
	"go.yaml.in/yaml/v3"

	"github.com/selfheal/selfheal/remediator/action"
)

// Categories of remediation, as in the A–D table of docs/design.md.
const (
	CategoryA = "A" // service or container down: restart ladder
	CategoryB = "B" // overload
	CategoryC = "C" // critical recovery
	CategoryD = "D" // guarded reboot
)

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
	// FastPath, when set, lets the Docker events stream open this
	// remediation's occurrences at once.
	FastPath *FastPath `yaml:"fast_path"`
	// Causes choose by what the target's evidence says (Cause).
	Causes []Cause `yaml:"causes"`
	// Drain, when set, runs before each of the remediation's actions.
	Drain *Drain `yaml:"drain"`

	matchers labels.Matchers
	target   *template.Template
	sequence bool
	node     *yaml.Node // where in the file, for problems' lines
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
	r.node = n
	return nil
}

// validate checks r; exe, when set, says why a program an action would
// run is not allowed (empty when it is).
func (r *Remediation) validate(where string, p *problems, exe func(string) string) {
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
		if e, ok := s.Params.(action.Executable); ok && exe != nil {
			if msg := exe(e.Executable()); msg != "" {
				p.add(where, "%s: command: %s", field, msg)
			}
		}
	}
	if time.Duration(r.FailureWindow) > MaxFailureWindow {
		p.add(where, "failure_window: %s is longer than the %s failures are kept", r.FailureWindow, Duration(MaxFailureWindow))
	}
	if r.MaxFailures < 0 {
		p.add(where, "max_failures: must be positive")
	}
	r.validateCauses(where, p)
	if r.Drain != nil {
		for _, msg := range r.Drain.problems() {
			p.add(where, "drain: %s", msg)
		}
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
