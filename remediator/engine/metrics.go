package engine

import (
	"context"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/action"
)

type metrics struct {
	decisions      *prometheus.CounterVec
	jobs           *prometheus.CounterVec
	deferred       prometheus.Counter
	roundDecisions prometheus.Counter
	actions        *prometheus.CounterVec
	actionDuration *prometheus.HistogramVec
	unavailable    prometheus.Gauge
	replicas       *prometheus.GaugeVec
	configInfo     *prometheus.GaugeVec
	queue          *queueCollector
}

func newMetrics(st Store) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "selfheal_engine_decisions_total",
			Help: "Decisions made on jobs, by verdict.",
		}, []string{"verdict"}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "selfheal_engine_jobs_finished_total",
			Help: "Jobs finished by this replica, by outcome.",
		}, []string{"outcome"}),
		roundDecisions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "selfheal_engine_round_decisions_total",
			Help: "Decisions recorded in rounds (many jobs in one transaction), as the engine decides while the storm brake holds or jobs wait for a worker.",
		}),
		deferred: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "selfheal_engine_jobs_deferred_total",
			Help: "Jobs put back in the queue: their target was busy or unreachable, or too many actions were running.",
		}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "selfheal_actions_total",
			Help: "Actions run, by action and result.",
		}, []string{"action", "result"}),
		actionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "selfheal_action_duration_seconds",
			Help:    "Time an action took, verification included.",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"action"}),
		unavailable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "selfheal_engine_remediations_unavailable",
			Help: "Remediations this replica cannot act on now (an action's service, such as the Docker Engine, does not answer); their jobs are left to other replicas.",
		}),
		replicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "selfheal_replicas",
			Help: "Replicas on this database alive within the last minute, by whether they run this replica's configuration (same) or another (other).",
		}, []string{"config"}),
		configInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "selfheal_config_info",
			Help: "The fingerprint of the configuration this replica runs (remediations, engine, targets, dry-run).",
		}, []string{"fingerprint"}),
		queue: &queueCollector{store: st, desc: prometheus.NewDesc("selfheal_jobs",
			"Unfinished work in the database (all replicas): 'queued' jobs and 'running' actions. Finished jobs are counted by selfheal_engine_jobs_finished_total.", []string{"state"}, nil)},
	}
	for _, v := range []Verdict{Run, DryRun, Skip, Refuse, Escalate, Defer} {
		m.decisions.WithLabelValues(string(v))
	}
	for _, o := range model.JobOutcomes {
		m.jobs.WithLabelValues(string(o))
	}
	m.jobs.WithLabelValues(string(model.JobInterrupted))
	for _, a := range action.Types() {
		m.actions.WithLabelValues(a, string(model.ActionSucceeded))
		m.actions.WithLabelValues(a, string(model.ActionFailed))
		m.actionDuration.WithLabelValues(a)
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.decisions, m.jobs, m.roundDecisions, m.deferred, m.actions, m.actionDuration, m.unavailable, m.replicas, m.configInfo, m.queue)
}

// queueCollector reads job counts from the database at scrape time, with a
// short timeout: a slow database leaves the series out rather than hanging
// the scrape.
type queueCollector struct {
	store Store
	desc  *prometheus.Desc
}

func (q *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- q.desc }

func (q *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	counts, err := q.store.JobCounts(ctx)
	if err != nil {
		return
	}
	for _, s := range []string{string(model.JobQueued), string(model.ActionRunning)} {
		ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, float64(counts[s]), s)
	}
}
