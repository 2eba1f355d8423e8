package docker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/exporter/exportertest"
	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/remediator/optin"
)

// countingAPI counts the Docker calls the collector makes.
type countingAPI struct {
	API
	calls atomic.Int64
}

func (c *countingAPI) ContainerList(ctx context.Context, o client.ContainerListOptions) (client.ContainerListResult, error) {
	c.calls.Add(1)
	return c.API.ContainerList(ctx, o)
}

func (c *countingAPI) ContainerInspect(ctx context.Context, id string, o client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	c.calls.Add(1)
	return c.API.ContainerInspect(ctx, id, o)
}

// start runs a collector that sees only this test's containers (a label of
// its own), and waits until it is in sync.
func start(t *testing.T, all bool) (*Collector, *countingAPI, map[string]string) {
	t.Helper()
	api, _ := dockertest.Client(t)
	key := dockertest.UniqueName("selfheal.test.collector")
	label := map[string]string{key: "yes"}
	capi := &countingAPI{API: api}
	c := New(capi, Options{OptIn: optin.NewCurrent(optin.New(key+"=yes", nil)), All: all}, slog.New(slog.DiscardHandler))
	run(t, c)
	return c, capi, label
}

// run runs c until the test ends, and waits until it is in sync.
func run(t *testing.T, c *Collector) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	dockertest.WaitFor(t, 10*time.Second, "collector in sync", func() bool {
		c.mu.RLock()
		defer c.mu.RUnlock()
		return c.synced
	})
}

func scrape(t *testing.T, c *Collector) string {
	t.Helper()
	return exportertest.Exposition(t, c)
}

func waitFor(t *testing.T, c *Collector, timeout time.Duration, want string) time.Duration {
	t.Helper()
	began := time.Now()
	dockertest.WaitFor(t, timeout, want, func() bool { return strings.Contains(scrape(t, c), want) })
	return time.Since(began)
}

func TestStartAndKill(t *testing.T) {
	c, _, label := start(t, false)
	name := dockertest.Run(t, dockertest.Spec{Labels: label})
	waitFor(t, c, 5*time.Second, `selfheal_container_running{name="`+name+`"} 1`)
	out := scrape(t, c)
	if !strings.Contains(out, `selfheal_container_info{id="`) || !strings.Contains(out, `selfheal_container_start_time_seconds{name="`+name+`"}`) {
		t.Errorf("missing info or start time:\n%s", out)
	}
	if strings.Contains(out, "selfheal_container_health_status") {
		t.Error("health series for a container without a health check")
	}
	dockertest.Kill(t, name)
	took := waitFor(t, c, 5*time.Second, `selfheal_container_running{name="`+name+`"} 0`)
	if took > time.Second {
		t.Errorf("a killed container showed as stopped after %s, want under 1s", took)
	}
	waitFor(t, c, time.Second, `selfheal_container_last_exit_code{name="`+name+`"} 137`)
}

// TestNeverStartedHasNoStartTime: a container created and not yet started
// reports running 0 and no start time; ServiceDown, which calls a container
// down only once it has a start time, leaves it alone.
func TestNeverStartedHasNoStartTime(t *testing.T) {
	c, _, label := start(t, false)
	name := dockertest.Run(t, dockertest.Spec{Labels: label, Stopped: true})
	waitFor(t, c, 5*time.Second, `selfheal_container_running{name="`+name+`"} 0`)
	if out := scrape(t, c); strings.Contains(out, `selfheal_container_start_time_seconds{name="`+name+`"}`) {
		t.Errorf("a start time for a container never started:\n%s", out)
	}
	api, _ := dockertest.Client(t)
	if _, err := api.ContainerStart(context.Background(), name, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, c, 5*time.Second, `selfheal_container_start_time_seconds{name="`+name+`"}`)
}

func TestUnhealthy(t *testing.T) {
	c, _, label := start(t, false)
	name := dockertest.Run(t, dockertest.Spec{Labels: label, Args: []string{"-healthy-after=-1s"}, Health: 200 * time.Millisecond})
	waitFor(t, c, 10*time.Second, `selfheal_container_health_status{name="`+name+`",status="unhealthy"} 1`)
	out := scrape(t, c)
	if !strings.Contains(out, `selfheal_container_health_status{name="`+name+`",status="healthy"} 0`) {
		t.Errorf("healthy series not 0:\n%s", out)
	}
}

// TestStoppedContainerReportsNoHealth: Docker calls a container it stops
// unhealthy; the collector reports no health for it, so ContainerUnhealthy
// does not fire beside ServiceDown for every kill.
func TestStoppedContainerReportsNoHealth(t *testing.T) {
	c, _, label := start(t, false)
	name := dockertest.Run(t, dockertest.Spec{Labels: label, Health: 200 * time.Millisecond})
	waitFor(t, c, 10*time.Second, `selfheal_container_health_status{name="`+name+`",status="healthy"} 1`)
	dockertest.Kill(t, name)
	waitFor(t, c, 5*time.Second, `selfheal_container_running{name="`+name+`"} 0`)
	if out := scrape(t, c); strings.Contains(out, `selfheal_container_health_status{name="`+name+`"`) {
		t.Errorf("health reported for a stopped container:\n%s", out)
	}
}

