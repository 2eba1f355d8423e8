package actions

import (
	"net/http"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/containers"
)

// Deps are what the actions act through.
type Deps struct {
	Docker        *containers.Client
	GPUs          GPUs
	Store         RebootStore
	RebootEnabled bool
	// ProcPath is the host's /proc (default /proc).
	ProcPath   string
	HTTPClient *http.Client
	// BootID overrides the kernel's boot ID (tests).
	BootID func() (string, error)
}

// kind is one action type this package implements.
type kind struct {
	name     string
	params   func() action.Params
	executor func(Deps) action.Executor
}

var kinds []kind

// register makes an action type known to the configuration (its name and
// parameters, through package action) and to Registry (its executor). Each
// action's file calls it from init, so a new action type is one new file.
func register(name string, params func() action.Params, executor func(Deps) action.Executor) {
	registerType(action.Type{Name: name, NewParams: params}, executor)
}

// registerType is register with the whole action.Type (its traits).
func registerType(t action.Type, executor func(Deps) action.Executor) {
	action.Register(t)
	kinds = append(kinds, kind{t.Name, t.NewParams, executor})
}

// noParams is the parameters of an action that takes none.
func noParams() action.Params { return &action.None{} }

// paramsOf returns a request's parameters as the executor's own type, or
// the type's defaults for a request that carries none.
func paramsOf[P action.Params](req action.Request, defaults func() action.Params) P {
	if p, ok := req.Params.(P); ok {
		return p
	}
	return defaults().(P)
}

// Registry returns an executor for every action type this build knows.
func Registry(d Deps) map[string]action.Executor {
	m := make(map[string]action.Executor, len(kinds))
	for _, k := range kinds {
		m[k.name] = k.executor(d)
	}
	return m
}
