package policy

import (
	"fmt"
	"strings"
)

// Environment variables that override the file.
const (
	EnvDatabaseURL   = "SELFHEAL_DATABASE_URL"
	EnvWebhookToken  = "SELFHEAL_WEBHOOK_TOKEN"
	EnvRebootEnabled = "SELFHEAL_REBOOT_ENABLED"
	// EnvAlertmanagerURL is alertmanager.url, for deployments that know
	// Alertmanager's address better than the file (the compose stack).
	EnvAlertmanagerURL = "SELFHEAL_ALERTMANAGER_URL"
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
// and the webhook token, secrets that often come from the service manager,
// and Alertmanager's address. A value that would be invalid in the file is
// an error here too.
func (c *Config) ApplyEnvironment(getenv func(string) string) error {
	if v := getenv(EnvDatabaseURL); v != "" {
		c.DatabaseURL = v
	}
	if v := getenv(EnvWebhookToken); v != "" {
		c.Webhook.Token = v
	}
	if v := strings.TrimSpace(getenv(EnvNodeName)); v != "" {
		c.Node.Name = v
	}
	if v := strings.TrimSpace(getenv(EnvAlertmanagerURL)); v != "" {
		if !httpURL(v) {
			return fmt.Errorf("%s: %q is not an http or https URL", EnvAlertmanagerURL, v)
		}
		c.Alertmanager.URL = v
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
	return nil
}

// seedUnread are the seed system's variables selfheal does not read, and
// where what each set lives now.
var seedUnread = []struct{ name, now string }{
	{"SELF_HEALING_INTERVAL", "selfheal acts when Alertmanager delivers an alert, not on an interval: the rules' for: and Prometheus' evaluation_interval say when"},
	{"DISK_WARNING_PERCENT", "the threshold is DiskSpaceWarning's expression in alerting/rules/host.yml (80 %)"},
	{"DISK_CLEANUP_PERCENT", "the threshold is DiskSpaceCleanup's expression in alerting/rules/host.yml (90 %)"},
	{"DISK_CRITICAL_PERCENT", "the threshold is DiskSpaceCritical's expression in alerting/rules/host.yml (95 %)"},
	{"DISK_REBOOT_PERCENT", "the threshold is DiskSpaceExhausted's expression in alerting/rules/host.yml (97 %); the reboot also needs SELFHEAL_REBOOT_ENABLED=true"},
}

// UnreadEnvironment names each of the seed's variables that is set but
// that selfheal does not read, with where that setting lives now: set and
// silently ignored, it would mislead.
func UnreadEnvironment(getenv func(string) string) []string {
	var out []string
	for _, v := range seedUnread {
		if getenv(v.name) != "" {
			out = append(out, v.name+" is set but not read: "+v.now)
		}
	}
	return out
}