func TestRestartCount(t *testing.T) {
	c, _, label := start(t, false)
	name := dockertest.Run(t, dockertest.Spec{Labels: label, Args: []string{"-exit-after=200ms"},
		Restart: container.RestartPolicyOnFailure, MaxRetries: 2})
	waitFor(t, c, 20*time.Second, `selfheal_container_restarts_total{name="`+name+`"} 2`)
}

func TestOnlyOptedInUnlessAll(t *testing.T) {
	c, _, label := start(t, false)
	opted := dockertest.Run(t, dockertest.Spec{Labels: label})
	other := dockertest.Run(t, dockertest.Spec{})
	waitFor(t, c, 5*time.Second, `name="`+opted+`"`)
	if strings.Contains(scrape(t, c), other) {
		t.Fatal("a container without the label is reported")
	}
	all, _, _ := start(t, true)
	waitFor(t, all, 5*time.Second, `selfheal_container_running{name="`+other+`"} 1`)
}

func TestScrapeCallsNoDockerAPI(t *testing.T) {
	c, api, label := start(t, false)
	var names []string
	for range 5 {
		names = append(names, dockertest.Run(t, dockertest.Spec{Labels: label}))
	}
	for _, n := range names {
		waitFor(t, c, 5*time.Second, `selfheal_container_running{name="`+n+`"} 1`)
	}
	// The events stream still catching up on the starts (it replays the
	// second before each listing, and inspects what an event names) is
	// the collector's own work, not a scrape's: wait until it is done.
	dockertest.WaitFor(t, 10*time.Second, "the collector's event handling idle", func() bool {
		n := api.calls.Load()
		time.Sleep(500 * time.Millisecond)
		return api.calls.Load() == n
	})
	before := api.calls.Load()
	for range 20 {
		scrape(t, c)
	}
	if n := api.calls.Load() - before; n != 0 {
		t.Fatalf("20 scrapes made %d Docker calls, want 0", n)
	}
}

