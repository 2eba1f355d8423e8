// Package docker collects the state of opted-in containers (all
// containers, with Options.All) from the Docker Engine. State is kept
// current from the events stream: each event re-reads the one container it
// names, so a scrape makes no Docker call at all, and a killed container
// shows as not running as soon as Docker reports it.
package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/remediator/optin"
)

// API is the part of the Docker client the collector uses.
type API interface {
	ContainerList(ctx context.Context, options client.ContainerListOptions) (client.ContainerListResult, error)
	ContainerInspect(ctx context.Context, id string, options client.ContainerInspectOptions) (client.ContainerInspectResult, error)
	Events(ctx context.Context, options client.EventsListOptions) client.EventsResult
}

// Options selects the containers.
type Options struct {
	// OptIn is selfheal's opt-in rule in force: the containers reported.
	// When a reload changes it, the containers are listed again.
	OptIn *optin.Current
	// All reports every container, opted in or not.
	All bool
	// OnEvent, when set, is told of every die and health_status: unhealthy
	// of an opted-in container (selfheal's fast path): at once for a
	// container the collector already knows, from the event and the state
	// kept for it; else once the container has been inspected. It must not
	// block.
	OnEvent func(Event)
}

// Event is a die or unhealthy of an opted-in container.
type Event struct {
	Container string
	// Action is "die" or "unhealthy".
	Action string
	Time   time.Time
	// RestartPolicy is the container's ("no", "always", "on-failure",
	// "unless-stopped"): one that is not "no" may be restarted by Docker.
	RestartPolicy string
	ExitCode      int
}

type state struct {
	id, name, image string
	labels          map[string]string
	optedIn         bool
	restartPolicy   string
	running         bool
	health          string // "" without a health check
	restarts        int
	exitCode        int
	startedAt       time.Time
}

// Collector is the docker collector.
type Collector struct {
	api    API
	opts   Options
	logger *slog.Logger

	mu         sync.RWMutex
	synced     bool
	containers map[string]state // by ID
	streamErr  error

	info, running, health, restarts, exitCode, started *prometheus.Desc
}

// New returns a docker collector; Run keeps its state current.
func New(api API, o Options, logger *slog.Logger) *Collector {
	l := []string{"name"}
	return &Collector{
		api: api, opts: o, logger: logger, containers: map[string]state{},
		streamErr: errors.New("not yet connected to the Docker events stream"),
		info: prometheus.NewDesc("selfheal_container_info", "Container identity; always 1.",
			[]string{"name", "id", "image"}, nil),
		running: prometheus.NewDesc("selfheal_container_running",
			"Whether the container is running (1) or not (0).", l, nil),
		health: prometheus.NewDesc("selfheal_container_health_status",
			"The container's health-check status: 1 for the current one (running containers with a health check only).",
			[]string{"name", "status"}, nil),
		restarts: prometheus.NewDesc("selfheal_container_restarts_total",
			"Restarts by the container's restart policy (Docker's RestartCount).", l, nil),
		exitCode: prometheus.NewDesc("selfheal_container_last_exit_code",
			"Exit code of the container's last run.", l, nil),
		started: prometheus.NewDesc("selfheal_container_start_time_seconds",
			"When the container last started, in seconds since the epoch.", l, nil),
	}
}

func (c *Collector) filters() client.Filters {
	// Docker's filters cannot say "this label or one of these names": with
	// names listed, every container's events come and Allows chooses.
	f := make(client.Filters)
	if rule := c.opts.OptIn.Rule(); !c.opts.All && rule.Label() != "" && len(rule.Names()) == 0 {
		f.Add("label", rule.Label())
	}
	return f
}

// stateEvents are the events that change what the collector keeps of a
// container, each followed by an inspect. The others are not asked for:
// a health check's exec events come at every interval of every container,
// and a kill or an oom comes just before the die that matters — an
// inspect made for it would hold up the die (events are applied in order).
// (The Engine matches "health_status" against every health_status: …
// event.)
var stateEvents = []events.Action{events.ActionCreate, events.ActionStart, events.ActionDie, events.ActionDestroy,
	events.ActionRename, events.ActionUpdate, events.ActionPause, events.ActionUnPause, "health_status"}

