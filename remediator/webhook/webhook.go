// Package webhook receives Alertmanager's webhook deliveries and persists
// every alert before answering: 200 once stored (duplicates included), 400
// for a payload that is not version 4, 401 for missing or wrong
// credentials, 413 for a body over the limit, 503 when the database cannot
// store it, so that Alertmanager retries. It never acts itself: the engine
// picks the stored jobs up.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
)

// Ingester persists deliveries, several in one transaction (commit.go),
// and records the alerts it rejects; *store.Store is one.
type Ingester interface {
	IngestDeliveries(ctx context.Context, deliveries [][]model.Alert, reopenAfter time.Duration) ([]model.IngestResult, error)
	RecordEvent(ctx context.Context, e model.Event) error
}

var _ Ingester = (*store.Store)(nil)

// Options configures a Handler.
type Options struct {
	Credentials  Credentials
	MaxBodyBytes int64
	// PersistTimeout bounds the database work of one delivery.
	PersistTimeout time.Duration
	// ReopenAfter is passed to the store: how long after a finished job a
	// still-firing alert may get its next step.
	ReopenAfter time.Duration
	// Match returns the remediation for an alert's labels, "" for none.
	Match func(labels map[string]string) string
	// Critical, if set, reports whether an alert is a critical event when
	// it starts firing (it counts toward the critical-events threshold).
	Critical func(labels map[string]string) bool
	// NotHere, if set, says why this selfheal does not act on an alert
	// (another node's), or "".
	NotHere func(labels map[string]string) string
	// Node, if set, returns the node an alert is for ("" for none); by
	// default its node or instance label's host.
	Node  func(labels map[string]string) string
	Store Ingester
	// Wake, if set, is called after jobs were queued, with the nodes they
	// were queued for.
	Wake       func(nodes []string)
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Handler serves POST /api/v1/webhook.
type Handler struct {
	o        Options
	commits  *committer
	requests *prometheus.CounterVec
	alerts   *prometheus.CounterVec
	duration prometheus.Histogram
	rejected prometheus.Counter
}

// New returns a Handler and registers its metrics.
func New(o Options) *Handler {
	h := &Handler{
		o:       o,
		commits: newCommitter(o.Store, o.ReopenAfter),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "selfheal_webhook_requests_total",
			Help: "Webhook deliveries received, by HTTP status code answered.",
		}, []string{"code"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "selfheal_alerts_received_total",
			Help: "Alerts persisted from webhook deliveries, by alert status (duplicates included).",
		}, []string{"status"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "selfheal_alerts_rejected_total",
			Help: "Alerts of webhook deliveries rejected because they can never be stored (the rest of each delivery is stored).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "selfheal_webhook_request_duration_seconds",
			Help:    "Time from receiving a webhook delivery to answering it.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	for _, c := range []int{200, 400, 401, 405, 413, 503} {
		h.requests.WithLabelValues(strconv.Itoa(c))
	}
	h.alerts.WithLabelValues("firing")
	h.alerts.WithLabelValues("resolved")
	if o.Registerer != nil {
		o.Registerer.MustRegister(h.requests, h.alerts, h.duration, h.rejected, h.commits.size)
	}
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code, msg := h.serve(w, r)
	h.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	h.duration.Observe(time.Since(start).Seconds())
	if code != http.StatusOK {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(msg + "\n"))
	}
}

