package actions

import (
	"slices"
	"testing"

	"github.com/selfheal/selfheal/remediator/action"
)

// Every action type this package registers has an executor, and its
// parameters take no key named type (the step's own).
func TestRegistry(t *testing.T) {
	t.Parallel()
	execs := Registry(Deps{})
	for _, name := range action.Types() {
		if !slices.ContainsFunc(kinds, func(k kind) bool { return k.name == name }) {
			continue // registered elsewhere (a test's own type)
		}
		if execs[name] == nil {
			t.Errorf("%s: no executor", name)
		}
		typ, _ := action.Lookup(name)
		if slices.Contains(typ.Keys(), "type") {
			t.Errorf("%s: a parameter is called type", name)
		}
	}
	if len(execs) != len(kinds) || len(kinds) < 11 {
		t.Errorf("%d executors for %d types", len(execs), len(kinds))
	}
}

// A request built without parameters runs with the type's defaults.
func TestParamsOfDefaults(t *testing.T) {
	t.Parallel()
	p := paramsOf[*StopStartParams](action.Request{}, newStopStartParams)
	if p.Wait.D() != DefaultStopStartWait {
		t.Errorf("wait = %s", p.Wait)
	}
	given := &StopStartParams{Wait: 0}
	if paramsOf[*StopStartParams](action.Request{Params: given}, newStopStartParams) != given {
		t.Error("the request's own parameters were not used")
	}
}

// The actions that take their target down, whose outages may be
// selfheal's own doing: a restart and a stop and start, of one container.
func TestTakingDown(t *testing.T) {
	t.Parallel()
	if got := action.TakingDown(); !slices.Equal(got, []string{"restart", "stop_start"}) {
		t.Errorf("action.TakingDown() = %v", got)
	}
}
