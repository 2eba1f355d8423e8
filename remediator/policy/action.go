package policy

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/selfheal/selfheal/remediator/action"
)

// Duration is a time.Duration written the Prometheus way: 30s, 5m, 1h30m, 7d.
type Duration = action.Duration

// Action is one remediation step: an action type and its parameters, of
// the kind that type registered with package action.
type Action struct {
	Type   string
	Params action.Params
}

// UnmarshalYAML accepts a bare type name ("restart") or a mapping with a
// type and that type's keys. Keys of another type, or of none, are errors.
// An unknown type is left for validation, which reports it with the list
// of known ones.
func (a *Action) UnmarshalYAML(n *yaml.Node) error {
	*a = Action{}
	if n.Kind == yaml.ScalarNode {
		a.Type = n.Value
		if t, ok := action.Lookup(a.Type); ok {
			a.Params = t.NewParams()
		}
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: an action is a type name or a mapping", n.Line)}}
	}
	rest := *n
	rest.Content = nil
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "type" {
			a.Type = n.Content[i+1].Value
			continue
		}
		rest.Content = append(rest.Content, n.Content[i], n.Content[i+1])
	}
	if a.Type == "" {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: action has no type", n.Line)}}
	}
	t, ok := action.Lookup(a.Type)
	if !ok {
		return nil
	}
	keys := t.Keys()
	var errs []string
	for i := 0; i+1 < len(rest.Content); i += 2 {
		switch k := rest.Content[i]; {
		case contains(keys, k.Value):
		case anyTypeTakes(k.Value):
			errs = append(errs, fmt.Sprintf("line %d: %s does not apply to action type %s", k.Line, k.Value, a.Type))
		default: // worded as yaml.v3 words it, for cleanYAMLError
			errs = append(errs, fmt.Sprintf("line %d: field %s not found in type policy.action", k.Line, k.Value))
		}
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	a.Params = t.NewParams()
	return rest.Decode(a.Params)
}

// MarshalYAML writes the step as the mapping it was read from.
func (a Action) MarshalYAML() (any, error) {
	m := map[string]any{}
	if a.Params != nil {
		var n yaml.Node
		if err := n.Encode(a.Params); err != nil {
			return nil, err
		}
		if err := n.Decode(&m); err != nil {
			return nil, err
		}
	}
	m["type"] = a.Type
	return m, nil
}

// anyTypeTakes reports whether some action type has the key.
func anyTypeTakes(key string) bool {
	for _, name := range action.Types() {
		if t, _ := action.Lookup(name); contains(t.Keys(), key) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// problems returns what is wrong with the action, one message each.
func (a Action) problems() []string {
	if _, known := action.Lookup(a.Type); !known {
		return []string{fmt.Sprintf("unknown action type %q (known: %s)", a.Type, strings.Join(action.Types(), ", "))}
	}
	if a.Params == nil {
		return nil // built in code without parameters: the executor uses its defaults
	}
	return a.Params.Problems()
}