// serve handles one delivery and returns the status to answer; for 200 it
// has written the body itself.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) (int, string) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return http.StatusMethodNotAllowed, "use POST"
	}
	if err := h.o.Credentials.check(r); err != nil {
		w.Header().Set("WWW-Authenticate", h.o.Credentials.challenge())
		return http.StatusUnauthorized, err.Error()
	}
	body := http.MaxBytesReader(w, r.Body, h.o.MaxBodyBytes)
	msg, err := Decode(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, "body larger than " + strconv.FormatInt(tooBig.Limit, 10) + " bytes"
		}
		return http.StatusBadRequest, err.Error()
	}
	var in []indexed
	var rejected []Rejection
	for i, a := range msg.Alerts {
		if reason := unstorable(a); reason != "" {
			rejected = append(rejected, Rejection{Index: i, Alertname: a.Labels["alertname"], Reason: reason})
			continue
		}
		in = append(in, indexed{i, model.Alert{
			Fingerprint:  a.Fingerprint,
			StartsAt:     occurrenceStart(a.StartsAt),
			EndsAt:       a.EndsAt.UTC(),
			Status:       a.Status,
			Alertname:    a.Labels["alertname"],
			Labels:       a.Labels,
			Annotations:  a.Annotations,
			GeneratorURL: a.GeneratorURL,
			Remediation:  h.o.Match(a.Labels),
			Critical:     h.o.Critical != nil && h.o.Critical(a.Labels),
			Node:         h.nodeOf(a.Labels),
			NotHere:      notHere(h.o.NotHere, a.Labels),
		}})
	}
	ctx, cancel := context.WithTimeout(r.Context(), PersistTimeout(h.o.PersistTimeout, len(in)))
	defer cancel()
	res, stored, refused, err := h.persist(ctx, in)
	if err != nil {
		h.o.Logger.Error("could not persist webhook delivery; answering 503 so Alertmanager retries",
			"alerts", len(in), "group_key", msg.GroupKey, "err", err)
		return http.StatusServiceUnavailable, "could not persist alerts; retry later"
	}
	rejected = append(rejected, refused...)
	if len(rejected) > 0 {
		h.reject(ctx, msg.GroupKey, rejected)
		if len(stored) == 0 {
			return http.StatusBadRequest, "no alert in the delivery can be stored: " + reasons(rejected)
		}
	}
	alerts := stored
	for _, a := range alerts {
		h.alerts.WithLabelValues(a.Status).Inc()
	}
	if res.JobsQueued > 0 && h.o.Wake != nil {
		h.o.Wake(res.Nodes)
	}
	h.o.Logger.Debug("webhook delivery persisted", "alerts", len(alerts), "jobs_queued", res.JobsQueued,
		"jobs_cancelled", res.JobsCancelled, "group_key", msg.GroupKey)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Status        string      `json:"status"`
		Alerts        int         `json:"alerts"`
		JobsQueued    int         `json:"jobsQueued"`
		JobsCancelled int         `json:"jobsCancelled"`
		Rejected      []Rejection `json:"rejected,omitempty"`
	}{"success", len(alerts), res.JobsQueued, res.JobsCancelled, rejected})
	return http.StatusOK, ""
}

func (h *Handler) nodeOf(labels map[string]string) string {
	if h.o.Node != nil {
		return h.o.Node(labels)
	}
	return policy.AlertNode(labels)
}

// perAlertPersist is how much longer than persist_timeout a delivery may
// take for each alert it carries: a big group (10,000 alerts, under a
// megabyte) takes seconds to store on a small machine, and answering it
// 503 would have Alertmanager retry it for ever. About three times what
// a re-delivered 10,000-alert group took here (docs/benchmarks.md).
const perAlertPersist = 500 * time.Microsecond

// PersistTimeout is how long a delivery of n alerts may take to persist
// before it is answered 503: base (webhook.persist_timeout), and
// perAlertPersist more for each alert. Only an unavailable database takes
// that long.
func PersistTimeout(base time.Duration, n int) time.Duration {
	return base + time.Duration(n)*perAlertPersist
}

// Rejection is an alert of a delivery that can never be stored, and why.
// The rest of the delivery is stored and answered 200: answering 5xx
// would have Alertmanager retry the same body for ever, and the other
// alerts of the group would never be stored.
type Rejection struct {
	Index     int    `json:"index"` // in the delivery's alerts
	Alertname string `json:"alertname"`
	Reason    string `json:"reason"`
}

type indexed struct {
	index int
	alert model.Alert
}

