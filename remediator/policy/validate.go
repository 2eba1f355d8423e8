package policy

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

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
		if !httpURL(u) {
			p.add("alertmanager", "url: %q is not an http or https URL", u)
		}
	}
	if err := c.Alertmanager.HTTPConfig.Validate(); err != nil {
		p.add("alertmanager", "http_config: %v", err)
	}
	switch c.Node.Unlabelled {
	case UnlabelledAct, UnlabelledRefuse:
	default:
		p.add("node", "unlabelled: %q is not one of act, refuse", c.Node.Unlabelled)
	}
	if c.Node.HeartbeatInterval < 0 || c.Node.SilentAfter < 0 {
		p.add("node", "heartbeat_interval and silent_after must be positive")
	} else if c.Node.SilentAfter < 2*c.Node.HeartbeatInterval {
		p.add("node", "silent_after (%s) must be at least twice heartbeat_interval (%s): one late heartbeat is not silence",
			c.Node.SilentAfter.D(), c.Node.HeartbeatInterval.D())
	}
	if c.Targets.Docker.RequireLabel != "" && strings.HasPrefix(c.Targets.Docker.RequireLabel, "=") {
		p.add("targets.docker", "require_label: %q has no label name", c.Targets.Docker.RequireLabel)
	}

	probes := map[string]bool{}
	for i, pr := range c.Exporter.Probes {
		where := fmt.Sprintf("exporter.probes[%d]", i)
		if probes[pr.Name] {
			p.add(where, "name: %q is used by another probe", pr.Name)
		}
		probes[pr.Name] = true
		for _, m := range pr.Problems() {
			p.add(where, "%s", m)
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
		r.validateFastPath(where, c, &p)
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

// httpURL reports whether u is an absolute http or https URL.
func httpURL(u string) bool {
	pu, err := url.Parse(u)
	return err == nil && (pu.Scheme == "http" || pu.Scheme == "https") && pu.Host != ""
}
