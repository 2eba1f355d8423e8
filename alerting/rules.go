package alerting

import (
	"embed"
	"fmt"
	"io/fs"

	"go.yaml.in/yaml/v3"
)

// Rules are the shipped Prometheus rule files (rules/*.yml).
//
//go:embed rules/*.yml
var Rules embed.FS

// StaticLabels returns the labels the shipped rule named alertname gives
// its alerts (category, severity), or nil when no shipped rule has that
// name: what `selfheal simulate` adds so that a test alert is routed as a
// real one would be.
func StaticLabels(alertname string) (map[string]string, error) {
	files, err := fs.Glob(Rules, "rules/*.yml")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := Rules.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var rf struct {
			Groups []struct {
				Rules []struct {
					Alert  string            `yaml:"alert"`
					Labels map[string]string `yaml:"labels"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(b, &rf); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				if r.Alert == alertname {
					return r.Labels, nil
				}
			}
		}
	}
	return nil, nil
}
