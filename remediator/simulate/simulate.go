// Package simulate builds test alerts and posts them to selfheal's webhook,
// exactly as Alertmanager would, or to an Alertmanager's API so the whole
// routing path is exercised.
package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/alertmanager/template"
	"github.com/prometheus/common/model"

	"github.com/selfheal/selfheal/internal/labelset"
	"github.com/selfheal/selfheal/remediator/webhook"
)

// Alert is the alert to simulate.
type Alert struct {
	Labels      map[string]string
	Annotations map[string]string
	StartsAt    time.Time
	// Resolved sends the alert as resolved, ending now.
	Resolved bool
}

// ParseLabels turns ["service=llm", "severity=critical"] into a map.
func ParseLabels(pairs []string) (map[string]string, error) {
	m := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || !model.UTF8Validation.IsValidLabelName(k) {
			return nil, fmt.Errorf("%q is not label=value", p)
		}
		m[k] = v
	}
	return m, nil
}

// Message returns the version 4 webhook payload Alertmanager would send for a.
func Message(a Alert, now time.Time) *webhook.Message {
	ta := template.Alert{
		Status:      string(model.AlertFiring),
		Labels:      a.Labels,
		Annotations: a.Annotations,
		StartsAt:    a.StartsAt,
		Fingerprint: labelset.Fingerprint(a.Labels),
	}
	if ta.Annotations == nil {
		ta.Annotations = template.KV{}
	}
	if a.Resolved {
		ta.Status, ta.EndsAt = string(model.AlertResolved), now
	}
	return &webhook.Message{
		Data: &template.Data{
			Receiver:          "selfheal",
			Status:            ta.Status,
			Alerts:            template.Alerts{ta},
			GroupLabels:       template.KV{"alertname": a.Labels["alertname"]},
			CommonLabels:      a.Labels,
			CommonAnnotations: ta.Annotations,
			ExternalURL:       "selfheal-simulate",
		},
		Version:  "4",
		GroupKey: fmt.Sprintf("{}:{alertname=%q}", a.Labels["alertname"]),
	}
}

// PostWebhook sends m to selfheal's webhook, with a bearer token if given.
func PostWebhook(ctx context.Context, url, token string, m *webhook.Message) error {
	return post(ctx, http.DefaultClient, url, token, m)
}

// PostAlertmanager sends a to an Alertmanager's v2 API with client, as
// amtool does.
func PostAlertmanager(ctx context.Context, client *http.Client, amURL string, a Alert, now time.Time) error {
	// No generatorURL: Alertmanager requires a URI there, and a simulated
	// alert has no rule to link to.
	body := []map[string]any{{
		"labels":      a.Labels,
		"annotations": a.Annotations,
		"startsAt":    a.StartsAt,
	}}
	if a.Resolved {
		body[0]["endsAt"] = now
	}
	return post(ctx, client, strings.TrimRight(amURL, "/")+"/api/v2/alerts", "", body)
}

func post(ctx context.Context, client *http.Client, url, token string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("post to %s: %w", url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post to %s: %s: %s", url, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// amAlert is an alert as Alertmanager's API v2 lists it.
type amAlert struct {
	Labels    map[string]string `json:"labels"`
	Receivers []struct {
		Name string `json:"name"`
	} `json:"receivers"`
}

// activeAlerts reads GET /api/v2/alerts with the query's filters.
func activeAlerts(ctx context.Context, client *http.Client, amURL, query string) ([]amAlert, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(amURL, "/")+"/api/v2/alerts?"+query, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read alerts from %s: %w", amURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read alerts from %s: %s", amURL, resp.Status)
	}
	var alerts []amAlert
	if err := json.NewDecoder(resp.Body).Decode(&alerts); err != nil {
		return nil, fmt.Errorf("read alerts from %s: %w", amURL, err)
	}
	return alerts, nil
}

// FiringAlerts returns the labels of every alert an Alertmanager has
// active now and neither silenced nor inhibited (its API v2).
func FiringAlerts(ctx context.Context, client *http.Client, amURL string) ([]map[string]string, error) {
	alerts, err := activeAlerts(ctx, client, amURL, "active=true&silenced=false&inhibited=false&unprocessed=false")
	if err != nil {
		return nil, err
	}
	out := make([]map[string]string, len(alerts))
	for i, a := range alerts {
		out[i] = a.Labels
	}
	return out, nil
}

// Receivers returns the receivers Alertmanager routed the active alerts
// with exactly these labels to.
func Receivers(ctx context.Context, client *http.Client, amURL string, lset map[string]string) ([]string, error) {
	alerts, err := activeAlerts(ctx, client, amURL, "active=true")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range alerts {
		if maps.Equal(a.Labels, lset) {
			for _, r := range a.Receivers {
				out = append(out, r.Name)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
