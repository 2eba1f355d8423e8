// Package optin is the one rule for which containers selfheal may touch
// and which its exporter reports: a container carrying the opt-in label, or
// one listed by name in targets.docker.containers. Nothing else, ever.
package optin

import (
	"sort"
	"strings"
	"sync"
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

// Current is the rule in force, which a reload replaces: every check reads
// it anew, so a withdrawn opt-in takes effect at once, for jobs already
// queued too. Changed lets a follower of Docker's events (the docker
// collector) list the containers again under the new rule.
type Current struct {
	mu      sync.Mutex
	rule    Rule
	changed chan struct{}
}

// NewCurrent returns r in force.
func NewCurrent(r Rule) *Current { return &Current{rule: r, changed: make(chan struct{})} }

// Rule is the rule in force now.
func (c *Current) Rule() Rule {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rule
}

// Set puts r in force and wakes those waiting on Changed.
func (c *Current) Set(r Rule) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rule = r
	close(c.changed)
	c.changed = make(chan struct{})
}

// Changed is closed when the rule next changes.
func (c *Current) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}