// MaxLabelBytes bounds a label's name and value. Labels name what selfheal
// indexes — targets, nodes, alert names — and a btree entry is at most
// about 2.7 kB: a longer label could be stored, but the job it queues
// would fail on an index at every try. (Prometheus labels are short;
// long text belongs in annotations, which are not bounded but by the body.)
const MaxLabelBytes = 1024

// unstorable says why an alert can never be stored, or "". PostgreSQL's
// text cannot hold a NUL byte, in any label, annotation or URL; a label
// past MaxLabelBytes cannot be indexed.
func unstorable(a template.Alert) string {
	for k, v := range a.Labels {
		if strings.ContainsRune(k, 0) || strings.ContainsRune(v, 0) {
			return fmt.Sprintf("label %q holds a NUL byte", k)
		}
		if len(k) > MaxLabelBytes || len(v) > MaxLabelBytes {
			return fmt.Sprintf("label %q is %d bytes long (name and value may have at most %d each: a longer one cannot be indexed)",
				model.Truncate(k, 64), max(len(k), len(v)), MaxLabelBytes)
		}
	}
	for k, v := range a.Annotations {
		if strings.ContainsRune(k, 0) || strings.ContainsRune(v, 0) {
			return fmt.Sprintf("annotation %q holds a NUL byte", k)
		}
	}
	if strings.ContainsRune(a.GeneratorURL, 0) {
		return "generatorURL holds a NUL byte"
	}
	return ""
}

// persist stores the alerts as one delivery, in a commit it may share with
// others (commit.go). When the database refuses
// the data itself (store.Unstorable), it stores them one at a time to find
// those that can never be stored, rejects them and keeps the rest. Any
// other error means the database is unavailable: nothing is rejected, and
// the caller answers 503.
func (h *Handler) persist(ctx context.Context, in []indexed) (model.IngestResult, []model.Alert, []Rejection, error) {
	all := make([]model.Alert, len(in))
	for i, a := range in {
		all[i] = a.alert
	}
	res, err := h.commits.ingest(ctx, all)
	if err == nil || !store.Unstorable(err) {
		return res, all, nil, err
	}
	var total model.IngestResult
	var stored []model.Alert
	var rejected []Rejection
	for _, a := range in {
		r, err := h.commits.ingest(ctx, []model.Alert{a.alert})
		switch {
		case err == nil:
			total.Add(r)
			stored = append(stored, a.alert)
		case store.Unstorable(err):
			rejected = append(rejected, Rejection{Index: a.index, Alertname: a.alert.Alertname,
				Reason: "the database cannot store it: " + err.Error()})
		default:
			return model.IngestResult{}, nil, nil, err
		}
	}
	return total, stored, rejected, nil
}

// reject logs the rejected alerts and records them as one event.
func (h *Handler) reject(ctx context.Context, groupKey string, rejected []Rejection) {
	h.rejected.Add(float64(len(rejected)))
	h.o.Logger.Warn("rejected alerts that can never be stored; storing the rest", "group_key", groupKey,
		"rejected", len(rejected), "reasons", reasons(rejected))
	list := make([]any, len(rejected))
	for i, r := range rejected {
		list[i] = map[string]any{"index": r.Index, "alertname": printable(r.Alertname), "reason": r.Reason}
	}
	err := h.o.Store.RecordEvent(ctx, model.Event{Severity: model.SeverityWarning, Type: "alert_rejected",
		Message: fmt.Sprintf("%d alert(s) of a delivery rejected: they can never be stored", len(rejected)),
		Details: map[string]any{"group_key": printable(groupKey), "rejected": list}})
	if err != nil {
		h.o.Logger.Warn("could not record the rejected alerts", "err", err)
	}
}

func notHere(f func(map[string]string) string, labels map[string]string) string {
	if f == nil {
		return ""
	}
	return f(labels)
}

// printable makes a client's string storable in the audit trail.
func printable(s string) string { return strings.ReplaceAll(s, "\x00", `\0`) }

func reasons(rs []Rejection) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("alerts[%d] (%q): %s", r.Index, r.Alertname, r.Reason)
	}
	return strings.Join(parts, "; ")
}
