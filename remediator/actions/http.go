package actions

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/selfheal/selfheal/remediator/engine"
)

// HTTP calls a configured URL, such as an LLM server's cache-clearing
// endpoint. Success is a 2xx answer within the remediation's timeout.
type HTTP struct {
	Client *http.Client
}

var _ engine.Executor = HTTP{}

// Permit implements engine.Executor: the URL comes from the configuration,
// never from the alert, so there is nothing to refuse.
func (HTTP) Permit(context.Context, engine.Request) error { return nil }

// Execute implements engine.Executor.
func (a HTTP) Execute(ctx context.Context, req engine.Request) (engine.Result, error) {
	act := req.Action
	r, err := http.NewRequestWithContext(ctx, act.Method, act.URL, nil)
	if err != nil {
		return engine.Result{}, err
	}
	r.Header.Set("User-Agent", "selfheal")
	for k, v := range act.Headers {
		r.Header.Set(k, v)
	}
	client := a.Client
	if client == nil {
		client = http.DefaultClient
	}
	start := time.Now()
	resp, err := client.Do(r)
	if err != nil {
		return engine.Result{}, fmt.Errorf("%s %s: %w", act.Method, act.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	res := engine.Result{Details: map[string]any{
		"url": act.URL, "status": resp.StatusCode, "seconds": time.Since(start).Seconds(),
	}}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return res, fmt.Errorf("%s %s: %s: %s", act.Method, act.URL, resp.Status, string(body))
	}
	return res, nil
}
