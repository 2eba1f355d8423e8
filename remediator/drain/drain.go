// Package drain waits, before a disruptive action, until a service has no
// work in flight: until a PromQL expression (the service's in-flight
// requests) reads 0 in Prometheus. The engine calls it for a remediation
// whose drain says so, after the drain hook (an HTTP call telling the
// service to stop taking work) and before the action.
package drain

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Waiter queries one Prometheus's HTTP API (/api/v1/query).
type Waiter struct {
	base   *url.URL
	client *http.Client
	// Poll is the interval between queries; zero: one second.
	Poll time.Duration
}

// New returns a Waiter for the Prometheus at base (http or https).
func New(base string, client *http.Client) (*Waiter, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus_url: %q is not an http or https URL", base)
	}
	if client == nil {
		client = http.DefaultClient
	}
	return &Waiter{base: u, client: client}, nil
}

// Wait is what one wait found.
type Wait struct {
	// Drained: the expression read 0 (every sample, or none).
	Drained bool
	// Last is the last sum of the expression's samples read; Queries how
	// many queries it took.
	Last    float64
	Queries int
	// Waited is how long it took.
	Waited time.Duration
	// Err is the last query's error, if it failed.
	Err error
}

// Until queries expr until it reads 0 or ctx ends (its deadline is the
// drain's timeout). A result with no samples reads 0: a service that is
// down, whose series went stale, has nothing in flight. A query that fails
// is tried again until ctx ends; Wait says so.
func (w *Waiter) Until(ctx context.Context, expr string) Wait {
	poll := w.Poll
	if poll <= 0 {
		poll = time.Second
	}
	start := time.Now()
	var res Wait
	for {
		res.Queries++
		v, err := w.read(ctx, expr)
		res.Err = err
		if err == nil {
			res.Last = v
			if v == 0 {
				res.Drained = true
				break
			}
		}
		select {
		case <-ctx.Done():
			res.Waited = time.Since(start)
			return res
		case <-time.After(poll):
		}
	}
	res.Waited = time.Since(start)
	return res
}

// read is the sum of expr's samples now.
func (w *Waiter) read(ctx context.Context, expr string) (float64, error) {
	u := w.base.JoinPath("api/v1/query")
	u.RawQuery = url.Values{"query": {expr}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return 0, fmt.Errorf("query %s: HTTP %d, not Prometheus's answer: %.200s", expr, resp.StatusCode, body)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("query %s: %s", expr, r.Error)
	}
	switch r.Data.ResultType {
	case "vector":
		var samples []struct {
			Value [2]any `json:"value"`
		}
		if err := json.Unmarshal(r.Data.Result, &samples); err != nil {
			return 0, fmt.Errorf("query %s: %w", expr, err)
		}
		var sum float64
		for _, s := range samples {
			v, err := sampleValue(s.Value)
			if err != nil {
				return 0, fmt.Errorf("query %s: %w", expr, err)
			}
			sum += v
		}
		return sum, nil
	case "scalar":
		var v [2]any
		if err := json.Unmarshal(r.Data.Result, &v); err != nil {
			return 0, fmt.Errorf("query %s: %w", expr, err)
		}
		return sampleValue(v)
	}
	return 0, fmt.Errorf("query %s: the expression must give an instant vector or a scalar, not a %s", expr, r.Data.ResultType)
}

// sampleValue is a [time, "value"] pair's value.
func sampleValue(v [2]any) (float64, error) {
	s, ok := v[1].(string)
	if !ok {
		return 0, fmt.Errorf("sample %v has no value", v)
	}
	return strconv.ParseFloat(strings.TrimSpace(s), 64)
}
