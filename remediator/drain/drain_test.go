package drain

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/selfheal/selfheal/internal/testenv"
)

// prometheus runs a real Prometheus scraping, every 200 ms, an exporter
// whose in-flight gauge is inflight.
func prometheus(t *testing.T, inflight *atomic.Int64) string {
	t.Helper()
	bin := testenv.Tool(t, "prometheus", true)
	exp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "# TYPE llm_requests_running gauge\nllm_requests_running{model=\"a\"} %d\nllm_requests_running{model=\"b\"} 0\n", inflight.Load())
	}))
	t.Cleanup(exp.Close)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("global: {scrape_interval: 200ms}\nscrape_configs:\n  - job_name: llm\n    static_configs: [{targets: ['%s']}]\n",
		strings.TrimPrefix(exp.URL, "http://"))), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	url := "http://" + addr
	w, err := New(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "Prometheus holding the exporter's gauge", func() bool {
		v, err := w.read(context.Background(), `count(llm_requests_running)`)
		return err == nil && v == 2
	})
	return url
}

// TestUntilWaitsForTheWorkInFlight: the wait goes on while the service
// has requests in flight and ends once Prometheus reads none.
func TestUntilWaitsForTheWorkInFlight(t *testing.T) {
	t.Parallel()
	var inflight atomic.Int64
	inflight.Store(3)
	w, err := New(prometheus(t, &inflight), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Poll = 100 * time.Millisecond
	const expr = `sum(llm_requests_running)`
	testenv.WaitFor(t, 10*time.Second, "Prometheus reading 3 in flight", func() bool {
		v, err := w.read(context.Background(), expr)
		return err == nil && v == 3
	})

	// Still busy when the timeout passes: not drained, the last reading kept.
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	res := w.Until(ctx, expr)
	cancel()
	if res.Drained || res.Last != 3 || res.Queries < 2 || res.Err != nil {
		t.Fatalf("busy service: %+v, want not drained, last 3, several queries", res)
	}

	// The requests finish a second into the wait.
	time.AfterFunc(time.Second, func() { inflight.Store(0) })
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res = w.Until(ctx, expr)
	if !res.Drained || res.Last != 0 || res.Waited < time.Second || res.Err != nil {
		t.Fatalf("drained service: %+v, want drained after at least a second", res)
	}

	// A service whose series are gone (down, stale) has nothing in flight.
	res = w.Until(ctx, `llm_requests_running{model="gone"}`)
	if !res.Drained || res.Queries != 1 {
		t.Fatalf("no series: %+v, want drained at the first query", res)
	}

	// A range vector is no reading: the error is kept, the wait times out.
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	res = w.Until(short, `llm_requests_running[1m]`)
	if res.Drained || res.Err == nil || !strings.Contains(res.Err.Error(), "instant vector or a scalar") {
		t.Fatalf("range vector: %+v", res)
	}
}
