// Package containers is selfheal's only way to change Docker containers.
// Every mutating call first checks that the container is opted in (by label
// or by name in the configuration) and acts on the container's ID, so a
// container replaced under the same name in between is not touched by
// mistake.
package containers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/optin"
)

// ErrNotPermitted marks a container selfheal may not touch.
var ErrNotPermitted = errors.New("not permitted")

// ErrNoSuchContainer is wrapped by errors about a container that does not
// exist (any more).
var ErrNoSuchContainer = errors.New("no container named")

// unreachable wraps an error of the Docker Engine that says nothing about
// the container — the daemon is down, restarting, or slow to answer — so
// trying again later may succeed. The engine defers such a job rather than
// refusing it for good.
type unreachable struct{ err error }

func (u unreachable) Error() string   { return u.err.Error() }
func (u unreachable) Unwrap() error   { return u.err }
func (u unreachable) Transient() bool { return true }

// inspect inspects a container: once per decision, whose checks share one
// view of it (action.Looked). "No such container" and an answer about
// the name itself (an ID prefix that names several containers) are
// final; any other error is the daemon's, and transient.
func (c *Client) inspect(ctx context.Context, name string) (container.InspectResponse, error) {
	return action.Looked(ctx, "container/"+name, func() (container.InspectResponse, error) { return c.inspectNow(ctx, name) })
}

// inspectNow is inspect, read now.
func (c *Client) inspectNow(ctx context.Context, name string) (container.InspectResponse, error) {
	info, err := c.containerInspect(ctx, name)
	switch {
	case err == nil, cerrdefs.IsNotFound(err):
	case cerrdefs.IsInvalidArgument(err):
		err = fmt.Errorf("inspect container %q: %w", name, err)
	default:
		err = unreachable{fmt.Errorf("inspect container %q: %w", name, err)}
	}
	return info, err
}

// Options configures a Client.
type Options struct {
	Host string
	// RequireLabel opts containers in: "key=value", or "key" for any value.
	RequireLabel string
	// Allow opts containers in by name.
	Allow []string
	// StopTimeout is the grace period before a stopping container is killed.
	StopTimeout time.Duration
	// Evidence bounds what Evidence keeps.
	Evidence EvidenceOptions
}

// Client changes opted-in containers.
type Client struct {
	api         client.APIClient
	optIn       *optin.Current
	stopTimeout atomic.Int64 // a time.Duration
	evidence    atomic.Pointer[EvidenceOptions]
}

// New connects to the Docker Engine at o.Host without calling it yet. The
// client negotiates the API version at its first call, down to API 1.40
// (Docker 19.03; Debian 12 ships 20.10, API 1.41).
func New(o Options) (*Client, error) {
	api, err := client.New(client.WithHost(o.Host))
	if err != nil {
		return nil, fmt.Errorf("docker client for %s: %w", o.Host, err)
	}
	c := &Client{api: api, optIn: optin.NewCurrent(optin.New(o.RequireLabel, o.Allow))}
	c.stopTimeout.Store(int64(o.StopTimeout))
	c.evidence.Store(&o.Evidence)
	return c, nil
}

// Reconfigure puts a reloaded configuration's opt-in rule, stop timeout
// and evidence bounds in force: from the next call on, nothing the new
// rule leaves out is touched. A call under way (a stop and start)
// finishes as it began. o.Host is read only by New.
func (c *Client) Reconfigure(o Options) {
	c.optIn.Set(optin.New(o.RequireLabel, o.Allow))
	c.stopTimeout.Store(int64(o.StopTimeout))
	c.evidence.Store(&o.Evidence)
}

// API is the client's connection to the Docker Engine, for the exporter's
// docker collector to share.
func (c *Client) API() client.APIClient { return c.api }

// OptIn is the rule the client enforces, swapped by Reconfigure.
func (c *Client) OptIn() *optin.Current { return c.optIn }

// Close releases the client's connections.
func (c *Client) Close() error { return c.api.Close() }

// Ping checks that the Docker Engine answers.
func (c *Client) Ping(ctx context.Context) error {
	if _, err := c.api.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("the Docker Engine does not answer: %w", err)
	}
	return nil
}

