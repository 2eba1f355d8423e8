// Package optin is the one rule for which containers selfheal may touch
// and which its exporter reports: a container carrying the opt-in label, or
// one listed by name in targets.docker.containers. Nothing else, ever.
package optin

import (
	"sort"
	"strings"
)

// Rule says which containers are opted in.
type Rule struct {
	key, value string
	anyValue   bool
	names      map[string]bool
}

// New returns the rule for label ("key=value", or "key" for any value; empty
// for none) and names (with or without Docker's leading "/").
func New(label string, names []string) Rule {
	r := Rule{names: map[string]bool{}}
	r.key, r.value, _ = strings.Cut(label, "=")
	r.anyValue = !strings.Contains(label, "=")
	for _, n := range names {
		r.names[strings.TrimPrefix(n, "/")] = true
	}
	return r
}

// Allows reports whether the container called name with these labels is
// opted in.
func (r Rule) Allows(name string, labels map[string]string) bool {
	if r.names[strings.TrimPrefix(name, "/")] {
		return true
	}
	v, ok := labels[r.key]
	return r.key != "" && ok && (r.anyValue || v == r.value)
}

// Label is the opt-in label as Docker's label filter takes it ("key" or
// "key=value"); empty when there is none.
func (r Rule) Label() string {
	if r.key == "" || r.anyValue {
		return r.key
	}
	return r.key + "=" + r.value
}

// Names returns the containers opted in by name, sorted.
func (r Rule) Names() []string {
	names := make([]string, 0, len(r.names))
	for n := range r.names {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