// errRuleChanged ends a follow whose filters a reload made stale.
var errRuleChanged = errors.New("the opt-in rule changed")

// healthyAfter is how long a stream must have lasted for its loss to
// count as a new trouble: the reconnection backoff starts again at a
// second, rather than staying at its 30 s ceiling for ever after a few
// losses long ago.
const healthyAfter = time.Minute

// Run follows the events stream until ctx ends, re-synchronising with a
// full listing whenever the stream has to be opened again, or the opt-in
// rule changed.
func (c *Collector) Run(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		began := time.Now()
		err := c.follow(ctx)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRuleChanged) {
			c.logger.Info("opt-in rule changed: listing the containers again")
			continue
		}
		if time.Since(began) >= healthyAfter {
			backoff = time.Second
		}
		c.mu.Lock()
		c.synced, c.streamErr = false, err
		c.mu.Unlock()
		c.logger.Warn("docker events stream lost; reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (c *Collector) follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f := c.filters()
	f.Add("type", string(events.ContainerEventType))
	for _, a := range stateEvents {
		f.Add("event", string(a))
	}
	// Subscribe before listing. The client opens the stream in the
	// background, so it may not be
	// open yet when the listing below is made: the daemon replays what
	// happened since a second before (its buffer of recent events), and
	// nothing that happens in between is lost. A replayed event is applied
	// again, which changes nothing (its container is inspected anew; the
	// fast path opens one occurrence per event).
	changed := c.opts.OptIn.Changed()
	since := strconv.FormatInt(time.Now().Add(-time.Second).Unix(), 10)
	stream := c.api.Events(ctx, client.EventsListOptions{Filters: f, Since: since})
	msgs, errs := stream.Messages, stream.Err
	if err := c.resync(ctx); err != nil {
		return err
	}
	for {
		select {
		case <-changed:
			return errRuleChanged
		case err := <-errs:
			if err == nil {
				err = errors.New("events stream closed")
			}
			return err
		case m := <-msgs:
			c.apply(ctx, m)
		}
	}
}

// resync replaces the state with a full listing.
func (c *Collector) resync(ctx context.Context) error {
	list, err := c.api.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: c.filters()})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	fresh := make(map[string]state, len(list.Items))
	for _, s := range list.Items {
		st, err := c.inspect(ctx, s.ID)
		if err != nil || !st.optedIn && !c.opts.All {
			continue // removed in between, or not opted in
		}
		fresh[s.ID] = st
	}
	c.mu.Lock()
	c.containers, c.synced, c.streamErr = fresh, true, nil
	c.mu.Unlock()
	return nil
}

