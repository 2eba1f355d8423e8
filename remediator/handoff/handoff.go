// Package handoff tells people what selfheal could not fix. It posts
// selfheal's own alerts to Alertmanager's API v2 — an open escalation, a
// ladder that gave up, a target whose last action failed or was refused
// or that the storm brake held back, a pause that lasts — so they reach people through their usual routes,
// and resolves each once the problem is gone. It runs beside the engine
// and never holds healing back: a failed post is retried at the next
// round.
package handoff

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/internal/labelset"
	"github.com/selfheal/selfheal/remediator/containers"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
)

// Problems reads what selfheal could not fix; *store.Store has it.
type Problems interface {
	OpenProblems(ctx context.Context, q store.ProblemQuery) ([]store.Problem, error)
}

var _ Problems = (*store.Store)(nil)

// Source labels every alert of selfheal's own; the shipped routing sends
// them to people and never back to selfheal.
const Source = "selfheal"

// kinds maps a problem to its alert name and severity.
var kinds = map[string]struct{ alertname, severity, summary string }{
	"escalated":     {"SelfhealEscalated", "critical", "selfheal escalated {target}: smaller fixes did not hold"},
	"gave_up":       {"SelfhealGaveUp", "critical", "selfheal gave up on {target}: the ladder is exhausted"},
	"action_failed": {"SelfhealActionFailed", "warning", "selfheal's last action on {target} failed"},
	"refused":       {"SelfhealRefused", "warning", "selfheal refused to act on {target}"},
	"braked":        {"SelfhealBraked", "warning", "selfheal's storm brake held back {target}: too many actions in its window"},
	"chronic":       {"SelfhealChronic", "warning", "selfheal keeps repairing {target}: the cause is not fixed"},
	"paused":        {"SelfhealPaused", "warning", "selfheal has been paused for a while"},
}

// Query is what counts as a problem under cfg: what the hand-off posts and
// the status page lists.
func Query(cfg *policy.Config) store.ProblemQuery {
	q := store.ProblemQuery{Lookback: cfg.Alertmanager.Lookback.D(), PausedFor: cfg.Alertmanager.PausedFor.D()}
	if ch := cfg.Engine.Chronic; ch.MaxRemediations > 0 {
		q.ChronicMax, q.ChronicWindow = ch.MaxRemediations, ch.Window.D()
	}
	return q
}

// Handoff posts the alerts.
type Handoff struct {
	url    string
	config func() *policy.Config
	probs  Problems
	client *http.Client
	log    *slog.Logger
	posted map[string]alert // by label set, what Alertmanager has from us
	sent   *prometheus.CounterVec
}

// New returns a Handoff posting to Alertmanager at url with client
// (policy.Alertmanager.Client), and registers its metrics with reg (if not
// nil).
func New(url string, client *http.Client, config func() *policy.Config, probs Problems, log *slog.Logger, reg prometheus.Registerer) *Handoff {
	h := &Handoff{url: strings.TrimRight(url, "/"), config: config, probs: probs, log: log,
		client: client, posted: map[string]alert{},
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "selfheal_handoff_posts_total",
			Help: "Posts of selfheal's own alerts to Alertmanager, by result.",
		}, []string{"result"})}
	h.sent.WithLabelValues("success")
	h.sent.WithLabelValues("failure")
	if reg != nil {
		reg.MustRegister(h.sent)
	}
	return h
}

type alert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
}

// Run sends the alerts every interval until ctx ends. After a failed post
// it waits twice as long each time, up to ten intervals, so an Alertmanager
// that is down is not hammered; the alerts it missed go with the next post.
func (h *Handoff) Run(ctx context.Context) {
	failures := 0
	for {
		interval := h.config().Alertmanager.Interval.D()
		wait := interval
		if err := h.Sync(ctx); err != nil && ctx.Err() == nil {
			failures++
			wait = min(interval<<min(failures, 4), 10*interval)
			h.log.Warn("could not hand off to Alertmanager; trying again", "url", h.url, "err", err, "in", wait)
		} else {
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Sync posts every open problem as a firing alert, and every alert it
// posted before whose problem is gone as resolved.
func (h *Handoff) Sync(ctx context.Context) error {
	cfg := h.config()
	am := cfg.Alertmanager
	probs, err := h.probs.OpenProblems(ctx, Query(cfg))
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	current := map[string]alert{}
	for _, p := range probs {
		a := h.alert(cfg, p)
		a.EndsAt = now.Add(4 * am.Interval.D()) // resolved by Alertmanager if selfheal falls silent
		current[key(a.Labels)] = a
	}
	batch := make([]alert, 0, len(current)+len(h.posted))
	for k, a := range h.posted {
		if _, still := current[k]; !still {
			a.EndsAt = now
			batch = append(batch, a)
		}
	}
	for _, a := range current {
		batch = append(batch, a)
	}
	if len(batch) > 0 {
		if err := h.post(ctx, batch); err != nil {
			h.sent.WithLabelValues("failure").Inc()
			return err
		}
		h.sent.WithLabelValues("success").Inc()
	}
	h.posted = current
	return nil
}

func (h *Handoff) alert(cfg *policy.Config, p store.Problem) alert {
	k := kinds[p.Kind]
	node := p.Node
	if node == "" {
		node = cfg.Node.Name
	}
	labels := map[string]string{"alertname": k.alertname, "severity": k.severity, "source": Source, "node": node}
	if p.Target != "" {
		labels["target"] = p.Target
	}
	if p.Remediation != "" {
		labels["remediation"] = p.Remediation
		if r := cfg.Remediation(p.Remediation); r != nil {
			labels["category"] = r.Category
		}
	}
	annotations := map[string]string{
		"summary":     strings.ReplaceAll(k.summary, "{target}", p.Target),
		"description": p.Reason,
		"runbook_url": "https://github.com/selfheal/selfheal/blob/main/docs/runbooks.md#" + strings.ToLower(k.alertname),
	}
	// What the target showed before selfheal last acted on it, shortened
	// to what a notification carries: the person paged has it without
	// the container's logs, which the restart replaced.
	var ev containers.Evidence
	if len(p.Evidence) > 0 && json.Unmarshal(p.Evidence, &ev) == nil {
		annotations["evidence"] = ev.Summary()
		if annotations["evidence"] == "" { // not a container's: as recorded
			annotations["evidence"] = model.Truncate(string(p.Evidence), evidenceBytes)
		}
		if lines := ev.LastLines(evidenceLines, evidenceBytes); lines != "" {
			annotations["last_log_lines"] = lines
		}
	}
	return alert{Labels: labels, Annotations: annotations, StartsAt: p.Since.UTC()}
}

// The evidence a hand-off alert carries: the newest lines, as many as fit
// a chat message or a page.
const (
	evidenceLines = 10
	evidenceBytes = 1024
)

func (h *Handoff) post(ctx context.Context, alerts []alert) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	b, err := json.Marshal(alerts)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/api/v2/alerts", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return fmt.Errorf("post to %s: %w", h.url, err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post to %s: %s", h.url, resp.Status)
	}
	return nil
}

func key(l map[string]string) string { return labelset.Fingerprint(l) }
