package policy

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestYAMLErrors pins both halves of the rewriting: the raw wording
// yaml.v3 uses (so that an upgrade which changes it fails here, not in an
// operator's terminal) and what cleanYAMLError makes of it.
func TestYAMLErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml, raw, want string
	}{
		"unknown top-level key": {
			"databse_url: x\n",
			"line 1: field databse_url not found in type policy.Config",
			`line 1: unknown field "databse_url" in the top level`,
		},
		"unknown key in a section": {
			"engine:\n  wrokers: 2\n",
			"line 2: field wrokers not found in type policy.Engine",
			`line 2: unknown field "wrokers" in engine`,
		},
		"unknown key of a probe": {
			"exporter:\n  probes:\n    - {name: db, type: tcp, target: 'x:1', timout: 1s}\n",
			"line 3: field timout not found in type probe.Probe",
			`line 3: unknown field "timout" in exporter.probes`,
		},
		"duration": {
			"remediations:\n  - {name: a, cooldown: 5x}\n",
			"line 2: cannot unmarshal !!str `5x` into Duration",
			`line 2: remediation "a": cannot use str "5x" as a duration (like 30s, 5m, 1h)`,
		},
		"probe timeout": {
			"exporter:\n  probes:\n    - {name: db, type: tcp, target: 'x:1', timeout: soon}\n",
			"line 3: cannot unmarshal !!str `soon` into time.Duration",
			`line 3: cannot use str "soon" as a duration (like 30s, 5m, 1h)`,
		},
		"whole number": {
			"engine:\n  workers: many\n",
			"line 2: cannot unmarshal !!str `many` into int",
			`line 2: cannot use str "many" as a whole number`,
		},
		"boolean": {
			"dry_run: sometimes\n",
			"line 1: cannot unmarshal !!str `sometimes` into bool",
			`line 1: cannot use str "sometimes" as true or false`,
		},
		"list": {
			"remediations:\n  - {name: a, match: 'a=\"b\"'}\n",
			"line 2: cannot unmarshal !!str `a=\"b\"` into []string",
			`line 2: remediation "a": cannot use str "a=\"b\"" as a list`,
		},
		"mapping": {
			"webhook: yes\n",
			"line 1: cannot unmarshal !!str `yes` into policy.Webhook",
			`line 1: cannot use str "yes" as a Webhook`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			dec := yaml.NewDecoder(strings.NewReader(tc.yaml))
			dec.KnownFields(true)
			var c Config
			raw := dec.Decode(&c)
			if raw == nil || !strings.Contains(raw.Error(), tc.raw) {
				t.Errorf("yaml.v3 now says:\n%v\nwhere this test expects:\n%s", raw, tc.raw)
			}
			_, err := Parse([]byte(tc.yaml))
			if err == nil || err.Error() != tc.want {
				t.Errorf("Parse:\n%v\nwant:\n%s", err, tc.want)
			}
		})
	}
}
