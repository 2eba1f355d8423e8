package policy

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// problem is one validation error: where it was found, in the file's
// words ("engine", "remediation \"a\"", "exporter.probes[0]"), and what is
// wrong, starting with the field it is about where there is one
// ("workers: must be positive").
// node, where set, is the part of the file where is about, when where
// alone does not find it (two remediations of one name).
type problem struct {
	where, msg string
	node       *yaml.Node
}

// problems collects validation errors.
type problems []problem

func (p *problems) add(where, format string, args ...any) {
	*p = append(*p, problem{where: where, msg: fmt.Sprintf(format, args...)})
}

// at sets the node of the problems added since the first from.
func (p problems) at(from int, n *yaml.Node) {
	for i := from; i < len(p); i++ {
		p[i].node = n
	}
}

// validate returns every problem of c, none when it is valid.
func (c *Config) validate() problems {
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
	if ch := e.Chronic; ch.MaxRemediations < 0 {
		p.add("engine", "chronic.max_remediations: must be positive (0: off)")
	} else if ch.MaxRemediations > 0 && (ch.Window <= 0 || ch.Window.D() > MaxChronicWindow) {
		p.add("engine", "chronic.window: %s must be positive and at most %s, how long actions are kept", ch.Window, Duration(MaxChronicWindow))
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
	ev := &c.Targets.Docker.Evidence
	if ev.LogLines < 0 {
		p.add("targets.docker", "evidence.log_lines: must not be negative")
	}
	if ev.LogBytes < 0 || (ev.LogLines > 0 && ev.LogBytes == 0) {
		p.add("targets.docker", "evidence.log_bytes: must be positive when log_lines is")
	}
	ev.redact = ev.redact[:0]
	for i, r := range ev.Redact {
		re, err := regexp.Compile(r)
		if err != nil {
			p.add("targets.docker", "evidence.redact[%d]: %q: %v", i, r, err)
			continue
		}
		ev.redact = append(ev.redact, re)
	}
	if c.Targets.Docker.RequireLabel != "" && strings.HasPrefix(c.Targets.Docker.RequireLabel, "=") {
		p.add("targets.docker", "require_label: %q has no label name", c.Targets.Docker.RequireLabel)
	}

	for i, a := range c.Targets.Exec.Allow {
		if !strings.HasPrefix(a, "/") {
			p.add("targets.exec", "allow[%d]: %q is not an absolute path", i, a)
		}
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
		from := len(p)
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
		r.validate(where, &p, c.Targets.Exec.allows)
		r.validateFastPath(where, c, &p)
		p.at(from, r.node)
	}
	for _, r := range c.Remediations {
		if r == nil || r.EscalateTo == "" {
			continue
		}
		from := len(p)
		where := fmt.Sprintf("remediation %q", r.Name)
		switch to, ok := byName[r.EscalateTo]; {
		case !ok:
			p.add(where, "escalate_to: no remediation is named %q", r.EscalateTo)
		case to == r:
			p.add(where, "escalate_to: a remediation cannot escalate to itself")
		}
		p.at(from, r.node)
	}
	for _, r := range c.Remediations {
		if r == nil {
			continue
		}
		from := len(p)
		for i, cause := range r.Causes {
			if cause.EscalateTo == nil || *cause.EscalateTo == "" {
				continue
			}
			switch to, ok := byName[*cause.EscalateTo]; {
			case !ok:
				p.add(fmt.Sprintf("remediation %q", r.Name), "causes[%d].escalate_to: no remediation is named %q", i, *cause.EscalateTo)
			case to == r:
				p.add(fmt.Sprintf("remediation %q", r.Name), "causes[%d].escalate_to: a remediation cannot escalate to itself", i)
			}
		}
		p.at(from, r.node)
	}
	return p
}

// lines renders the problems one per line, each with the line of the file
// it is about where doc (the parsed file; nil when there is none) has it.
func (p problems) lines(doc *yaml.Node) []string {
	out := make([]string, 0, len(p))
	for _, pr := range p {
		s := pr.where + ": " + pr.msg
		if n := locate(doc, pr); n > 0 {
			s = fmt.Sprintf("line %d: %s", n, s)
		}
		out = append(out, s)
	}
	return out
}

var (
	fieldPath = regexp.MustCompile(`^[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*$`)
	pathElem  = regexp.MustCompile(`([a-z_]+)(?:\[(\d+)\])?`)
)

// locate finds the line a problem is about: its node, or the node its
// where names, then as far down the field path its message starts with as
// the file goes. 0 when the file does not have it at all (a default, or a
// setting from the environment).
func locate(doc *yaml.Node, pr problem) int {
	n, line := pr.node, 0
	switch {
	case n != nil:
		line = n.Line
	case doc != nil && len(doc.Content) > 0 && fieldPath.MatchString(pr.where):
		n, line = walk(doc.Content[0], pr.where)
	}
	if line == 0 {
		return 0
	}
	// "action: roots: …" is the field roots of the field action.
	for field, rest, ok := strings.Cut(pr.msg, ": "); ok && fieldPath.MatchString(field); field, rest, ok = strings.Cut(rest, ": ") {
		var l int
		if n, l = walk(n, field); l == 0 {
			break
		}
		line = l
	}
	return line
}

// walk follows a dotted path with [i] indexes from n as far as the file
// has it, returning the last node found and the line of its key (or
// item): 0 when the file has not even the path's first element.
func walk(n *yaml.Node, path string) (*yaml.Node, int) {
	line := 0
	for _, e := range pathElem.FindAllStringSubmatch(path, -1) {
		k, v := mapEntry(n, e[1])
		if v == nil {
			return n, line
		}
		n, line = v, k.Line
		if e[2] != "" {
			i, _ := strconv.Atoi(e[2])
			items := seqItems(n)
			if i >= len(items) {
				return n, line
			}
			n, line = items[i], items[i].Line
		}
	}
	return n, line
}

func mapEntry(n *yaml.Node, key string) (k, v *yaml.Node) {
	for i := 0; n != nil && n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}

func seqItems(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	return n.Content
}

// allows says why exe may not be run, empty when targets.exec.allow has it.
func (e Exec) allows(exe string) string {
	for _, a := range e.Allow {
		if a == exe {
			return ""
		}
	}
	return fmt.Sprintf("%q is not in targets.exec.allow %v: list it there to let selfheal run it", exe, e.Allow)
}

// httpURL reports whether u is an absolute http or https URL.
func httpURL(u string) bool {
	pu, err := url.Parse(u)
	return err == nil && (pu.Scheme == "http" || pu.Scheme == "https") && pu.Host != ""
}
