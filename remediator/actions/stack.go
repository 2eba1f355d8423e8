package actions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/containers"
)

// Stacks: a container is rarely alone. A proxy running in a VPN gateway's
// network namespace (network_mode: container:gateway) is left without a
// network when the gateway restarts alone; a compose service whose
// depends_on says restart: true expects to restart with what it depends
// on. The graph comes from Docker itself: shared network namespaces and
// compose's labels.

func init() {
	register("restart_project", noParams, func(d Deps) action.Executor { return RestartProject{Stack: d.Docker} })
}

// DependentsRestart is the value of dependents that restarts them.
const DependentsRestart = "restart"

// dependentsProblems checks a dependents parameter.
func dependentsProblems(v string) []string {
	if v != "" && v != DependentsRestart {
		return []string{fmt.Sprintf("dependents: %q is not %q (or empty, to leave them alone)", v, DependentsRestart)}
	}
	return nil
}

// Stack is what the actions over a container's dependents and its compose
// project need from Docker.
type Stack interface {
	Ping(ctx context.Context) error
	Permit(ctx context.Context, name string) error
	Graph(ctx context.Context) (*containers.Graph, error)
	Allows(n *containers.Node) bool
	Restart(ctx context.Context, name string) (time.Time, error)
	Stop(ctx context.Context, name string) error
	Start(ctx context.Context, name string) (time.Time, error)
	Verify(ctx context.Context, name string, since time.Time, v containers.Verification) error
}

var _ Stack = (*containers.Client)(nil)

// graphRestarter is what restarting dependents needs; Containers and
// Stack both have it.
type graphRestarter interface {
	Graph(ctx context.Context) (*containers.Graph, error)
	Allows(n *containers.Node) bool
	Restart(ctx context.Context, name string) (time.Time, error)
	Verify(ctx context.Context, name string, since time.Time, v containers.Verification) error
}

// gone reports whether err says the container no longer exists.
func gone(err error) bool {
	return errors.Is(err, containers.ErrNoSuchContainer) || cerrdefs.IsNotFound(err)
}

// dependentsOf lists what a restart of target leaves broken, in the order
// to restart them (the target is not among them).
func dependentsOf(ctx context.Context, s graphRestarter, target string) ([]string, error) {
	g, err := s.Graph(ctx)
	if err != nil {
		return nil, err
	}
	o, err := g.Dependents(target)
	if err != nil {
		return nil, err
	}
	return append(o.Names, o.Cycle...), nil
}

