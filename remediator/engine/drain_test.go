package engine

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/model"
	"github.com/selfheal/selfheal/remediator/policy"
)

// promAnswer serves Prometheus's instant-query answer with one sample
// whose value inflight holds (the drain package's own test runs a real
// Prometheus; here only the engine's use of it is under test).
func promAnswer(t *testing.T, inflight *atomic.Int64) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"%d"]}]}}`, inflight.Load())
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestDrainBeforeTheAction: a remediation with a drain calls its hook and
// waits for the service's in-flight requests to reach 0 before the
// restart, and records both with the action; one that does not drain in
// time runs all the same (on_timeout: proceed) or fails unrun (fail).
func TestDrainBeforeTheAction(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inflight  int64
		onTimeout string
		ran       bool
		result    model.JobOutcome
		outcome   string
	}{
		{"drained", 0, "proceed", true, model.OutcomeSucceeded, "drained"},
		{"busy, proceed", 4, "proceed", true, model.OutcomeSucceeded, "not drained: the action ran all the same (on_timeout: proceed)"},
		{"busy, fail", 4, "fail", false, model.OutcomeFailed, "not drained: the action was not run (on_timeout: fail)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var inflight atomic.Int64
			inflight.Store(tc.inflight)
			cfg, err := policy.Parse([]byte(fmt.Sprintf(`
remediations:
  - name: llm-down
    match: ['alertname="ServiceDown"']
    category: A
    target: '{{ .Labels.service }}'
    action: restart
    drain:
      http: {url: 'http://llm:8000/admin/drain'}
      until: 'sum(llm_requests_running)'
      prometheus_url: '%s'
      timeout: 300ms
      on_timeout: %s
`, promAnswer(t, &inflight), tc.onTimeout)))
			if err != nil {
				t.Fatal(err)
			}
			cfg.Node.Name = "edge-01" // the job's alert is this node's
			restart, hook := &fakeExec{}, &fakeExec{}
			e, err := New(&fakeStore{}, cfg, map[string]action.Executor{"restart": restart, "http": hook},
				slog.New(slog.DiscardHandler), prometheus.NewPedanticRegistry())
			if err != nil {
				t.Fatal(err)
			}
			c := &fakeClaim{job: job("llm-down", "llm", 1)}
			e.claim = func(context.Context, model.ClaimFilter) (Claim, error) { return c, nil }
			if _, err := e.ProcessOne(context.Background()); err != nil {
				t.Fatal(err)
			}
			if len(hook.ran) != 1 || hook.ran[0].Target != "llm" {
				t.Fatalf("drain hook calls %+v, want one for llm (outcome %+v)", hook.ran, c.outcome)
			}
			if (len(restart.ran) == 1) != tc.ran {
				t.Fatalf("restart ran %d times, want it run: %v", len(restart.ran), tc.ran)
			}
			o := c.outcome
			d, _ := o.ActionDetail["drain"].(map[string]any)
			if o.Result != tc.result || d["outcome"] != tc.outcome || d["last_value"] != float64(tc.inflight) || d["hook"] == nil {
				t.Fatalf("outcome %s %q, drain %v", o.Result, o.ActionError, d)
			}
			if tc.result == model.OutcomeFailed && !strings.Contains(o.ActionError, "sum(llm_requests_running) still read 4") {
				t.Fatalf("action error %q", o.ActionError)
			}
		})
	}
}
