// Package fastpath opens occurrences from the Docker events stream: a
// remediation with fast_path: {on: die} (or unhealthy) has its occurrence
// opened the moment Docker reports that an opted-in container died, instead
// of after scrape → rule → Alertmanager → webhook. The occurrence is an
// ordinary one — the same ladder, counting and audit, claimed by the same
// engine — and Alertmanager's later delivery for the same outage joins it
// (the engine checks). A person's silence in Alertmanager still stops it:
// the fast path asks Alertmanager's API v2 for its silences, and nothing it
// opens is committed or decided before the answer; it stands down —
// leaving the alert to the slow path, which Alertmanager silences or
// delivers — when one may apply or when Alertmanager cannot be asked.
package fastpath

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/prometheus/alertmanager/pkg/labels"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/internal/labelset"
	"github.com/selfheal/selfheal/remediator/policy"
)

// Event is what the Docker events stream reported of an opted-in container.
type Event struct {
	Container string
	// Kind is policy.FastPathDie or policy.FastPathUnhealthy.
	Kind string
	Time time.Time
	// RestartPolicy and ExitCode say whether Docker restarts it itself.
	RestartPolicy string
	ExitCode      int
}

// dockerRestarts reports whether Docker's restart policy restarts the
// container after this event: the fast path then leaves it to Docker (the
// slow path still sees a container that stays down).
func (ev Event) dockerRestarts() bool {
	if ev.Kind != policy.FastPathDie {
		return false
	}
	switch ev.RestartPolicy {
	case "always", "unless-stopped":
		return true
	case "on-failure":
		return ev.ExitCode != 0
	}
	return false
}

// Store is where the fast path records why it did not open an occurrence.
type Store interface {
	RecordEvent(ctx context.Context, e model.Event) error
}

// Opener opens the occurrence of the fast path's alert and has its job
// decided (engine.Engine.OpenFast), once check returns nil: it may store
// the alert meanwhile, but commits and decides nothing before; check's
// error is returned as it is, with nothing stored.
type Opener func(ctx context.Context, a model.Alert, check func(context.Context) error) error

// FastPath turns Docker events into occurrences.
type FastPath struct {
	config func() *policy.Config
	store  Store
	open   Opener
	client *http.Client
	log    *slog.Logger
	events *prometheus.CounterVec
}

// New returns a fast path; open opens its occurrences, and client reaches
// Alertmanager (policy.Alertmanager.Client).
func New(config func() *policy.Config, st Store, open Opener, client *http.Client, log *slog.Logger, reg prometheus.Registerer) *FastPath {
	f := &FastPath{config: config, store: st, open: open, log: log, client: client,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "selfheal_fastpath_events_total",
			Help: "Docker events the fast path handled, by result: opened (an occurrence), silenced, unavailable (Alertmanager could not be asked: left to the slow path), failed (the database).",
		}, []string{"result"})}
	for _, r := range []string{"opened", "silenced", "unavailable", "failed"} {
		f.events.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(f.events)
	}
	return f
}

// Handle opens the occurrence an event calls for, if a remediation's fast
// path asks for it and no silence may apply.
func (f *FastPath) Handle(ctx context.Context, ev Event) {
	cfg := f.config()
	r := cfg.FastPathFor(ev.Kind, ev.Container)
	if r == nil || ev.dockerRestarts() {
		return
	}
	lset := r.FastAlert(ev.Container, cfg.Node.Name)
	log := f.log.With("container", ev.Container, "event", ev.Kind, "remediation", r.Name)
	a := model.Alert{Fingerprint: labelset.Fingerprint(lset), StartsAt: ev.Time.Truncate(time.Millisecond), Status: "firing",
		Alertname: lset["alertname"], Labels: lset, Remediation: r.Name, Node: cfg.Node.Name,
		Annotations: map[string]string{"summary": fmt.Sprintf("Docker reports %s: %s (selfheal's fast path)", ev.Container, ev.Kind)}}
	// The silence check runs while the alert is written; nothing commits
	// before it answers (Opener).
	check := func(ctx context.Context) error {
		silence, err := f.silenced(ctx, cfg.Alertmanager.URL, lset)
		switch {
		case err != nil:
			return standDown{"unavailable", fmt.Sprintf("fast path stood down for %s %s: cannot ask Alertmanager for silences (%v); the slow path decides", ev.Container, ev.Kind, err)}
		case silence != "":
			return standDown{"silenced", fmt.Sprintf("fast path stood down for %s %s: Alertmanager silence %s may apply; the alert is Alertmanager's to deliver", ev.Container, ev.Kind, silence)}
		}
		return nil
	}
	err := f.open(ctx, a, check)
	if sd, ok := errors.AsType[standDown](err); ok {
		f.events.WithLabelValues(sd.result).Inc()
		log.Info(sd.msg)
		if err := f.store.RecordEvent(ctx, model.Event{Severity: model.SeverityInfo, Type: "fast_path_stood_down", Target: ev.Container, Message: sd.msg}); err != nil {
			log.Warn("record event", "err", err)
		}
		return
	}
	if err != nil {
		f.events.WithLabelValues("failed").Inc()
		log.Warn("fast path could not open the occurrence; the slow path decides", "err", err)
		return
	}
	f.events.WithLabelValues("opened").Inc()
	log.Debug("fast path opened an occurrence")
}

// standDown is why the fast path leaves an event to the slow path: its
// result (selfheal_fastpath_events_total) and the event's message.
type standDown struct{ result, msg string }

func (s standDown) Error() string { return s.msg }

type silence struct {
	ID     string `json:"id"`
	Status struct {
		State string `json:"state"`
	} `json:"status"`
	Matchers []struct {
		Name    string `json:"name"`
		Value   string `json:"value"`
		IsRegex bool   `json:"isRegex"`
		IsEqual *bool  `json:"isEqual"`
	} `json:"matchers"`
}

// silenced returns the ID of an active silence that may apply to an alert
// with these labels. The fast path's alert lacks labels the rule's alert
// carries (instance, severity, …): a matcher on a label it lacks is taken
// to match, so any silence that could mute the real alert stops the fast
// path.
func (f *FastPath) silenced(ctx context.Context, amURL string, lset map[string]string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(amURL, "/")+"/api/v2/silences", nil)
	if err != nil {
		return "", err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /api/v2/silences: %s", resp.Status)
	}
	var silences []silence
	if err := json.NewDecoder(resp.Body).Decode(&silences); err != nil {
		return "", fmt.Errorf("GET /api/v2/silences: %w", err)
	}
	for _, s := range silences {
		if s.Status.State != "active" {
			continue
		}
		applies := true
		for _, m := range s.Matchers {
			v, known := lset[m.Name]
			if !known {
				continue // a label the fast path's alert lacks: it may match
			}
			typ := labels.MatchEqual
			switch equal := m.IsEqual == nil || *m.IsEqual; {
			case m.IsRegex && equal:
				typ = labels.MatchRegexp
			case m.IsRegex:
				typ = labels.MatchNotRegexp
			case !equal:
				typ = labels.MatchNotEqual
			}
			matcher, err := labels.NewMatcher(typ, m.Name, m.Value)
			if err != nil || !matcher.Matches(v) {
				applies = false
				break
			}
		}
		if applies {
			return s.ID, nil
		}
	}
	return "", nil
}
