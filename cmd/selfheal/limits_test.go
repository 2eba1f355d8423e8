package main

// Limits under concurrency: two replicas of four workers each, the
// deliveries for several targets arriving at once — and, as from an
// Alertmanager HA pair, at both replicas at once. However the decisions
// interleave, the storm brake and max_concurrent_actions admit no more
// than they allow.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/internal/pgtest"
)

// actionReceiver is the endpoint an http action calls: it holds each call
// for hold and remembers the most calls it ever had in flight.
type actionReceiver struct {
	hold              time.Duration
	inFlight, maxSeen atomic.Int64
	calls             atomic.Int64
}

func (a *actionReceiver) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	n := a.inFlight.Add(1)
	for {
		m := a.maxSeen.Load()
		if n <= m || a.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	a.calls.Add(1)
	time.Sleep(a.hold)
	a.inFlight.Add(-1)
}

// deliverAtOnce posts one delivery of alerts — one per target, all new
// occurrences starting at startsAt — to every replica at the same moment.
func deliverAtOnce(t *testing.T, replicas []string, alertname string, targets []string, startsAt time.Time) {
	t.Helper()
	var alerts []map[string]any
	for _, target := range targets {
		alerts = append(alerts, map[string]any{"status": "firing", "startsAt": startsAt.UTC().Format(time.RFC3339Nano),
			"labels": map[string]string{"alertname": alertname, "service": target, "instance": "localhost:9595"}})
	}
	body, _ := json.Marshal(map[string]any{"version": "4", "status": "firing", "groupKey": "{}:{}", "alerts": alerts})
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, addr := range replicas {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/webhook", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer tok")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("delivery to %s: %d", addr, resp.StatusCode)
			}
		})
	}
	close(start)
	wg.Wait()
}

// TestLimitsHoldAcrossReplicas: two `selfheal serve` replicas of four
// workers on one database. Each wave delivers alerts for five targets to
// both replicas at once (an Alertmanager HA pair). With the storm brake at
// one action per window, no window ever holds two actions; with
// max_concurrent_actions at one, no two actions ever run at once — seen by
// the endpoint the actions call and in recovery_actions — and every alert
// is acted on in turn.
func TestLimitsHoldAcrossReplicas(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		engine string
		waves  int
		gap    time.Duration // between waves
	}{
		{name: "storm brake", waves: 20, gap: 600 * time.Millisecond,
			engine: `{workers: 4, poll_interval: 100ms, max_concurrent_actions: 100, storm_brake: {max_actions: 1, window: 500ms}}`},
		{name: "max_concurrent_actions", waves: 20, gap: 150 * time.Millisecond,
			engine: `{workers: 4, poll_interval: 100ms, max_concurrent_actions: 1, storm_brake: {max_actions: 1000}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			recv := &actionReceiver{hold: 80 * time.Millisecond}
			srv := httptest.NewServer(recv)
			defer srv.Close()
			dsn := pgtest.DSN(t)
			env := []string{"SELFHEAL_DATABASE_URL=" + dsn, "SELFHEAL_WEBHOOK_TOKEN=tok"}
			config := writeFile(t, "selfheal.yml", fmt.Sprintf(`
engine: %s
targets: {docker: {require_label: %s}}
remediations:
  - name: overload
    match: ['alertname="ServiceOverloaded"']
    category: B
    target: '{{ .Labels.service }}'
    action: {type: http, url: '%s/act'}
    cooldown: 0s
    timeout: 10s
`, tc.engine, dockertest.UniqueName("selfheal.limits")+"=yes", srv.URL))
			replicas := []string{freeAddr(t), freeAddr(t)}
			for _, addr := range replicas {
				daemon(t, env, config, addr, "--log.level=info", "--no-exporter")
			}
			conn := connect(t, dsn)
			base := time.Now()
			for w := range tc.waves {
				var targets []string
				for i := range 5 {
					targets = append(targets, fmt.Sprintf("svc-%d-%d", w, i))
				}
				deliverAtOnce(t, replicas, "ServiceOverloaded", targets, base.Add(time.Duration(w)*time.Millisecond))
				time.Sleep(tc.gap)
			}
			dockertest.WaitFor(t, 60*time.Second, "every job decided", func() bool {
				return queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE state = 'queued'`) == 0 &&
					queryInt(t, conn, `SELECT count(*) FROM recovery_actions WHERE status = 'running'`) == 0
			})
			// Every delivery reached both replicas: one occurrence and one
			// job per target all the same.
			if n := queryInt(t, conn, `SELECT count(*) FROM alert_occurrences WHERE deliveries = 2`); n != 5*tc.waves {
				t.Errorf("%d occurrences delivered twice, want %d", n, 5*tc.waves)
			}
			if n := queryInt(t, conn, `SELECT count(*) FROM remediation_jobs`); n != 5*tc.waves {
				t.Errorf("%d jobs, want one per target: %d", n, 5*tc.waves)
			}
			actions := queryInt(t, conn, `SELECT count(*) FROM recovery_actions`)
			overlapping := queryInt(t, conn, `SELECT count(*) FROM recovery_actions a JOIN recovery_actions b ON a.id < b.id
				AND a.started_at < b.completed_at AND b.started_at < a.completed_at`)
			switch tc.name {
			case "storm brake":
				if crowded := queryInt(t, conn, `SELECT count(*) FROM recovery_actions a JOIN recovery_actions b ON a.id < b.id
					AND abs(EXTRACT(EPOCH FROM b.started_at - a.started_at)) < 0.5`); crowded != 0 {
					t.Errorf("%d pairs of actions within one storm window of 500ms (limit 1)", crowded)
				}
				if actions < tc.waves/2 || actions > tc.waves+1 {
					t.Errorf("%d actions over %d waves a window apart, want about one a wave", actions, tc.waves)
				}
			case "max_concurrent_actions":
				if recv.maxSeen.Load() != 1 || overlapping != 0 {
					t.Errorf("%d actions ran at once at the endpoint, %d overlapping pairs recorded: the limit is 1", recv.maxSeen.Load(), overlapping)
				}
				if actions != 5*tc.waves || recv.calls.Load() != int64(5*tc.waves) {
					t.Errorf("%d actions recorded, %d calls: want every one of the %d alerts acted on in turn", actions, recv.calls.Load(), 5*tc.waves)
				}
			}
			if n := queryInt(t, conn, `SELECT count(*) FROM remediation_jobs WHERE outcome = 'refused' OR state = 'interrupted'`); n != 0 {
				t.Errorf("%d jobs refused or interrupted", n)
			}
			if t.Failed() {
				_, out, _ := selfheal(t, env, "events", "--limit=60")
				t.Log(strings.TrimSpace(out))
			}
		})
	}
}