// restartDependents restarts, once target is up again, the containers
// that depend on it, each after what it depends on and each verified
// before the next. One not opted in, in a dependency cycle, gone, or
// depending on one left alone or failed, is left alone and reported.
func restartDependents(ctx context.Context, s graphRestarter, target string, v action.Verify) ([]action.Touched, error) {
	g, err := s.Graph(ctx)
	if err != nil {
		return nil, fmt.Errorf("dependents of %s: %w", target, err)
	}
	o, err := g.Dependents(target)
	if err != nil {
		return nil, fmt.Errorf("dependents of %s: %w", target, err)
	}
	role := "dependent of " + target
	var touched []action.Touched
	var errs []error
	broken := map[string]string{} // left alone or failed: why
	for _, name := range o.Names {
		t := action.Touched{Target: name, Action: "restart", Role: role}
		n, _ := g.Node(name)
		switch {
		case !s.Allows(n):
			t.Skipped = "not opted in"
		case brokenNeed(g, name, broken) != "":
			t.Skipped = brokenNeed(g, name, broken)
		default:
			t.Started = time.Now()
			since, err := s.Restart(ctx, name)
			if err == nil {
				err = s.Verify(ctx, name, since, verification(v))
			}
			t.Ended = time.Now()
			switch {
			case err != nil && gone(err):
				t = action.Touched{Target: name, Action: "restart", Role: role, Skipped: "gone: removed while the action ran"}
			case err != nil:
				t.Err = err
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
		if t.Skipped != "" || t.Err != nil {
			broken[name] = t.Skipped
			if t.Err != nil {
				broken[name] = "failed"
			}
		}
		touched = append(touched, t)
	}
	for _, name := range o.Cycle {
		touched = append(touched, action.Touched{Target: name, Action: "restart", Role: role,
			Skipped: "in a dependency cycle (" + strings.Join(o.Cycle, ", ") + "): not restarted"})
	}
	if len(errs) > 0 {
		return touched, fmt.Errorf("restart of dependents failed: %w", errors.Join(errs...))
	}
	return touched, nil
}

// brokenNeed says why name cannot be restarted usefully: something it
// depends on was left alone or failed.
func brokenNeed(g *containers.Graph, name string, broken map[string]string) string {
	for _, need := range g.Needs(name) {
		if _, ok := broken[need]; ok {
			return fmt.Sprintf("depends on %s, which was not restarted", need)
		}
	}
	return ""
}

// RestartProject restarts the compose project of its target: the
// project's running containers and the target, stopped in reverse
// dependency order and started forward, each verified before the next
// starts. A container that is not opted in is left alone and reported; a
// dependency cycle refuses the whole restart, before anything is touched.
type RestartProject struct{ Stack Stack }

var (
	_ action.Executor     = RestartProject{}
	_ action.Availability = RestartProject{}
	_ action.Toucher      = RestartProject{}
)

// Available implements action.Availability: the Docker Engine answers.
func (a RestartProject) Available(ctx context.Context) error { return a.Stack.Ping(ctx) }

// project is what a project restart would do.
type project struct {
	name      string
	order     []string // to restart, dependency order
	leftAlone []action.Touched
}

func (a RestartProject) plan(ctx context.Context, target string) (project, error) {
	g, err := a.Stack.Graph(ctx)
	if err != nil {
		return project{}, err
	}
	name, o, err := g.Project(target)
	if err != nil {
		return project{}, &action.Refusal{Severity: action.Warning, Reason: "restart project: " + err.Error()}
	}
	if len(o.Cycle) > 0 {
		return project{}, &action.Refusal{Severity: action.Error, Reason: fmt.Sprintf(
			"restart project %s: dependency cycle among %s; nothing restarted", name, strings.Join(o.Cycle, ", "))}
	}
	p := project{name: name}
	t, _ := g.Node(target)
	for _, c := range o.Names {
		n, _ := g.Node(c)
		switch {
		case n.Name != t.Name && !n.Running:
			p.leftAlone = append(p.leftAlone, action.Touched{Target: c, Action: "restart", Role: "service of project " + name, Skipped: "was not running"})
		case !a.Stack.Allows(n):
			p.leftAlone = append(p.leftAlone, action.Touched{Target: c, Action: "restart", Role: "service of project " + name, Skipped: "not opted in"})
		default:
			p.order = append(p.order, c)
		}
	}
	return p, nil
}

// Touches implements action.Toucher: the containers it would restart.
func (a RestartProject) Touches(ctx context.Context, req action.Request) ([]string, error) {
	p, err := a.plan(ctx, req.Target)
	return p.order, err
}

// Permit implements action.Executor: the target must be opted in and part
// of a compose project without a dependency cycle.
func (a RestartProject) Permit(ctx context.Context, req action.Request) error {
	if err := a.Stack.Permit(ctx, req.Target); err != nil {
		return err
	}
	_, err := a.plan(ctx, req.Target)
	return err
}

// Execute implements action.Executor.
func (a RestartProject) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	p, err := a.plan(ctx, req.Target)
	if err != nil {
		return action.Result{}, err
	}
	res := action.Result{Details: map[string]any{"project": p.name, "order": p.order}, Touched: p.leftAlone}
	role := "service of project " + p.name
	stopped := map[string]time.Time{}
	var errs []error
	for _, c := range slices.Backward(p.order) {
		stopped[c] = time.Now()
		if err := a.Stack.Stop(ctx, c); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("stop %s: %w", c, err))
		}
	}
	for _, c := range p.order {
		since, err := a.Stack.Start(ctx, c)
		if err == nil {
			err = a.Stack.Verify(ctx, c, since, verification(req.Verify))
		}
		if c == req.Target {
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", c, err))
			}
			continue // the job's own row
		}
		t := action.Touched{Target: c, Action: "restart", Role: role, Started: stopped[c], Ended: time.Now()}
		switch {
		case err != nil && gone(err):
			t = action.Touched{Target: c, Action: "restart", Role: role, Skipped: "gone: removed while the action ran"}
		case err != nil:
			t.Err = err
			errs = append(errs, fmt.Errorf("%s: %w", c, err))
		}
		res.Touched = append(res.Touched, t)
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("restart project %s: %w", p.name, errors.Join(errs...))
	}
	return res, nil
}