func TestRemovedContainerDisappears(t *testing.T) {
	c, _, label := start(t, false)
	name := dockertest.Run(t, dockertest.Spec{Labels: label})
	waitFor(t, c, 5*time.Second, `name="`+name+`"`)
	api, _ := dockertest.Client(t)
	if _, err := api.ContainerRemove(context.Background(), name, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	dockertest.WaitFor(t, 5*time.Second, "series gone", func() bool { return !strings.Contains(scrape(t, c), name) })
}

func TestNotSyncedFails(t *testing.T) {
	c := New(nil, Options{}, slog.New(slog.DiscardHandler))
	ch := make(chan prometheus.Metric, 10)
	if err := c.Update(ch); err == nil || !strings.Contains(err.Error(), "container state unknown") {
		t.Fatalf("Update before sync = %v", err)
	}
}

// TestOptedInByName: the collector reports what selfheal may touch — a
// container named in targets.docker.containers counts though it lacks the
// label — and nothing else.
func TestOptedInByName(t *testing.T) {
	api, _ := dockertest.Client(t)
	key := dockertest.UniqueName("selfheal.test.byname")
	listed := dockertest.Run(t, dockertest.Spec{})
	other := dockertest.Run(t, dockertest.Spec{})
	labelled := dockertest.Run(t, dockertest.Spec{Labels: map[string]string{key: "yes"}})
	c := New(api, Options{OptIn: optin.NewCurrent(optin.New(key+"=yes", []string{listed}))}, slog.New(slog.DiscardHandler))
	run(t, c)
	waitFor(t, c, 10*time.Second, `selfheal_container_running{name="`+listed+`"} 1`)
	waitFor(t, c, 5*time.Second, `selfheal_container_running{name="`+labelled+`"} 1`)
	dockertest.Kill(t, listed)
	waitFor(t, c, 5*time.Second, `selfheal_container_running{name="`+listed+`"} 0`)
	if out := scrape(t, c); strings.Contains(out, `name="`+other+`"`) {
		t.Errorf("a container neither labelled nor listed is reported:\n%s", out)
	}
}

// TestRuleChangeTakesEffect: a reload that withdraws a container's opt-in
// (or grants another's) changes what the collector reports, and whose
// events it passes on, without a reconnection's backoff.
func TestRuleChangeTakesEffect(t *testing.T) {
	api, _ := dockertest.Client(t)
	key := dockertest.UniqueName("selfheal.test.reload")
	first := dockertest.Run(t, dockertest.Spec{Labels: map[string]string{key: "yes"}})
	second := dockertest.Run(t, dockertest.Spec{})
	rule := optin.NewCurrent(optin.New(key+"=yes", nil))
	var events atomic.Int64
	c := New(api, Options{OptIn: rule, OnEvent: func(Event) { events.Add(1) }}, slog.New(slog.DiscardHandler))
	run(t, c)
	waitFor(t, c, 10*time.Second, `selfheal_container_running{name="`+first+`"} 1`)

	rule.Set(optin.New("", []string{second}))
	waitFor(t, c, 10*time.Second, `selfheal_container_running{name="`+second+`"} 1`)
	if out := scrape(t, c); strings.Contains(out, `name="`+first+`"`) {
		t.Fatalf("a container whose opt-in was withdrawn is still reported:\n%s", out)
	}
	dockertest.Kill(t, first)
	dockertest.Kill(t, second)
	// The stream is in order: once the second death is passed on, the
	// first (earlier) was seen, and was not.
	dockertest.WaitFor(t, 10*time.Second, "the opted-in container's death passed on", func() bool { return events.Load() >= 1 })
	if n := events.Load(); n != 1 {
		t.Fatalf("%d events passed on, want 1: the death of the container still opted in, not of the withdrawn one", n)
	}
}

// flakyEvents is a Docker API whose events stream fails after a while.
type flakyEvents struct {
	API
	lastFor func(n int) time.Duration // how long the n-th stream lasts
	opened  chan time.Time
	n       int
}

func (f *flakyEvents) ContainerList(context.Context, client.ContainerListOptions) (client.ContainerListResult, error) {
	return client.ContainerListResult{}, nil
}

func (f *flakyEvents) Events(ctx context.Context, _ client.EventsListOptions) client.EventsResult {
	f.n++
	f.opened <- time.Now()
	errs := make(chan error, 1)
	d := f.lastFor(f.n)
	go func() {
		select {
		case <-ctx.Done():
		case <-time.After(d):
			errs <- errors.New("stream lost")
		}
	}()
	return client.EventsResult{Messages: make(chan events.Message), Err: errs}
}

// TestReconnectBackoffResets: after a stream that stayed up for a while is
// lost, the collector reconnects after a second again, not after the
// backoff its earlier losses reached.
func TestReconnectBackoffResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := &flakyEvents{opened: make(chan time.Time, 100), lastFor: func(n int) time.Duration {
			if n == 5 {
				return 2 * healthyAfter // healthy for a while, then lost
			}
			return 0
		}}
		c := New(api, Options{OptIn: optin.NewCurrent(optin.New("x", nil))}, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { c.Run(ctx); close(done) }()
		var opened []time.Time
		for range 7 {
			opened = append(opened, <-api.opened)
		}
		cancel()
		<-done
		gap := func(i int) time.Duration { return opened[i].Sub(opened[i-1]) }
		// Losses 1–4 back off 1, 2, 4, 8 s; stream 5 lasts; its loss waits 1 s.
		if gap(4) != 8*time.Second {
			t.Fatalf("the fourth loss waited %s, want 8s", gap(4))
		}
		if got := gap(5) - 2*healthyAfter; got != time.Second {
			t.Fatalf("after a healthy stream the reconnection waited %s, want 1s", got)
		}
		if gap(6) != 2*time.Second {
			t.Fatalf("the next loss waited %s, want 2s", gap(6))
		}
	})
}

// gatedInspects is a Docker API whose inspects wait while held is set.
type gatedInspects struct {
	API
	held    atomic.Bool
	release chan struct{}
}

func (g *gatedInspects) ContainerInspect(ctx context.Context, id string, o client.ContainerInspectOptions) (client.ContainerInspectResult, error) {
	if g.held.Load() {
		select {
		case <-g.release:
		case <-ctx.Done():
			return client.ContainerInspectResult{}, ctx.Err()
		}
	}
	return g.API.ContainerInspect(ctx, id, o)
}

// TestKnownDeathIsToldAtOnce: the death of a container the collector
// already knows is passed on without waiting for the inspect that follows
// it (which the Docker Engine answers only once it has cleaned up after
// the container), with the exit code from the event and the restart
// policy the collector kept.
func TestKnownDeathIsToldAtOnce(t *testing.T) {
	t.Parallel()
	api, _ := dockertest.Client(t)
	key := dockertest.UniqueName("selfheal.test.collector")
	name := dockertest.Run(t, dockertest.Spec{Labels: map[string]string{key: "yes"}})
	gated := &gatedInspects{API: api, release: make(chan struct{})}
	told := make(chan Event, 4)
	c := New(gated, Options{OptIn: optin.NewCurrent(optin.New(key+"=yes", nil)), OnEvent: func(ev Event) { told <- ev }},
		slog.New(slog.DiscardHandler))
	run(t, c)
	waitFor(t, c, 10*time.Second, `selfheal_container_running{name="`+name+`"} 1`)
	gated.held.Store(true)
	defer close(gated.release)
	dockertest.Kill(t, name)
	select {
	case ev := <-told:
		if ev.Container != name || ev.Action != "die" || ev.ExitCode != 137 || ev.RestartPolicy != "no" {
			t.Fatalf("told %+v, want %s's die with exit code 137 and restart policy no", ev, name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the death was not passed on while the inspect after it waited")
	}
}
