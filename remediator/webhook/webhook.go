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
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/store"
)

// Ingester persists alerts; *store.Store is one.
type Ingester interface {
	IngestAlerts(ctx context.Context, alerts []store.Alert, reopenAfter time.Duration) (store.IngestResult, error)
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
	Store    Ingester
	// Wake, if set, is called after jobs were queued.
	Wake       func()
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Handler serves POST /api/v1/webhook.
type Handler struct {
	o        Options
	requests *prometheus.CounterVec
	alerts   *prometheus.CounterVec
	duration prometheus.Histogram
}

// New returns a Handler and registers its metrics.
func New(o Options) *Handler {
	h := &Handler{
		o: o,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "selfheal_webhook_requests_total",
			Help: "Webhook deliveries received, by HTTP status code answered.",
		}, []string{"code"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "selfheal_alerts_received_total",
			Help: "Alerts persisted from webhook deliveries, by alert status (duplicates included).",
		}, []string{"status"}),
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
		o.Registerer.MustRegister(h.requests, h.alerts, h.duration)
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
	alerts := make([]store.Alert, len(msg.Alerts))
	for i, a := range msg.Alerts {
		alerts[i] = store.Alert{
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
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.PersistTimeout)
	defer cancel()
	res, err := h.o.Store.IngestAlerts(ctx, alerts, h.o.ReopenAfter)
	if err != nil {
		h.o.Logger.Error("could not persist webhook delivery; answering 503 so Alertmanager retries",
			"alerts", len(alerts), "group_key", msg.GroupKey, "err", err)
		return http.StatusServiceUnavailable, "could not persist alerts; retry later"
	}
	for _, a := range alerts {
		h.alerts.WithLabelValues(a.Status).Inc()
	}
	if res.JobsQueued > 0 && h.o.Wake != nil {
		h.o.Wake()
	}
	h.o.Logger.Debug("webhook delivery persisted", "alerts", len(alerts), "jobs_queued", res.JobsQueued,
		"jobs_cancelled", res.JobsCancelled, "group_key", msg.GroupKey)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Status        string `json:"status"`
		Alerts        int    `json:"alerts"`
		JobsQueued    int    `json:"jobsQueued"`
		JobsCancelled int    `json:"jobsCancelled"`
	}{"success", len(alerts), res.JobsQueued, res.JobsCancelled})
	return http.StatusOK, ""
}
