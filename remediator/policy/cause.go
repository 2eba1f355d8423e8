package policy

import (
	"fmt"
	"strings"
	"time"

	"github.com/selfheal/selfheal/remediator/action"
)

// Cause is a branch of a remediation chosen by what the target's evidence
// says — killed for memory, a given exit code, dead within seconds of
// starting — so that, say, an OOM loop goes to people after one restart
// while an ordinary crash keeps the ladder. The first cause whose When
// holds applies; its settings replace the remediation's. Failures are
// counted as the remediation's whatever the branch.
type Cause struct {
	Name string    `yaml:"name"`
	When CauseWhen `yaml:"when"`
	// MaxFailures and EscalateTo, when set, replace the remediation's:
	// escalate_to: '' hands the target to people when max_failures is
	// reached (SelfhealGaveUp, with the evidence).
	MaxFailures *int    `yaml:"max_failures"`
	EscalateTo  *string `yaml:"escalate_to"`
}

// CauseWhen is what the evidence must say; every condition set must hold.
type CauseWhen struct {
	// OOMKilled: the kernel killed the target's last run for memory (or,
	// false, it did not).
	OOMKilled *bool `yaml:"oom_killed"`
	// ExitCodes: its last run exited with one of these.
	ExitCodes []int `yaml:"exit_codes"`
	// DiedWithin: its last run lasted less than this (a configuration
	// error, a missing dependency: restarting will not help).
	DiedWithin Duration `yaml:"died_within"`
}

// Holds reports whether the evidence's facts meet every condition, and
// says so in the decision's words.
func (w CauseWhen) Holds(f action.Facts) (bool, string) {
	if !f.Stopped {
		return false, ""
	}
	var why []string
	if w.OOMKilled != nil {
		if f.OOMKilled != *w.OOMKilled {
			return false, ""
		}
		why = append(why, map[bool]string{true: "OOM-killed", false: "not OOM-killed"}[f.OOMKilled])
	}
	if len(w.ExitCodes) > 0 {
		found := false
		for _, c := range w.ExitCodes {
			found = found || c == f.ExitCode
		}
		if !found {
			return false, ""
		}
		why = append(why, fmt.Sprintf("exit code %d", f.ExitCode))
	}
	if d := w.DiedWithin.D(); d > 0 {
		if f.RanFor <= 0 || f.RanFor >= d {
			return false, ""
		}
		why = append(why, fmt.Sprintf("died %s after starting (within %s)", f.RanFor.Round(time.Millisecond), w.DiedWithin))
	}
	return true, strings.Join(why, ", ")
}

// HasCauses reports whether the remediation chooses by the cause.
func (r *Remediation) HasCauses() bool { return len(r.Causes) > 0 }

// CauseMatters reports whether a cause could decide a target with this
// many failures in the window differently from the remediation itself: a
// cause changes only when it escalates and to what, so only from the
// smallest max_failures among the remediation's and its causes'. Below
// it, the evidence need not be read (a storm of first outages costs no
// Docker call more).
func (r *Remediation) CauseMatters(failures int) bool {
	if !r.HasCauses() {
		return false
	}
	least := r.MaxFailures
	for _, c := range r.Causes {
		if m := least; c.MaxFailures != nil && *c.MaxFailures > 0 && (m == 0 || *c.MaxFailures < m) {
			least = *c.MaxFailures
		}
	}
	return least > 0 && failures >= least
}

// ForCause returns the remediation as the first cause whose conditions
// the facts meet makes it — a copy with that cause's settings — and why;
// r itself and "" when none does.
func (r *Remediation) ForCause(f action.Facts) (*Remediation, string) {
	for _, c := range r.Causes {
		ok, why := c.When.Holds(f)
		if !ok {
			continue
		}
		cp := *r
		if c.MaxFailures != nil {
			cp.MaxFailures = *c.MaxFailures
		}
		if c.EscalateTo != nil {
			cp.EscalateTo = *c.EscalateTo
		}
		return &cp, fmt.Sprintf("cause %s (%s)", c.Name, why)
	}
	return r, ""
}

func (r *Remediation) validateCauses(where string, p *problems) {
	names := map[string]bool{}
	for i, c := range r.Causes {
		field := fmt.Sprintf("causes[%d]", i)
		if c.Name == "" {
			p.add(where, "%s.name: must be set", field)
		} else if names[c.Name] {
			p.add(where, "%s.name: %q is used by another cause", field, c.Name)
		}
		names[c.Name] = true
		w := c.When
		if w.OOMKilled == nil && len(w.ExitCodes) == 0 && w.DiedWithin == 0 {
			p.add(where, "%s.when: needs at least one of oom_killed, exit_codes, died_within", field)
		}
		for _, code := range w.ExitCodes {
			if code < 0 || code > 255 {
				p.add(where, "%s.when: exit_codes: %d is not an exit code (0–255)", field, code)
			}
		}
		if w.DiedWithin < 0 {
			p.add(where, "%s.when: died_within: must be positive", field)
		}
		if c.MaxFailures != nil && *c.MaxFailures < 0 {
			p.add(where, "%s.max_failures: must be positive", field)
		}
		if c.MaxFailures == nil && c.EscalateTo == nil {
			p.add(where, "%s: changes nothing: set max_failures or escalate_to", field)
		}
	}
	if len(r.Causes) > 0 && r.Category != CategoryA {
		p.add(where, "causes: only for category A (a container down: its evidence says why)")
	}
}
