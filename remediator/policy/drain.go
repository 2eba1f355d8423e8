package policy

import (
	"fmt"
	"net/url"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/selfheal/selfheal/remediator/action"
)

// DefaultDrainTimeout bounds a drain that sets no timeout.
const DefaultDrainTimeout = 2 * time.Minute

// Drain values of on_timeout.
const (
	DrainProceed = "proceed" // the action runs once the timeout passes
	DrainFail    = "fail"    // the action fails, not run
)

// Drain is what runs before each of a remediation's actions, opted in per
// remediation, so that the service the action disrupts has finished its
// work in flight: a hook telling it to stop taking work, then a wait
// until a PromQL expression (its requests in flight) reads 0, both within
// Timeout. It is recorded with the action.
type Drain struct {
	// HTTP, when set, is the hook: the http action's parameters (url,
	// method, headers, http_config).
	HTTP action.Params `yaml:"-"`
	// Until, when set, is the PromQL expression waited on: drained when
	// the sum of its samples is 0, or it has none.
	Until string `yaml:"until"`
	// PrometheusURL is the Prometheus Until is asked of.
	PrometheusURL string `yaml:"prometheus_url"`
	// Timeout bounds the hook and the wait together.
	Timeout Duration `yaml:"timeout"`
	// OnTimeout: DrainProceed (the default) or DrainFail.
	OnTimeout string `yaml:"on_timeout"`
}

// UnmarshalYAML decodes the drain, its http hook as the http action's
// parameters (so the hook takes exactly what that action takes).
func (d *Drain) UnmarshalYAML(n *yaml.Node) error {
	type plain Drain
	keys := struct {
		plain `yaml:",inline"`
		HTTP  yaml.Node `yaml:"http"`
	}{}
	if err := knownKeys(n, struct {
		Until         string   `yaml:"until"`
		PrometheusURL string   `yaml:"prometheus_url"`
		Timeout       Duration `yaml:"timeout"`
		OnTimeout     string   `yaml:"on_timeout"`
		HTTP          any      `yaml:"http"` // its keys are the http action's: checked as it decodes
	}{}, "drain"); err != nil {
		return err
	}
	keys.plain = plain{Timeout: Duration(DefaultDrainTimeout), OnTimeout: DrainProceed}
	if err := n.Decode(&keys); err != nil {
		return err
	}
	*d = Drain(keys.plain)
	if keys.HTTP.Kind != 0 {
		hook := keys.HTTP
		if hook.Kind != yaml.MappingNode {
			return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: drain: http: must be a mapping (url, method, headers, http_config)", hook.Line)}}
		}
		// The hook is always an http step: written without the type.
		typ := []*yaml.Node{{Kind: yaml.ScalarNode, Value: "type"}, {Kind: yaml.ScalarNode, Value: "http"}}
		hook.Content = append(typ, hook.Content...)
		var a Action
		if err := hook.Decode(&a); err != nil {
			return err
		}
		d.HTTP = a.Params
	}
	return nil
}

// problems checks the drain.
func (d *Drain) problems() []string {
	var probs []string
	if d.HTTP == nil && d.Until == "" {
		probs = append(probs, "set http (the hook), until (the PromQL expression to wait on), or both")
	}
	if d.HTTP != nil {
		for _, p := range d.HTTP.Problems() {
			probs = append(probs, "http: "+p)
		}
	}
	if d.Until != "" {
		if u, err := url.Parse(d.PrometheusURL); d.PrometheusURL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			probs = append(probs, fmt.Sprintf("prometheus_url: %q is not an http or https URL (until needs the Prometheus to ask)", d.PrometheusURL))
		}
	} else if d.PrometheusURL != "" {
		probs = append(probs, "prometheus_url: set without until")
	}
	if d.Timeout <= 0 {
		probs = append(probs, "timeout: must be positive")
	}
	if d.OnTimeout != DrainProceed && d.OnTimeout != DrainFail {
		probs = append(probs, fmt.Sprintf("on_timeout: %q is not %q or %q", d.OnTimeout, DrainProceed, DrainFail))
	}
	return probs
}
