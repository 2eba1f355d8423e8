package server

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/store"
)

// nodesCollector reports, in a fleet, each node's heartbeat and the jobs
// waiting for it, read from the database at each scrape: every replica
// reports the same figures (aggregate with max by (node)).
type nodesCollector struct {
	st          *store.Store
	silentAfter time.Duration
	log         *slog.Logger
}

var (
	nodeHeartbeatDesc = prometheus.NewDesc("selfheal_node_last_heartbeat_timestamp_seconds",
		"When the node's engine last said it was alive (fleet mode).", []string{"node"}, nil)
	nodeSilentDesc = prometheus.NewDesc("selfheal_node_silent",
		"1 when the node's engine stopped, or has not said it was alive within node.silent_after, or never did.", []string{"node"}, nil)
	nodeQueuedDesc = prometheus.NewDesc("selfheal_node_jobs_queued",
		"Jobs queued for the node, due or not.", []string{"node"}, nil)
	nodeWaitingDesc = prometheus.NewDesc("selfheal_node_jobs_waiting",
		"Jobs queued for a silent node: they wait for its engine.", []string{"node"}, nil)
	nodesUpDesc = prometheus.NewDesc("selfheal_nodes_scrape_success",
		"Whether the nodes could be read from the database at this scrape.", nil, nil)
)

func (c nodesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{nodeHeartbeatDesc, nodeSilentDesc, nodeQueuedDesc, nodeWaitingDesc, nodesUpDesc} {
		ch <- d
	}
}

func (c nodesCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	nodes, err := c.st.Nodes(ctx)
	if err != nil {
		c.log.Debug("cannot read the nodes", "err", err)
		ch <- prometheus.MustNewConstMetric(nodesUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(nodesUpDesc, prometheus.GaugeValue, 1)
	for _, n := range nodes {
		silent := n.Silent(c.silentAfter)
		if !n.LastHeartbeat.IsZero() {
			ch <- prometheus.MustNewConstMetric(nodeHeartbeatDesc, prometheus.GaugeValue, float64(n.LastHeartbeat.UnixMilli())/1e3, n.Name)
		}
		waiting := 0.0
		if silent {
			waiting = float64(n.Queued)
		}
		ch <- prometheus.MustNewConstMetric(nodeSilentDesc, prometheus.GaugeValue, b2f(silent), n.Name)
		ch <- prometheus.MustNewConstMetric(nodeQueuedDesc, prometheus.GaugeValue, float64(n.Queued), n.Name)
		ch <- prometheus.MustNewConstMetric(nodeWaitingDesc, prometheus.GaugeValue, waiting, n.Name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
