package actions

import (
	"fmt"

	"github.com/selfheal/selfheal/remediator/action"
)

// What each action type can tell about the host it is configured for
// (action.Advisor): check-config prints it, serve logs it at start.
var (
	_ action.Advisor = (*HTTPParams)(nil)
	_ action.Advisor = (*VacuumParams)(nil)
	_ action.Advisor = (*LogCleanupParams)(nil)
	_ action.Advisor = (*RebootParams)(nil)
)

// Advice implements action.Advisor.
func (p *HTTPParams) Advice(action.Host) []string {
	if action.Placeholder(p.URL) {
		return []string{action.PlaceholderAdvice("url", p.URL)}
	}
	return nil
}

// Advice implements action.Advisor.
func (p *VacuumParams) Advice(action.Host) []string {
	var adv []string
	for _, db := range p.Databases {
		if action.Placeholder(db) {
			adv = append(adv, action.PlaceholderAdvice("databases", db))
		}
	}
	return adv
}

// Advice implements action.Advisor: a root that is not there has nothing
// to clean (in a container, it is a directory of the host not mounted in;
// under systemd's ProtectSystem=strict, one not in ReadWritePaths cannot be
// cleaned even when it is there).
func (p *LogCleanupParams) Advice(h action.Host) []string {
	var adv []string
	for _, r := range p.Roots {
		if !h.Exists(r) {
			adv = append(adv, fmt.Sprintf("roots: %q does not exist here: nothing under it will be cleaned", r))
		}
	}
	return adv
}

// Advice implements action.Advisor: a reboot command that cannot be run
// here (systemctl in a container) means the reboot would fail when it is
// needed most.
func (p *RebootParams) Advice(h action.Host) []string {
	if len(p.Command) == 0 || h.Executable(p.Command[0]) {
		return nil
	}
	return []string{fmt.Sprintf("command: %q cannot be run here, so this host cannot reboot itself through selfheal "+
		"(in a container: give it the host's command, see deploy/compose/docker-compose.yml)", p.Command[0])}
}
