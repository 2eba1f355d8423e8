package policy

import (
	"net"
	"os"
	"slices"
	"strings"
	"time"
)

// Node says which host this selfheal is: it acts only on alerts for itself.
type Node struct {
	// Name is this host's name (SELFHEAL_NODE_NAME overrides it; default
	// the hostname).
	Name string `yaml:"name"`
	// Aliases are other names the host goes by in instance labels: its
	// IP addresses, a DNS name. Loopback names always count.
	Aliases []string `yaml:"aliases"`
	// Unlabelled says what to do with an alert that names no node (neither
	// a node label nor an instance label): "act" on it here (one host) or
	// "refuse" it (several hosts share the Alertmanager).
	Unlabelled string `yaml:"unlabelled"`
	// Fleet says that many nodes share the database: an alert for another
	// node is queued for that node's engine (not just stored), each engine
	// claims only its own node's jobs, and unlabelled alerts are refused
	// unless Unlabelled says otherwise.
	Fleet bool `yaml:"fleet"`
	// HeartbeatInterval is how often this node's engine says it is alive.
	HeartbeatInterval Duration `yaml:"heartbeat_interval"`
	// SilentAfter is how long without a heartbeat makes a node silent: its
	// new jobs are recorded as waiting for it.
	SilentAfter Duration `yaml:"silent_after"`
}

// Node defaults.
const (
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultSilentAfter       = time.Minute
)

// What to do with alerts that name no node.
const (
	UnlabelledAct    = "act"
	UnlabelledRefuse = "refuse"
)

// EnvNodeName overrides node.name.
const EnvNodeName = "SELFHEAL_NODE_NAME"

// loopback names mean "this host" in any instance label: a Prometheus on
// the same host scrapes selfheal as localhost.
var loopback = []string{"localhost", "127.0.0.1", "::1"}

// AlertNode returns the node an alert is for: its node label, else the
// host part of its instance label ("edge-02:9595" is edge-02); "" when it
// has neither.
func AlertNode(labels map[string]string) string {
	if n := strings.TrimSpace(labels["node"]); n != "" {
		return n
	}
	inst := strings.TrimSpace(labels["instance"])
	if inst == "" {
		return ""
	}
	if host, _, err := net.SplitHostPort(inst); err == nil {
		return host
	}
	return strings.Trim(inst, "[]")
}

// Names are every name this node answers to, lower-cased: its name, its
// aliases and, on one host, the loopback names. In a fleet a loopback name
// says nothing about which node an alert is for — every node is
// "localhost" to itself — so no node answers to it.
func (n Node) Names() []string {
	var names []string
	for _, name := range n.candidates() {
		if name = strings.ToLower(strings.TrimSpace(name)); name != "" && !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	return names
}

func (n Node) candidates() []string {
	names := append([]string{n.Name}, n.Aliases...)
	if !n.Fleet {
		names = append(names, loopback...)
	}
	return names
}

// Owns reports whether node names this host.
func (n Node) Owns(node string) bool {
	for _, name := range n.candidates() {
		if name != "" && strings.EqualFold(name, node) {
			return true
		}
	}
	return false
}

// isLoopback reports whether node is a loopback name.
func isLoopback(node string) bool {
	return slices.ContainsFunc(loopback, func(l string) bool { return strings.EqualFold(l, node) })
}

// Foreign says why an alert is not this node's to act on, or "".
func (n Node) Foreign(labels map[string]string) string {
	switch node := AlertNode(labels); {
	case node == "" && n.Unlabelled == UnlabelledRefuse:
		return "the alert names no node (no node or instance label) and node.unlabelled is refuse"
	case node == "" || n.Owns(node):
		return ""
	default:
		return "the alert is for node " + node + "; this is " + n.Name + ": stored, not acted on here"
	}
}

// Of returns the node an alert is for: AlertNode, or, for an alert that
// names none and that node.unlabelled has acted on here, this node.
func (n Node) Of(labels map[string]string) string {
	if node := AlertNode(labels); node != "" || n.Unlabelled != UnlabelledAct {
		return node
	}
	return n.Name
}

// NotQueued says why the webhook stores an alert without queueing any
// job for it, or "". On one host that is any alert not for this host; in a
// fleet an alert for another node is queued for that node's engine, and
// only one naming no node may be refused.
func (n Node) NotQueued(labels map[string]string) string {
	switch node := AlertNode(labels); {
	case n.Fleet && isLoopback(node):
		return "the alert's node is " + node + ", which in a fleet names no node (every host is " + node +
			" to itself): set a node label, as the shipped Prometheus configurations do by relabelling"
	case n.Fleet && node != "":
		return ""
	}
	return n.Foreign(labels)
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