// Canonical returns the container's own name for any way of naming it —
// its name, "/name", its ID or an ID prefix — so that every spelling of one
// container is one target. A container that does not exist keeps the name
// given (the permit check then says so).
func (c *Client) Canonical(ctx context.Context, name string) (string, error) {
	// A plain name is already canonical: Docker resolves an exact name
	// before an ID prefix, and a name cannot be another container's. Only
	// "/name" and what may be an ID (prefix) need a lookup, which spares the
	// Docker Engine a call per job in a storm.
	if !strings.HasPrefix(name, "/") && !maybeID(name) {
		return name, nil
	}
	info, err := c.inspect(ctx, name)
	switch {
	case cerrdefs.IsNotFound(err):
		return name, nil
	case err != nil:
		return "", err
	}
	return strings.TrimPrefix(info.Name, "/"), nil
}

// maybeID reports whether s could be a container ID or a prefix of one.
func maybeID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

// Permit reports whether the container called name exists and is opted in.
// It changes nothing.
func (c *Client) Permit(ctx context.Context, name string) error {
	_, err := c.permitted(ctx, name)
	return err
}

func (c *Client) permitted(ctx context.Context, name string) (container.InspectResponse, error) {
	info, err := c.inspect(ctx, name)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return info, fmt.Errorf("%w: %w %q", ErrNotPermitted, ErrNoSuchContainer, name)
		}
		return info, err
	}
	var labels map[string]string
	if info.Config != nil {
		labels = info.Config.Labels
	}
	rule := c.optIn.Rule()
	if rule.Allows(info.Name, labels) {
		return info, nil
	}
	return info, fmt.Errorf("%w: container %q lacks the opt-in label %s and is not listed in targets.docker.containers",
		ErrNotPermitted, name, rule.Label())
}

// stopSeconds is the stop timeout in force, in whole seconds as the Docker
// Engine takes it.
func (c *Client) stopSeconds() *int {
	secs := int(time.Duration(c.stopTimeout.Load()).Round(time.Second).Seconds())
	return &secs
}

// Restart restarts an opted-in container and returns when the Docker
// Engine has done so. It returns the time just before the restart, for
// Verify.
func (c *Client) Restart(ctx context.Context, name string) (time.Time, error) {
	info, err := c.permitted(ctx, name)
	if err != nil {
		return time.Time{}, err
	}
	began := time.Now()
	if _, err := c.api.ContainerRestart(ctx, info.ID, client.ContainerRestartOptions{Timeout: c.stopSeconds()}); err != nil {
		return began, fmt.Errorf("restart %s: %w", name, err)
	}
	return began, nil
}

// StopStart stops an opted-in container, waits, and starts it again.
func (c *Client) StopStart(ctx context.Context, name string, wait time.Duration) (time.Time, error) {
	info, err := c.permitted(ctx, name)
	if err != nil {
		return time.Time{}, err
	}
	began := time.Now()
	if _, err := c.api.ContainerStop(ctx, info.ID, client.ContainerStopOptions{Timeout: c.stopSeconds()}); err != nil {
		return began, fmt.Errorf("stop %s: %w", name, err)
	}
	select {
	case <-ctx.Done():
		return began, fmt.Errorf("stop %s: waiting to start it again: %w", name, ctx.Err())
	case <-time.After(wait):
	}
	if _, err := c.api.ContainerStart(ctx, info.ID, client.ContainerStartOptions{}); err != nil {
		return began, fmt.Errorf("start %s: %w", name, err)
	}
	return began, nil
}

// Stop stops an opted-in container (within the stop timeout).
func (c *Client) Stop(ctx context.Context, name string) error {
	info, err := c.permitted(ctx, name)
	if err != nil {
		return err
	}
	if _, err := c.api.ContainerStop(ctx, info.ID, client.ContainerStopOptions{Timeout: c.stopSeconds()}); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	return nil
}

// Start starts an opted-in container and returns the time just before.
func (c *Client) Start(ctx context.Context, name string) (time.Time, error) {
	info, err := c.permitted(ctx, name)
	if err != nil {
		return time.Time{}, err
	}
	began := time.Now()
	if _, err := c.api.ContainerStart(ctx, info.ID, client.ContainerStartOptions{}); err != nil {
		return began, fmt.Errorf("start %s: %w", name, err)
	}
	return began, nil
}

