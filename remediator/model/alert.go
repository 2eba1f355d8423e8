package model

import (
	"slices"
	"time"
)

// Alert is one alert from a webhook delivery, ready to persist.
type Alert struct {
	Fingerprint  string
	StartsAt     time.Time // already truncated to milliseconds
	EndsAt       time.Time
	Status       string // "firing" or "resolved"
	Alertname    string
	Labels       map[string]string
	Annotations  map[string]string
	GeneratorURL string
	// Remediation is the policy's match for the alert, empty when none.
	Remediation string
	// Critical marks an alert that is a critical event when it starts
	// firing (a database lost, a disk above 95 %): it counts toward the
	// critical-events threshold.
	Critical bool
	// Node is the node the alert is for ("" when it names none).
	Node string
	// NotHere, when set, says why this selfheal does not act on the alert
	// (it is for another node): it is stored and shown, and queues nothing.
	NotHere string
}

// IngestResult counts what one delivery changed.
type IngestResult struct {
	JobsQueued    int
	JobsCancelled int
	// Nodes are the nodes jobs were queued for ("" for a job of no node).
	Nodes []string
	// Waiting counts jobs queued for a node whose engine is silent.
	Waiting int
}

// Add adds r's counts to res.
func (res *IngestResult) Add(r IngestResult) {
	res.JobsQueued += r.JobsQueued
	res.JobsCancelled += r.JobsCancelled
	res.Waiting += r.Waiting
	for _, n := range r.Nodes {
		if !slices.Contains(res.Nodes, n) {
			res.Nodes = append(res.Nodes, n)
		}
	}
}
