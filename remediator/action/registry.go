package action

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// Params are one action type's parameters: a pointer to a struct whose
// fields carry yaml tags. The configuration decodes a step's keys over the
// defaults its type's NewParams returns, so a key left out keeps its
// default and a key written as zero means zero.
type Params interface {
	// Problems returns what is wrong with the parameters, one message
	// each, beginning with the key it is about.
	Problems() []string
}

// Type is one registered action type.
type Type struct {
	// Name is what a configuration writes as the step's type.
	Name string
	// NewParams returns the type's parameters set to their defaults.
	NewParams func() Params
	// TakesDown: the action takes its target down for a while (a restart,
	// a stop and start), so an outage of the target that began under it
	// may be selfheal's own doing rather than the target's failure.
	TakesDown bool
}

// None is the parameters of an action type that takes none.
type None struct{}

// Problems implements Params.
func (*None) Problems() []string { return nil }

var (
	mu    sync.RWMutex
	types = map[string]Type{}
)

// Register makes an action type known, from the init function of the file
// that implements it. Registering a name twice, or parameters that are not
// a pointer to a struct, is a programming error and panics.
func Register(t Type) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := types[t.Name]; dup {
		panic(fmt.Sprintf("action: type %q registered twice", t.Name))
	}
	if p := reflect.TypeOf(t.NewParams()); p == nil || p.Kind() != reflect.Pointer || p.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("action: parameters of %q are %v, not a pointer to a struct", t.Name, p))
	}
	types[t.Name] = t
}

// Lookup returns the action type called name.
func Lookup(name string) (Type, bool) {
	mu.RLock()
	defer mu.RUnlock()
	t, ok := types[name]
	return t, ok
}

// Types returns the names of the registered action types, sorted.
func Types() []string {
	mu.RLock()
	defer mu.RUnlock()
	names := make([]string, 0, len(types))
	for n := range types {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// TakingDown returns the names of the registered action types that take
// their target down (Type.TakesDown), sorted.
func TakingDown() []string {
	mu.RLock()
	defer mu.RUnlock()
	var names []string
	for n, t := range types {
		if t.TakesDown {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Keys returns the yaml keys a type's parameters accept.
func (t Type) Keys() []string {
	st := reflect.TypeOf(t.NewParams()).Elem()
	var keys []string
	for i := range st.NumField() {
		f := st.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		keys = append(keys, name)
	}
	return keys
}