// Verification is how Verify judges a container after an action.
type Verification struct {
	// Timeout bounds the wait for running (and healthy, with a health check).
	Timeout time.Duration
	// StableFor is how long it must then stay up without restarting.
	StableFor time.Duration
	// Poll is the interval between checks; zero means 100ms.
	Poll time.Duration
}

// Verify waits until the container is running — and healthy, if it has a
// health check — then checks it stays so for StableFor. A container that
// starts and exits again after `since` fails at once rather than at the
// timeout.
func (c *Client) Verify(ctx context.Context, name string, since time.Time, v Verification) error {
	poll := v.Poll
	if poll == 0 {
		poll = 100 * time.Millisecond
	}
	deadline := time.Now().Add(v.Timeout)
	var last string
	for {
		info, err := c.containerInspect(ctx, name)
		if err != nil {
			return fmt.Errorf("verify %s: %w", name, err)
		}
		st := info.State
		up, why := judge(st, since)
		if up {
			return c.stable(ctx, name, info, v.StableFor, max(poll, stableCheck))
		}
		if why != "" && strings.HasPrefix(why, "exited") {
			return fmt.Errorf("verify %s: %s", name, why)
		}
		last = why
		if time.Now().After(deadline) {
			return fmt.Errorf("verify %s: not up after %s: %s", name, v.Timeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("verify %s: %s: %w", name, last, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// judge says whether a container state counts as up, and if not, why.
func judge(st *container.State, since time.Time) (bool, string) {
	if st == nil {
		return false, "no state reported"
	}
	if !st.Running || st.Restarting {
		started, _ := time.Parse(time.RFC3339Nano, st.StartedAt)
		if !st.Restarting && started.After(since) {
			return false, fmt.Sprintf("exited with code %d right after starting", st.ExitCode)
		}
		return false, "status " + string(st.Status)
	}
	if st.Health != nil && st.Health.Status != container.NoHealthcheck && st.Health.Status != container.Healthy {
		return false, "health " + string(st.Health.Status)
	}
	return true, ""
}

// stableCheck is how often the stable_for window looks at the container
// again (or Verification.Poll, if longer).
const stableCheck = 250 * time.Millisecond

// stable checks that the same run of the container stays up for d. It
// looks again every check through the window, so a run that dies or
// restarts inside it fails then, not when the window ends: a container that
// crashes a second after each start takes the remediation to its next step
// in about a second, whatever stable_for is.
func (c *Client) stable(ctx context.Context, name string, first container.InspectResponse, d, check time.Duration) error {
	if d <= 0 {
		return nil
	}
	end := time.Now().Add(d)
	for {
		if wait := min(check, time.Until(end)); wait > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("verify %s: %w", name, ctx.Err())
			case <-time.After(wait):
			}
		}
		info, err := c.containerInspect(ctx, name)
		if err != nil {
			return fmt.Errorf("verify %s: %w", name, err)
		}
		if info.State == nil || info.State.StartedAt != first.State.StartedAt {
			return fmt.Errorf("verify %s: restarted within %s of coming up", name, d)
		}
		if up, why := judge(info.State, time.Time{}); !up {
			return fmt.Errorf("verify %s: did not stay up for %s: %s (exit code %d)", name, d, why, info.State.ExitCode)
		}
		if !time.Now().Before(end) {
			return nil
		}
	}
}

// Running reports the container's current run: whether it is up (running,
// and healthy if it has a health check) and since when.
func (c *Client) Running(ctx context.Context, name string) (up bool, startedAt time.Time, err error) {
	info, err := c.inspect(ctx, name)
	if err != nil {
		return false, time.Time{}, err
	}
	up, _ = judge(info.State, time.Time{})
	if info.State != nil {
		startedAt, _ = time.Parse(time.RFC3339Nano, info.State.StartedAt)
	}
	return up, startedAt, nil
}

// labelFilter selects opted-in containers by label in Docker's own filters.
func (c *Client) labelFilter() client.Filters {
	return make(client.Filters).Add("label", c.optIn.Rule().Label())
}

// OptedIn returns the names of every opted-in container, running or not,
// sorted.
func (c *Client) OptedIn(ctx context.Context) ([]string, error) {
	list, err := c.api.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: c.labelFilter()})
	if err != nil {
		return nil, fmt.Errorf("list opted-in containers: %w", err)
	}
	seen := map[string]bool{}
	for _, s := range list.Items {
		if len(s.Names) > 0 {
			seen[strings.TrimPrefix(s.Names[0], "/")] = true
		}
	}
	for _, name := range c.optIn.Rule().Names() {
		if _, err := c.containerInspect(ctx, name); err == nil {
			seen[name] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// RunningOptedIn returns the names of the opted-in containers that run now.
func (c *Client) RunningOptedIn(ctx context.Context) ([]string, error) {
	list, err := c.api.ContainerList(ctx, client.ContainerListOptions{Filters: c.labelFilter()})
	if err != nil {
		return nil, fmt.Errorf("list running containers: %w", err)
	}
	var names []string
	for _, s := range list.Items {
		if len(s.Names) > 0 {
			names = append(names, strings.TrimPrefix(s.Names[0], "/"))
		}
	}
	sort.Strings(names)
	return names, nil
}

// PruneReport is what a prune removed.
type PruneReport struct {
	Containers     []string
	Images         int
	BytesReclaimed uint64
}

// Prune removes what is opted in and unused: containers that carry the
// opt-in label and have been stopped for at least stoppedFor (a service that
// just died is one to heal, not to remove), and dangling images that carry
// the label. Nothing else — not an unlabelled image, a volume, a network or
// the build cache, which Docker cannot attribute to a container — is ever
// removed; a container listed by name but unlabelled is kept too, since
// removal cannot be undone.
func (c *Client) Prune(ctx context.Context, stoppedFor time.Duration) (PruneReport, error) {
	var r PruneReport
	stopped := c.labelFilter()
	for _, st := range []string{"created", "exited", "dead"} {
		stopped.Add("status", st)
	}
	list, err := c.api.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: stopped, Size: true})
	if err != nil {
		return r, fmt.Errorf("prune containers: %w", err)
	}
	for _, s := range list.Items {
		info, err := c.containerInspect(ctx, s.ID)
		if err != nil || info.State == nil || info.State.Running || !stoppedLongEnough(info, stoppedFor) {
			continue
		}
		if _, err := c.api.ContainerRemove(ctx, s.ID, client.ContainerRemoveOptions{}); err != nil {
			return r, fmt.Errorf("prune container %s: %w", strings.TrimPrefix(info.Name, "/"), err)
		}
		r.Containers = append(r.Containers, s.ID)
		r.BytesReclaimed += uint64(max(s.SizeRw, 0))
	}
	ir, err := c.api.ImagePrune(ctx, client.ImagePruneOptions{Filters: c.labelFilter().Add("dangling", "true")})
	if err != nil {
		return r, fmt.Errorf("prune images: %w", err)
	}
	r.Images, r.BytesReclaimed = len(ir.Report.ImagesDeleted), r.BytesReclaimed+ir.Report.SpaceReclaimed
	return r, nil
}

// stoppedLongEnough reports whether the container stopped (or, never
// started, was created) at least d ago.
func stoppedLongEnough(info container.InspectResponse, d time.Duration) bool {
	at, err := time.Parse(time.RFC3339Nano, info.State.FinishedAt)
	if err != nil || at.IsZero() || at.Year() < 2 {
		if at, err = time.Parse(time.RFC3339Nano, info.Created); err != nil {
			return false
		}
	}
	return time.Since(at) >= d
}

// NameOf returns the name of the container with the given ID.
func (c *Client) NameOf(ctx context.Context, id string) (string, error) {
	info, err := c.containerInspect(ctx, id)
	if err != nil {
		return "", fmt.Errorf("inspect container %s: %w", id, err)
	}
	return strings.TrimPrefix(info.Name, "/"), nil
}

// containerInspect is the Docker Engine's inspection of a container.
func (c *Client) containerInspect(ctx context.Context, name string) (container.InspectResponse, error) {
	res, err := c.api.ContainerInspect(ctx, name, client.ContainerInspectOptions{})
	return res.Container, err
}
