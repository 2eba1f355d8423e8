package policy

import (
	"reflect"
	"strings"
)

// startOnly are the settings read only when selfheal starts — they size
// pools and loops, open the listener's credentials, the database, the
// Docker Engine and the hand-off — each with how to read it. Every other
// setting takes effect on reload: the remediations, dry-run, the limits,
// what selfheal may touch (targets.docker's opt-in and stop timeout, for
// jobs already queued too), the node's aliases and unlabelled, the
// hand-off's timing and the status page.
var startOnly = []struct {
	name string
	of   func(*Config) any
}{
	{"database_url", func(c *Config) any { return c.DatabaseURL }},
	{"node.name", func(c *Config) any { return strings.ToLower(c.Node.Name) }},
	{"node.fleet", func(c *Config) any { return c.Node.Fleet }},
	{"node.heartbeat_interval", func(c *Config) any { return c.Node.HeartbeatInterval }},
	{"node.silent_after", func(c *Config) any { return c.Node.SilentAfter }},
	{"webhook.bearer_token_file", func(c *Config) any { return c.Webhook.BearerTokenFile }},
	{"webhook.basic_auth", func(c *Config) any { return c.Webhook.BasicAuth }},
	{"webhook.allow_unauthenticated", func(c *Config) any { return c.Webhook.AllowUnauthenticated }},
	{"webhook.max_body_bytes", func(c *Config) any { return c.Webhook.MaxBodyBytes }},
	{"webhook.persist_timeout", func(c *Config) any { return c.Webhook.PersistTimeout }},
	{"engine.workers", func(c *Config) any { return c.Engine.Workers }},
	{"engine.reopen_after", func(c *Config) any { return c.Engine.ReopenAfter }},
	{"engine.retention_interval", func(c *Config) any { return c.Engine.RetentionInterval }},
	{"engine.revert_interval", func(c *Config) any { return c.Engine.RevertInterval }},
	{"engine.critical_events.interval", func(c *Config) any { return c.Engine.CriticalEvents.Interval }},
	{"targets.docker.host", func(c *Config) any { return c.Targets.Docker.Host }},
	{"exporter.probes", func(c *Config) any { return c.Exporter.Probes }},
	{"alertmanager.url", func(c *Config) any { return c.Alertmanager.URL }},
	{"alertmanager.http_config", func(c *Config) any { return c.Alertmanager.HTTPConfig }},
}

// StartOnlyChanges names the settings that differ between the running
// configuration c and next but take effect only at start. A reload that
// changes any of them is refused as a whole, naming them, rather than put
// in force in part: a reload never leaves selfheal running with settings
// other than the file says without saying so.
func (c *Config) StartOnlyChanges(next *Config) []string {
	var changed []string
	for _, s := range startOnly {
		if !reflect.DeepEqual(s.of(c), s.of(next)) {
			changed = append(changed, s.name)
		}
	}
	return changed
}
