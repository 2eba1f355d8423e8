package actions

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	commoncfg "github.com/prometheus/common/config"

	"github.com/selfheal/selfheal/remediator/action"
)

func init() {
	register("http", newHTTPParams, func(d Deps) action.Executor { return HTTP{Client: d.HTTPClient} })
}

// HTTPParams are http's parameters: the request to send.
type HTTPParams struct {
	URL     string            `yaml:"url"`
	Method  string            `yaml:"method"`
	Headers map[string]string `yaml:"headers"`
	// HTTPConfig, when set, is how to reach the URL: TLS, basic auth, a
	// bearer token, a proxy (Prometheus' http_config; files by absolute
	// path).
	HTTPConfig *commoncfg.HTTPClientConfig `yaml:"http_config"`
}

func newHTTPParams() action.Params { return &HTTPParams{Method: http.MethodPost} }

// Problems implements action.Params.
func (p *HTTPParams) Problems() []string {
	var probs []string
	if u, err := url.Parse(p.URL); p.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		probs = append(probs, fmt.Sprintf("url: %q is not an http or https URL", p.URL))
	}
	if p.Method == "" || strings.ContainsAny(p.Method, " \t\r\n") {
		probs = append(probs, fmt.Sprintf("method: %q is not an HTTP method", p.Method))
	}
	if p.HTTPConfig != nil {
		if err := p.HTTPConfig.Validate(); err != nil {
			probs = append(probs, fmt.Sprintf("http_config: %v", err))
		}
	}
	return probs
}

// HTTP calls a configured URL, such as an LLM server's cache-clearing
// endpoint. Success is a 2xx answer within the remediation's timeout.
type HTTP struct {
	Client *http.Client
}

var _ action.Executor = HTTP{}

// Permit implements action.Executor: the URL comes from the configuration,
// never from the alert, so there is nothing to refuse.
func (HTTP) Permit(context.Context, action.Request) error { return nil }

// Execute implements action.Executor.
func (a HTTP) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	act := paramsOf[*HTTPParams](req, newHTTPParams)
	r, err := http.NewRequestWithContext(ctx, act.Method, act.URL, nil)
	if err != nil {
		return action.Result{}, err
	}
	r.Header.Set("User-Agent", "selfheal")
	for k, v := range act.Headers {
		r.Header.Set(k, v)
	}
	client := a.Client
	if client == nil {
		client = http.DefaultClient
	}
	if act.HTTPConfig != nil {
		if client, err = commoncfg.NewClientFromConfig(*act.HTTPConfig, "selfheal-http-action"); err != nil {
			return action.Result{}, fmt.Errorf("http_config: %w", err)
		}
	}
	start := time.Now()
	resp, err := client.Do(r)
	if err != nil {
		return action.Result{}, fmt.Errorf("%s %s: %w", act.Method, act.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	res := action.Result{Details: map[string]any{
		"url": act.URL, "status": resp.StatusCode, "seconds": time.Since(start).Seconds(),
	}}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return res, fmt.Errorf("%s %s: %s: %s", act.Method, act.URL, resp.Status, string(body))
	}
	return res, nil
}
