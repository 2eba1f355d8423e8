package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/selfheal/selfheal/internal/labelset"
	"github.com/selfheal/selfheal/remediator/policy"
)

// CriticalEventsAlert is the alert selfheal raises itself when too many
// CRITICAL or EMERGENCY events fall in the window; a remediation matching
// alertname="CriticalEventsThreshold" (category D, the reboot) acts on it.
// Prometheus cannot see these events, so the count lives in the engine.
const CriticalEventsAlert = "CriticalEventsThreshold"

func (e *Engine) criticalEventsLabels() map[string]string {
	return map[string]string{
		"alertname": CriticalEventsAlert, "category": policy.CategoryD, "severity": "critical", "instance": e.host,
		"node": e.config().Node.Name,
	}
}

// watchCriticalEvents keeps the CriticalEventsThreshold alert firing
// while the count is at or above the threshold, and resolves it when it
// drops. It goes through the same ingestion as webhook deliveries, under a
// lock that makes replicas deciding at once raise one occurrence (one
// start time), so the same idempotency holds across replicas and restarts.
func (e *Engine) watchCriticalEvents(ctx context.Context) {
	ce := e.config().Engine.CriticalEvents
	n, err := e.store.CriticalEvents(ctx, ce.Window.D())
	if err != nil {
		e.logger.Debug("cannot count critical events", "err", err)
		return
	}
	labels := e.criticalEventsLabels()
	fp := labelset.Fingerprint(labels)
	res, err := e.store.RaiseOwnAlert(ctx, fp, e.config().Engine.ReopenAfter.D(), func(since time.Time, firing bool) *model.Alert {
		now := time.Now().UTC().Truncate(time.Millisecond)
		a := model.Alert{Fingerprint: fp, Alertname: CriticalEventsAlert, Labels: labels,
			Annotations: map[string]string{"summary": fmt.Sprintf("%d critical events in the last %s (threshold %d)", n, ce.Window, ce.Threshold)}}
		switch {
		case n >= ce.Threshold:
			a.Status, a.StartsAt = "firing", now
			if firing {
				a.StartsAt = since
			} else {
				e.logger.Warn("critical events over the threshold", "count", n, "window", ce.Window, "threshold", ce.Threshold)
			}
			if r := e.config().Match(labels); r != nil {
				a.Remediation = r.Name
			}
		case firing:
			a.Status, a.StartsAt, a.EndsAt = "resolved", since, now
		default:
			return nil
		}
		return &a
	})
	if err != nil {
		e.logger.Warn("cannot record the critical-events alert", "err", err)
		return
	}
	if res.JobsQueued > 0 {
		e.Wake()
	}
}
