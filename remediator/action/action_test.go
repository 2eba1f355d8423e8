package action_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/selfheal/selfheal/remediator/action"
)

// A refusal's severity is written to the audit trail as is: each must be
// one the schema accepts.
func TestRefusalSeveritiesAreStored(t *testing.T) {
	for _, s := range action.Severities {
		if !slices.Contains(model.Severities, model.Severity(s)) {
			t.Errorf("refusal severity %s is not one of the audit trail's %v", s, model.Severities)
		}
	}
}

type testParams struct {
	Wait    action.Duration `yaml:"wait"`
	Targets []string        `yaml:"targets,omitempty"`
	Hidden  string          `yaml:"-"`
	Plain   int
}

func (*testParams) Problems() []string { return nil }

func TestRegistry(t *testing.T) {
	action.Register(action.Type{Name: "test_registry", NewParams: func() action.Params { return &testParams{} }})
	typ, ok := action.Lookup("test_registry")
	if !ok || !slices.Contains(action.Types(), "test_registry") {
		t.Fatalf("registered type not found: %v", action.Types())
	}
	if got := strings.Join(typ.Keys(), ","); got != "wait,targets,plain" {
		t.Errorf("keys = %s", got)
	}
	if _, ok := action.Lookup("no_such_type"); ok {
		t.Error("an unregistered type was found")
	}
	for name, tc := range map[string]action.Type{
		"twice":      {Name: "test_registry", NewParams: func() action.Params { return &testParams{} }},
		"not struct": {Name: "test_bad", NewParams: func() action.Params { return nil }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Register did not panic", name)
				}
			}()
			action.Register(tc)
		}()
	}
}
