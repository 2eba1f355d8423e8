package containers

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Compose's labels, as docker compose sets them on every container.
const (
	LabelProject   = "com.docker.compose.project"
	LabelService   = "com.docker.compose.service"
	LabelDependsOn = "com.docker.compose.depends_on"
	LabelNumber    = "com.docker.compose.container-number"
)

// Node is one container as the dependency graph sees it.
type Node struct {
	ID, Name string
	Labels   map[string]string
	// Running is whether it ran when the graph was read.
	Running bool
	// Project and Service are compose's; empty for a container compose did
	// not create.
	Project, Service string
	Number           int
	// NetworkOf is the container whose network namespace this one shares
	// (network_mode: container:<name>, or service:<name> in compose), by
	// name; empty for none.
	NetworkOf string
	// DependsOn are the compose services this one depends on.
	DependsOn []Dependency
}

// Dependency is one entry of compose's depends_on label.
type Dependency struct {
	Service string
	// Restart is compose's restart: true — restart this container when
	// the service it depends on is restarted.
	Restart bool
}

// Graph is the containers of one host and what depends on what: shared
// network namespaces, which Docker itself records, and compose's
// depends_on. It is read from Docker in one listing, so it is never stale
// by more than the action that reads it.
type Graph struct {
	nodes  map[string]*Node // by name
	byID   map[string]*Node
	sorted []string // names
}

// Graph lists every container of the host, opted in or not (a dependent
// that is not opted in is reported, never touched), and builds the graph.
func (c *Client) Graph(ctx context.Context) (*Graph, error) {
	list, err := c.api.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return nil, unreachable{fmt.Errorf("list containers: %w", err)}
	}
	return NewGraph(list.Items), nil
}

// NewGraph builds the graph from a container listing.
func NewGraph(list []container.Summary) *Graph {
	g := &Graph{nodes: map[string]*Node{}, byID: map[string]*Node{}}
	for _, s := range list {
		if len(s.Names) == 0 {
			continue
		}
		n := &Node{ID: s.ID, Name: strings.TrimPrefix(s.Names[0], "/"), Labels: s.Labels,
			Project: s.Labels[LabelProject], Service: s.Labels[LabelService]}
		n.Number, _ = strconv.Atoi(s.Labels[LabelNumber])
		n.Running = s.State == container.StateRunning
		if mode, ok := strings.CutPrefix(s.HostConfig.NetworkMode, "container:"); ok {
			n.NetworkOf = mode // an ID or a name: resolved below
		}
		n.DependsOn = parseDependsOn(s.Labels[LabelDependsOn])
		g.nodes[n.Name] = n
		g.byID[n.ID] = n
		g.sorted = append(g.sorted, n.Name)
	}
	sort.Strings(g.sorted)
	for _, n := range g.nodes {
		if n.NetworkOf != "" {
			if o := g.find(n.NetworkOf); o != nil {
				n.NetworkOf = o.Name
			}
		}
	}
	return g
}

// parseDependsOn reads compose's depends_on label:
// "db:service_healthy:true,cache:service_started:false".
func parseDependsOn(v string) []Dependency {
	var deps []Dependency
	for _, entry := range strings.Split(v, ",") {
		parts := strings.Split(strings.TrimSpace(entry), ":")
		if parts[0] == "" {
			continue
		}
		d := Dependency{Service: parts[0]}
		if len(parts) >= 3 {
			d.Restart = parts[2] == "true"
		}
		deps = append(deps, d)
	}
	return deps
}

// find returns the container called name, or with that ID or ID prefix.
func (g *Graph) find(name string) *Node {
	name = strings.TrimPrefix(name, "/")
	if n := g.nodes[name]; n != nil {
		return n
	}
	if n := g.byID[name]; n != nil {
		return n
	}
	if len(name) >= 12 {
		for id, n := range g.byID {
			if strings.HasPrefix(id, name) {
				return n
			}
		}
	}
	return nil
}

// Node returns the container called name (or with that ID).
func (g *Graph) Node(name string) (*Node, bool) {
	n := g.find(name)
	return n, n != nil
}

