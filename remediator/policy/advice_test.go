package policy

import (
	"slices"
	"testing"

	"github.com/selfheal/selfheal/remediator/action"
)

func TestAdvice(t *testing.T) {
	cfg, err := Parse([]byte(`
alertmanager: {url: ''}
exporter:
  probes:
    - {name: database, type: postgres, target: 'postgres://app@localhost/app?sslmode=disable'}
    - {name: api, type: http, target: 'http://api:8080/healthz'}
remediations:
  - name: cache
    match: ['alertname="HostCPUHigh"']
    category: B
    target: llm
    action: {type: http, url: 'http://localhost:8000/v1/cache/clear'}
  - name: cleanup
    match: ['alertname="DiskSpaceCleanup"']
    category: C
    target: disk
    sequence:
      - {type: log_cleanup, roots: [/srv/logs, /srv/gone], patterns: ['*.gz']}
      - {type: vacuum, databases: ['postgres://app@localhost/app', 'postgres://db.internal/app']}
  - name: reboot
    match: ['alertname="DiskSpaceExhausted"']
    category: D
    target: host
    action: {type: reboot, command: [systemctl, reboot]}
`))
	if err != nil {
		t.Fatal(err)
	}
	host := action.Host{
		Exists:     func(p string) bool { return p == "/srv/logs" },
		Executable: func(name string) bool { return name == "sh" },
	}
	want := []string{
		`alertmanager: url is not set (nor SELFHEAL_ALERTMANAGER_URL): what selfheal cannot fix — escalations, failed and refused actions — is not handed off to people, only recorded`,
		`exporter.probes[0]: target: "postgres://app@localhost/app?sslmode=disable" is the example configuration's placeholder: point it at your own service, or remove it (its alert fires at once where that service does not run)`,
		`remediation "cache": action: http: url: "http://localhost:8000/v1/cache/clear" is the example configuration's placeholder: point it at your own service, or remove it`,
		`remediation "cleanup": sequence[0]: log_cleanup: roots: "/srv/gone" does not exist here: nothing under it will be cleaned`,
		`remediation "cleanup": sequence[1]: vacuum: databases: "postgres://app@localhost/app" is the example configuration's placeholder: point it at your own service, or remove it`,
		`remediation "reboot": action: reboot: command: "systemctl" cannot be run here, so this host cannot reboot itself through selfheal (in a container: give it the host's command, see deploy/compose/docker-compose.yml)`,
	}
	if got := cfg.Advice(host); !slices.Equal(got, want) {
		t.Errorf("advice:\n%s\nwant:\n%s", join(got), join(want))
	}

	// Everything configured for this host: nothing to say.
	cfg, err = Parse([]byte(`
alertmanager: {url: 'http://alertmanager:9093'}
remediations:
  - name: reboot
    match: ['alertname="DiskSpaceExhausted"']
    category: D
    target: host
    action: {type: reboot, command: [sh, -c, 'reboot']}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Advice(host); len(got) != 0 {
		t.Errorf("advice for a configuration fit for its host: %q", got)
	}
}

func join(s []string) string {
	out := ""
	for _, l := range s {
		out += "  " + l + "\n"
	}
	return out
}
