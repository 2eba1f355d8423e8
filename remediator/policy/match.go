package policy

import (
	"fmt"
	"strings"
	"time"
)

// TemplateData is what a target template sees: the alert.
type TemplateData struct {
	Status      string
	Labels      map[string]string
	Annotations map[string]string
	StartsAt    time.Time
	Fingerprint string
}

// Match returns the first remediation, in file order, whose matchers all
// match the alert's labels; nil when none does.
func (c *Config) Match(lset map[string]string) *Remediation {
	for _, r := range c.Remediations {
		if r.Matches(lset) {
			return r
		}
	}
	return nil
}

// Matches reports whether every matcher of r matches lset.
func (r *Remediation) Matches(lset map[string]string) bool {
	for _, m := range r.matchers {
		if !m.Matches(lset[m.Name]) {
			return false
		}
	}
	return len(r.matchers) > 0
}

// RenderTarget executes the target template over the alert. Surrounding
// white space is trimmed; an empty result is an error, so an alert without
// the expected label can never select "everything".
func (r *Remediation) RenderTarget(d TemplateData) (string, error) {
	var b strings.Builder
	if err := r.target.Execute(&b, d); err != nil {
		return "", fmt.Errorf("render target: %w", err)
	}
	t := strings.TrimSpace(b.String())
	switch {
	case t == "":
		return "", fmt.Errorf("target template %q rendered empty for this alert", r.Target)
	case len(t) > MaxTargetBytes:
		return "", fmt.Errorf("target template %q rendered %d bytes for this alert; a target may have at most %d (it is indexed)",
			r.Target, len(t), MaxTargetBytes)
	}
	return t, nil
}

// MaxTargetBytes bounds a rendered target: targets are indexed, and an
// index entry holds about 2.7 kB at most.
const MaxTargetBytes = 1024

// IsDryRun reports whether r only records what it would do.
func (c *Config) IsDryRun(r *Remediation) bool { return c.DryRun || r.DryRun }

// IsCriticalAlert reports whether an alert is a critical event when it
// starts firing: labelled severity="critical" and matched by a category C
// or D remediation (a database lost, a disk above 95 %). Such alerts count
// toward the critical-events threshold; a service down (category A) counts
// through its escalation instead.
func (c *Config) IsCriticalAlert(lset map[string]string) bool {
	if lset["severity"] != "critical" {
		return false
	}
	r := c.Match(lset)
	return r != nil && (r.Category == CategoryC || r.Category == CategoryD)
}