func (c *Collector) apply(ctx context.Context, m events.Message) {
	id := m.Actor.ID
	if m.Action == events.ActionDestroy {
		c.mu.Lock()
		delete(c.containers, id)
		c.mu.Unlock()
		return
	}
	told := c.tellKnown(m)
	st, err := c.inspect(ctx, id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil || !st.optedIn && !c.opts.All {
		delete(c.containers, id) // gone already, or no longer opted in
		return
	}
	c.containers[id] = st
	if told || !st.optedIn {
		return
	}
	c.tell(m, st)
}

// tellKnown tells OnEvent of a die or unhealthy of a container the
// collector already knows, before inspecting it again, and reports whether
// the container was known. Right after a die the Docker Engine answers an
// inspect of that container only once it has cleaned up after it — 10 to
// 30 ms on a small machine — and the fast path need not wait for that:
// what it needs is in the event (the exit code) and the kept state (the
// name, the labels, the restart policy, which only an update event, itself
// followed by an inspect, can change).
func (c *Collector) tellKnown(m events.Message) bool {
	c.mu.RLock()
	st, known := c.containers[m.Actor.ID]
	c.mu.RUnlock()
	if !known {
		return false
	}
	if st.optedIn = c.opts.OptIn.Rule().Allows("/"+st.name, st.labels); !st.optedIn {
		return true
	}
	if code, err := strconv.Atoi(m.Actor.Attributes["exitCode"]); err == nil && m.Action == events.ActionDie {
		st.exitCode = code
	}
	c.tell(m, st)
	return true
}

// tell passes a die or unhealthy of container st on to OnEvent.
func (c *Collector) tell(m events.Message, st state) {
	kind := ""
	switch m.Action {
	case events.ActionDie:
		kind = "die"
	case events.ActionHealthStatusUnhealthy:
		kind = "unhealthy"
	}
	if c.opts.OnEvent == nil || kind == "" {
		return
	}
	at := time.Unix(0, m.TimeNano)
	if m.TimeNano == 0 {
		at = time.Unix(m.Time, 0)
	}
	c.opts.OnEvent(Event{Container: st.name, Action: kind, Time: at, RestartPolicy: st.restartPolicy, ExitCode: st.exitCode})
}

func (c *Collector) inspect(ctx context.Context, id string) (state, error) {
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := c.api.ContainerInspect(ictx, id, client.ContainerInspectOptions{})
	if err != nil {
		return state{}, err
	}
	info := res.Container
	st := state{id: info.ID, name: strings.TrimPrefix(info.Name, "/"), restarts: info.RestartCount, restartPolicy: "no"}
	if info.HostConfig != nil && info.HostConfig.RestartPolicy.Name != "" {
		st.restartPolicy = string(info.HostConfig.RestartPolicy.Name)
	}
	rule := c.opts.OptIn.Rule()
	if info.Config != nil {
		st.image, st.labels = info.Config.Image, info.Config.Labels
		st.optedIn = rule.Allows(info.Name, info.Config.Labels)
	} else {
		st.optedIn = rule.Allows(info.Name, nil)
	}
	if s := info.State; s != nil {
		st.running = s.Running && !s.Restarting
		st.exitCode = s.ExitCode
		st.startedAt, _ = time.Parse(time.RFC3339Nano, s.StartedAt)
		// Docker marks a container unhealthy when it stops; that is an
		// outage (ServiceDown), not a failing health check, so the health
		// of a container that does not run is not reported.
		if s.Health != nil && s.Health.Status != container.NoHealthcheck && st.running {
			st.health = string(s.Health.Status)
		}
	}
	return st, nil
}

var healthStatuses = []string{string(container.Starting), string(container.Healthy), string(container.Unhealthy)}

// Update implements exporter.Collector. It reads the kept state only. While
// the events stream is down the state may be stale, so nothing is reported
// and the scrape of this collector fails.
// NameOf is the name of the container with the full ID id, if this
// collector reports it (opted in, or every container with
// --collector.docker.all).
func (c *Collector) NameOf(id string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s, ok := c.containers[id]
	return s.name, ok
}

func (c *Collector) Update(ch chan<- prometheus.Metric) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.synced {
		return fmt.Errorf("container state unknown: %w", c.streamErr)
	}
	for _, s := range c.containers {
		short := s.id
		if len(short) > 12 {
			short = short[:12]
		}
		ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, s.name, short, s.image)
		ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, boolFloat(s.running), s.name)
		ch <- prometheus.MustNewConstMetric(c.restarts, prometheus.CounterValue, float64(s.restarts), s.name)
		ch <- prometheus.MustNewConstMetric(c.exitCode, prometheus.GaugeValue, float64(s.exitCode), s.name)
		if !s.startedAt.IsZero() && s.startedAt.Year() > 1 {
			ch <- prometheus.MustNewConstMetric(c.started, prometheus.GaugeValue, float64(s.startedAt.UnixNano())/1e9, s.name)
		}
		if s.health != "" {
			for _, h := range healthStatuses {
				ch <- prometheus.MustNewConstMetric(c.health, prometheus.GaugeValue, boolFloat(s.health == h), s.name, h)
			}
		}
	}
	return nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
