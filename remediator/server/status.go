package server

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/prometheus/common/version"

	"github.com/selfheal/selfheal/remediator/containers"
	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/handoff"
	"github.com/selfheal/selfheal/remediator/policy"
	"github.com/selfheal/selfheal/remediator/store"
)

//go:embed templates/status.html
var templates embed.FS

var statusTemplate = template.Must(template.ParseFS(templates, "templates/status.html"))

// statusStore is what the status page reads.
type statusStore interface {
	Paused(ctx context.Context) (bool, string, error)
	JobCounts(ctx context.Context) (map[string]int64, error)
	HeldCandidates(ctx context.Context) ([]store.HeldCandidate, error)
	ReadState(ctx context.Context, q model.StateQuery) (model.State, error)
	WaitingJobs(ctx context.Context) ([]store.WaitingJob, error)
	OpenProblems(ctx context.Context, q store.ProblemQuery) ([]store.Problem, error)
	LatestEvidence(ctx context.Context, targets []string) (map[string][]byte, error)
	RecentActivity(ctx context.Context, limit int, since time.Time) ([]store.Activity, error)
}

var _ statusStore = (*store.Store)(nil)

// statusPage serves GET /: a read-only page of what selfheal is doing, for
// hosts without Grafana. Server-rendered, no external assets.
type statusPage struct {
	st     statusStore
	config func() *policy.Config
	log    *slog.Logger
}

// heldRow is a target held back, and what selfheal's last action on it
// found before acting (its evidence), for the person who looks.
type heldRow struct{ Target, Remediation, Why, Evidence, LastLine string }

type waitingRow struct{ Target, Remediation, Why, Until string }

type decisionRow struct{ Time, Severity, Target, Remediation, What, Detail string }

type statusData struct {
	Node, Version, Fingerprint, Now string
	DryRun                          bool
	Error                           string
	Paused                          bool
	PauseReason                     string
	Queued, Running                 int64
	PrometheusURL, AlertmanagerURL  string
	Held                            []heldRow
	Waiting                         []waitingRow
	Decisions                       []decisionRow
}

const timeFormat = "2006-01-02 15:04:05 MST"

func (p statusPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	cfg := p.config()
	now := time.Now()
	d := statusData{Node: cfg.Node.Name, Version: version.Version, Fingerprint: cfg.Fingerprint(), DryRun: cfg.DryRun,
		Now: now.Format(timeFormat), PrometheusURL: cfg.StatusPage.PrometheusURL, AlertmanagerURL: cfg.Alertmanager.URL}
	if d.Version == "" {
		d.Version = "(development)"
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	code := http.StatusOK
	if err := p.fill(ctx, cfg, now, &d); err != nil {
		code, d.Error = http.StatusServiceUnavailable, err.Error()
		p.log.Warn("status page: cannot read the database", "err", err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := statusTemplate.Execute(w, d); err != nil {
		p.log.Warn("status page: render", "err", err)
	}
}

// fillEvidence adds to each held-back target the evidence of its last
// action.
func (p statusPage) fillEvidence(ctx context.Context, held []heldRow) error {
	if len(held) == 0 {
		return nil
	}
	targets := make([]string, len(held))
	for i, h := range held {
		targets[i] = h.Target
	}
	evs, err := p.st.LatestEvidence(ctx, targets)
	if err != nil {
		return err
	}
	for i := range held {
		var ev containers.Evidence
		if raw, ok := evs[held[i].Target]; ok && json.Unmarshal(raw, &ev) == nil {
			held[i].Evidence, held[i].LastLine = ev.Summary(), ev.LastLines(1, 300)
		}
	}
	return nil
}

func (p statusPage) fill(ctx context.Context, cfg *policy.Config, now time.Time, d *statusData) error {
	var err error
	if d.Paused, d.PauseReason, err = p.st.Paused(ctx); err != nil {
		return err
	}
	counts, err := p.st.JobCounts(ctx)
	if err != nil {
		return err
	}
	d.Queued, d.Running = counts["queued"], counts["running"]
	// Held back is the decision's own word: each candidate's state, read
	// as a decision would, through the same limits.
	held, err := p.st.HeldCandidates(ctx)
	if err != nil {
		return err
	}
	for _, h := range held {
		r := cfg.Remediation(h.Remediation)
		if r == nil {
			continue
		}
		st, err := p.st.ReadState(ctx, engine.StateQueryOf(cfg, r, h.Target))
		if err != nil {
			return err
		}
		if why, ok := engine.HeldBack(r, st, st.Now); ok {
			d.Held = append(d.Held, heldRow{Target: h.Target, Remediation: h.Remediation, Why: why})
		}
	}
	// And those the storm brake skipped while their alert fires: what the
	// hand-off tells people (SelfhealBraked).
	probs, err := p.st.OpenProblems(ctx, handoff.Query(cfg))
	if err != nil {
		return err
	}
	for _, pr := range probs {
		switch pr.Kind {
		case "braked":
			d.Held = append(d.Held, heldRow{Target: pr.Target, Remediation: pr.Remediation,
				Why: fmt.Sprintf("skipped at %s: %s", pr.Since.Local().Format(timeFormat), pr.Reason)})
		case "chronic":
			why := "chronic, handed to people: " + pr.Reason
			if cfg.Engine.Chronic.Hold {
				why = "chronic, held for a person: " + pr.Reason
			}
			d.Held = append(d.Held, heldRow{Target: pr.Target, Remediation: "any", Why: why})
		}
	}
	if err := p.fillEvidence(ctx, d.Held); err != nil {
		return err
	}
	waiting, err := p.st.WaitingJobs(ctx)
	if err != nil {
		return err
	}
	for _, w := range waiting {
		d.Waiting = append(d.Waiting, waitingRow{Target: w.Target, Remediation: w.Remediation, Why: w.Reason,
			Until: w.NotBefore.Local().Format(timeFormat)})
	}
	acts, err := p.st.RecentActivity(ctx, 200, now.Add(-24*time.Hour))
	if err != nil {
		return err
	}
	for _, a := range acts {
		if a.Kind != "event" || len(d.Decisions) == 30 {
			continue
		}
		d.Decisions = append(d.Decisions, decisionRow{Time: a.Time.Local().Format(timeFormat), Severity: a.Severity,
			Target: a.Target, Remediation: a.Remediation, What: a.What, Detail: a.Detail})
	}
	return nil
}
