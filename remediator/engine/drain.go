package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/drain"
	"github.com/selfheal/selfheal/remediator/policy"
)

// drain runs r's drain, when it has one, before its action on target: the
// hook (through the http action's executor), then the wait until its
// PromQL expression reads 0, both within the drain's timeout. It returns
// what it did, stored with the action, and an error when the action must
// not run (on_timeout: fail and the service did not drain).
func (e *Engine) drain(ctx context.Context, r *policy.Remediation, target string, log *slog.Logger) (map[string]any, error) {
	d := r.Drain
	if d == nil {
		return nil, nil
	}
	dctx, cancel := context.WithTimeout(ctx, d.Timeout.D())
	defer cancel()
	rec := map[string]any{"timeout_seconds": d.Timeout.D().Seconds(), "on_timeout": d.OnTimeout}
	var problems []error
	if d.HTTP != nil {
		res, err := e.executors["http"].Execute(dctx, action.Request{Target: target, Params: d.HTTP})
		rec["hook"] = res.Details
		if err != nil {
			rec["hook_error"] = err.Error()
			problems = append(problems, fmt.Errorf("the drain hook failed: %w", err))
		}
	}
	if d.Until != "" {
		w, err := drain.New(d.PrometheusURL, nil)
		if err != nil {
			return rec, err // validated with the configuration: not reached
		}
		res := w.Until(dctx, d.Until)
		rec["until"], rec["drained"], rec["last_value"] = d.Until, res.Drained, res.Last
		rec["queries"], rec["waited_seconds"] = res.Queries, res.Waited.Seconds()
		if res.Err != nil {
			rec["query_error"] = res.Err.Error()
		}
		if !res.Drained {
			problems = append(problems, fmt.Errorf("%s still read %v when the drain's %s had passed", d.Until, res.Last, d.Timeout))
		}
	}
	if len(problems) == 0 {
		rec["outcome"] = "drained"
		return rec, nil
	}
	err := errors.Join(problems...)
	if d.OnTimeout == policy.DrainFail {
		rec["outcome"] = "not drained: the action was not run (on_timeout: fail)"
		return rec, fmt.Errorf("drain before %s: %w; on_timeout is fail, so it was not run", target, err)
	}
	rec["outcome"] = "not drained: the action ran all the same (on_timeout: proceed)"
	log.Warn("not drained; acting all the same (on_timeout: proceed)", "target", target, "err", err)
	return rec, nil
}
