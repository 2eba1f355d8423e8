package policy

import (
	"fmt"

	"github.com/selfheal/selfheal/remediator/action"
)

// Advice returns what in a valid configuration will not work as written on
// host h, or is left at an example's placeholder: probes whose alert would
// fire on a host without the example's services, directories that are not
// there, a reboot command that cannot run, no hand-off to people. Each
// message begins with where it is. `selfheal check-config` prints them and
// `selfheal serve` logs them at start; none is an error.
func (c *Config) Advice(h action.Host) []string {
	var p problems
	if c.Alertmanager.URL == "" {
		p.add("alertmanager", "url is not set (nor %s): what selfheal cannot fix — escalations, failed and refused actions — "+
			"is not handed off to people, only recorded", EnvAlertmanagerURL)
	}
	for i, pr := range c.Exporter.Probes {
		if action.Placeholder(pr.Target) {
			p.add(fmt.Sprintf("exporter.probes[%d]", i), "%s", action.PlaceholderAdvice("target", pr.Target)+
				" (its alert fires at once where that service does not run)")
		}
	}
	for _, r := range c.Remediations {
		for i, s := range r.Steps {
			adv, ok := s.Params.(action.Advisor)
			if !ok {
				continue
			}
			field := fmt.Sprintf("steps[%d]", i)
			if r.sequence {
				field = fmt.Sprintf("sequence[%d]", i)
			} else if r.Action != nil {
				field = "action"
			}
			for _, msg := range adv.Advice(h) {
				p.add(fmt.Sprintf("remediation %q", r.Name), "%s: %s: %s", field, s.Type, msg)
			}
		}
	}
	return p.lines(nil)
}