// dependsOn reports whether a depends on b, and whether a restart of b
// must restart a: a shares b's network namespace (always), or a compose
// depends_on of a names b's service (restart when it says restart: true).
func dependsOn(a, b *Node) (depends, restart bool) {
	if a.NetworkOf == b.Name {
		return true, true
	}
	if a.Project == "" || a.Project != b.Project || b.Service == "" {
		return false, false
	}
	for _, d := range a.DependsOn {
		if d.Service == b.Service {
			return true, d.Restart
		}
	}
	return false, false
}

// Needs returns the containers name depends on, by name.
func (g *Graph) Needs(name string) []string {
	a := g.find(name)
	if a == nil {
		return nil
	}
	var needs []string
	for _, b := range g.sorted {
		if dep, _ := dependsOn(a, g.nodes[b]); dep && b != a.Name {
			needs = append(needs, b)
		}
	}
	return needs
}

// Order is the result of ordering a set of containers by their
// dependencies.
type Order struct {
	// Names, each after every container it depends on.
	Names []string
	// Cycle, when set, are containers that depend on each other in a
	// circle; they are not in Names.
	Cycle []string
}

// Dependents returns the containers a restart of target leaves broken —
// those sharing its network namespace, those whose compose depends_on on
// it says restart: true, and theirs in turn — in the order to restart
// them. target itself is not among them.
func (g *Graph) Dependents(target string) (Order, error) {
	t := g.find(target)
	if t == nil {
		return Order{}, fmt.Errorf("no container named %q", target)
	}
	set := map[string]bool{}
	queue := []*Node{t}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, name := range g.sorted {
			n := g.nodes[name]
			if n == t || set[name] {
				continue
			}
			if _, restart := dependsOn(n, cur); restart {
				set[name] = true
				queue = append(queue, n)
			}
		}
	}
	return g.order(set), nil
}

// Project returns the compose project target belongs to and its
// containers in dependency order (each after what it depends on).
func (g *Graph) Project(target string) (string, Order, error) {
	t := g.find(target)
	if t == nil {
		return "", Order{}, fmt.Errorf("no container named %q", target)
	}
	if t.Project == "" {
		return "", Order{}, fmt.Errorf("container %q is not part of a compose project (no %s label)", t.Name, LabelProject)
	}
	set := map[string]bool{}
	for name, n := range g.nodes {
		if n.Project == t.Project {
			set[name] = true
		}
	}
	return t.Project, g.order(set), nil
}

// order sorts set topologically (Kahn's algorithm, ties by compose's
// container number, then name); what cannot be placed is a cycle.
func (g *Graph) order(set map[string]bool) Order {
	indegree := map[string]int{}
	after := map[string][]string{} // b -> containers that depend on b
	for a := range set {
		indegree[a] += 0
		for b := range set {
			if a == b {
				continue
			}
			if dep, _ := dependsOn(g.nodes[a], g.nodes[b]); dep {
				indegree[a]++
				after[b] = append(after[b], a)
			}
		}
	}
	less := func(x, y string) bool {
		nx, ny := g.nodes[x], g.nodes[y]
		if nx.Service == ny.Service && nx.Service != "" && nx.Number != ny.Number {
			return nx.Number < ny.Number // replicas of one service in their order
		}
		return x < y
	}
	var ready []string
	for n, d := range indegree {
		if d == 0 {
			ready = append(ready, n)
		}
	}
	var o Order
	for len(ready) > 0 {
		sort.Slice(ready, func(i, j int) bool { return less(ready[i], ready[j]) })
		n := ready[0]
		ready = ready[1:]
		o.Names = append(o.Names, n)
		for _, m := range after[n] {
			if indegree[m]--; indegree[m] == 0 {
				ready = append(ready, m)
			}
		}
	}
	for n, d := range indegree {
		if d > 0 {
			o.Cycle = append(o.Cycle, n)
		}
	}
	sort.Strings(o.Cycle)
	return o
}

// Allows reports whether the client's opt-in rule allows n.
func (c *Client) Allows(n *Node) bool { return c.optIn.Rule().Allows(n.Name, n.Labels) }
