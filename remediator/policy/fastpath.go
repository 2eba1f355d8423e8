package policy

import (
	"fmt"
	"time"

	"github.com/prometheus/alertmanager/pkg/labels"
)

// Fast-path events: what the Docker events stream reports that opens an
// occurrence at once.
const (
	FastPathDie       = "die"       // the container's main process ended
	FastPathUnhealthy = "unhealthy" // its health check turned unhealthy
)

// Labels the fast path sets on the alerts it opens.
const (
	// LabelPath is "fast" on an alert the fast path opened.
	LabelPath = "selfheal_path"
	// LabelTarget is the container the fast path saw, by name.
	LabelTarget = "selfheal_target"
)

// DefaultFastPathJoin is how long after the fast path healed an outage an
// Alertmanager alert for the same target still belongs to it: the time
// Prometheus may take to see the outage (a scrape and an evaluation).
const DefaultFastPathJoin = time.Minute

// FastPath lets the Docker events stream open a remediation's occurrence
// at once, instead of waiting for scrape → rule → Alertmanager → webhook.
// Same ladder, counting and audit; Alertmanager's delivery for the same
// outage joins the occurrence instead of acting again, and Alertmanager's
// silences are honoured. Only for category A.
type FastPath struct {
	// On is the event: die or unhealthy.
	On string `yaml:"on"`
	// JoinWithin: an Alertmanager alert for the target that started after
	// the fast path's event and no later than this after the fast path
	// healed it is the same outage.
	JoinWithin Duration `yaml:"join_within"`

	alertname string
}

// FastAlert returns the labels of the alert the fast path opens for
// container on node: the alertname the remediation matches, the container
// as its service, and the fast path's own labels.
func (r *Remediation) FastAlert(container, node string) map[string]string {
	l := map[string]string{"alertname": r.FastPath.alertname, "service": container, LabelPath: "fast", LabelTarget: container}
	if node != "" {
		l["node"] = node
	}
	return l
}

// IsFastAlert reports whether an alert's labels are the fast path's.
func IsFastAlert(l map[string]string) bool { return l[LabelPath] == "fast" }

func (r *Remediation) validateFastPath(where string, c *Config, p *problems) {
	f := r.FastPath
	if f == nil {
		return
	}
	if f.JoinWithin == 0 {
		f.JoinWithin = Duration(DefaultFastPathJoin)
	}
	switch f.On {
	case FastPathDie, FastPathUnhealthy:
	default:
		p.add(where, "fast_path.on: %q is not %s or %s", f.On, FastPathDie, FastPathUnhealthy)
	}
	if r.Category != CategoryA {
		p.add(where, "fast_path: only for category A (a container down or unhealthy)")
	}
	if f.JoinWithin < 0 {
		p.add(where, "fast_path.join_within: must be positive")
	}
	for _, m := range r.matchers {
		if m.Name == "alertname" && m.Type == labels.MatchEqual {
			f.alertname = m.Value
		}
	}
	if f.alertname == "" {
		p.add(where, `fast_path: the remediation needs an alertname="…" matcher, the alert the fast path stands for`)
		return
	}
	// Matchers on service choose the containers; any other must match
	// the fast path's alert whatever the container.
	sample := r.FastAlert("container", c.Node.Name)
	for _, m := range r.matchers {
		if m.Name != "service" && !m.Matches(sample[m.Name]) {
			p.add(where, "fast_path: the matcher %s does not match the fast path's alert %v; match on alertname and service only", m, sample)
		}
	}
	if r.target != nil {
		if t, err := r.RenderTarget(TemplateData{Labels: r.FastAlert("container", "")}); err != nil || t != "container" {
			p.add(where, "fast_path: the target must render the container's name from the alert (as '{{ .Labels.service }}' does), not %q", t)
		}
	}
	if c.Alertmanager.URL == "" {
		p.add(where, "fast_path: needs alertmanager.url, to honour people's silences before acting")
	}
}

// FastPathFor returns the first remediation whose fast path opens on event
// for container, or nil.
func (c *Config) FastPathFor(event, container string) *Remediation {
	for _, r := range c.Remediations {
		if r.FastPath != nil && r.FastPath.On == event && r.Matches(r.FastAlert(container, c.Node.Name)) {
			return r
		}
	}
	return nil
}

// String describes the fast path for logs.
func (f *FastPath) String() string { return fmt.Sprintf("on %s, join within %s", f.On, f.JoinWithin) }
