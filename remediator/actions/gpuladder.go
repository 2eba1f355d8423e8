package actions

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/selfheal/selfheal/remediator/action"
)

func init() {
	// Not TakesDown: its target is a GPU; the holders it takes down are
	// its Touches, which tell their outages for selfheal's own doing.
	register("gpu_recover", newGPURecoverParams, func(d Deps) action.Executor {
		return GPURecover{GPUs: d.GPUs, Containers: d.Docker, ProcPath: d.ProcPath}
	})
}

// DefaultPersistenceCommand sets a GPU's persistence mode; {{ .UUID }} is
// the GPU's, {{ .Mode }} 0 (off) or 1 (on).
var DefaultPersistenceCommand = []string{"nvidia-smi", "-i", "{{ .UUID }}", "-pm", "{{ .Mode }}"}

// DefaultGPUSettle bounds each of the ladder's waits: for the stopped
// holders' processes to let go of the GPU, and for the GPU to answer NVML
// again after its reset.
const DefaultGPUSettle = 60 * time.Second

// GPURecoverParams are gpu_recover's parameters.
type GPURecoverParams struct {
	// Command resets the GPU; each argument a template ({{ .UUID }},
	// {{ .GPU }} its index, {{ .Target }}).
	Command []string `yaml:"command"`
	// PersistenceCommand turns persistence mode off before the reset
	// ({{ .Mode }} 0) and on again after it ({{ .Mode }} 1), when it was on.
	PersistenceCommand []string `yaml:"persistence_command"`
	// Settle bounds each wait (DefaultGPUSettle).
	Settle action.Duration `yaml:"settle"`
	// Dependents: "restart" restarts, once the holders run again, the
	// containers that depend on them (as restart's).
	Dependents string `yaml:"dependents"`
}

func newGPURecoverParams() action.Params {
	return &GPURecoverParams{Command: slices.Clone(DefaultGPUResetCommand),
		PersistenceCommand: slices.Clone(DefaultPersistenceCommand), Settle: action.Duration(DefaultGPUSettle)}
}

// Problems implements action.Params.
func (p *GPURecoverParams) Problems() []string {
	probs := commandProblems(p.Command)
	for _, s := range commandProblems(p.PersistenceCommand) {
		probs = append(probs, "persistence_"+s)
	}
	if p.Settle <= 0 {
		probs = append(probs, "settle: must be positive")
	}
	return append(probs, dependentsProblems(p.Dependents)...)
}

// holderStartSlack is what starting a holder may take beyond its
// verification.
const holderStartSlack = 30 * time.Second

// GPUHolders is what the GPU ladder needs from Docker: the holders mapped
// and permitted as the session reset's, stopped and started apart.
type GPUHolders interface {
	Holders
	Stop(ctx context.Context, name string) error
	Start(ctx context.Context, name string) (time.Time, error)
}

// GPURecover is the GPU ladder, for a GPU that needs a reset while
// containers hold it: it stops the opted-in containers holding the GPU,
// waits for their processes to let go, turns persistence mode off if it is
// on (the driver refuses to reset a GPU in persistence mode), resets the
// GPU by UUID, checks that it answers NVML with sane readings, turns
// persistence mode back on and starts the holders again, each verified
// (and their dependents restarted, when asked). A holder that is not an
// opted-in container — a process on the host, a container without the
// label — refuses the whole ladder before anything is touched, naming it.
// When a step fails, the holders are started again all the same, so the
// host is left no worse than found, and the action fails: the
// remediation's escalation (a reboot where enabled, else people) follows.
type GPURecover struct {
	GPUs       GPUs
	Containers GPUHolders
	// ProcPath is the host's /proc, to map PIDs to containers.
	ProcPath string
	// Run runs a command; nil runs it with os/exec.
	Run func(ctx context.Context, args []string) ([]byte, error)
	// Poll is the interval between looks while waiting; zero: 250 ms.
	Poll time.Duration
}

var (
	_ action.Executor     = GPURecover{}
	_ action.Witness      = GPURecover{}
	_ action.Toucher      = GPURecover{}
	_ action.Availability = GPURecover{}
)

func (a GPURecover) params(req action.Request) *GPURecoverParams {
	return paramsOf[*GPURecoverParams](req, newGPURecoverParams)
}

func (a GPURecover) holders(ctx context.Context, target string) ([]string, error) {
	return optedInHolders(ctx, a.GPUs, a.Containers, a.ProcPath, target, "recovery")
}

// Available implements action.Availability: the Docker Engine answers.
func (a GPURecover) Available(ctx context.Context) error { return a.Containers.Ping(ctx) }

// Permit implements action.Executor: the GPU answers NVML, and every
// process holding it is in an opted-in container.
func (a GPURecover) Permit(ctx context.Context, req action.Request) error {
	if _, err := a.GPUs.UUID(req.Target); err != nil {
		return &action.Refusal{Severity: action.Warning, Reason: fmt.Sprintf(
			"GPU %s recovery refused, nothing touched: NVML cannot reach the GPU (%v); a reset cannot either", req.Target, err)}
	}
	_, err := a.holders(ctx, req.Target)
	return err
}

// Touches implements action.Toucher: the holders it stops and starts, and
// their dependents when it restarts them.
func (a GPURecover) Touches(ctx context.Context, req action.Request) ([]string, error) {
	names, err := a.holders(ctx, req.Target)
	if err != nil || a.params(req).Dependents != DependentsRestart {
		return names, err
	}
	all := slices.Clone(names)
	for _, n := range names {
		deps, err := dependentsOf(ctx, a.Containers, n)
		if err != nil {
			return all, err
		}
		for _, d := range deps {
			if !slices.Contains(all, d) {
				all = append(all, d)
			}
		}
	}
	return all, nil
}

// Evidence implements action.Witness: the GPU's holders, what NVML reads
// of it, and its persistence mode, before the ladder changes them.
func (a GPURecover) Evidence(ctx context.Context, req action.Request) (action.Evidence, error) {
	ev, err := gpuHolders(ctx, a.GPUs, req.Target, func() (any, error) { return a.holders(ctx, req.Target) })
	if rec, ok := ev.Record.(map[string]any); ok && err == nil {
		if on, perr := a.GPUs.Persistence(req.Target); perr == nil {
			rec["persistence_mode"] = on
		}
	}
	return ev, err
}

// Execute implements action.Executor: the ladder, each step recorded in
// the result's steps, in order.
func (a GPURecover) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	p := a.params(req)
	res := action.Result{Details: map[string]any{"gpu": req.Target}}
	uuid, err := a.GPUs.UUID(req.Target)
	if err != nil {
		return res, err
	}
	_, index, err := a.GPUs.Device(uuid)
	if err != nil {
		return res, err
	}
	holders, err := a.holders(ctx, req.Target) // again: holders change
	if err != nil {
		return res, err
	}
	res.Details["uuid"], res.Details["holders"] = uuid, holders
	l := &ladder{}
	data := map[string]any{"UUID": uuid, "GPU": index, "Target": req.Target}
	role := "holder of GPU " + req.Target

	stopped, err := a.stopHolders(ctx, l, holders, role)
	if err == nil {
		err = l.do("wait for the GPU to be free", func() (map[string]any, error) { return nil, a.released(ctx, uuid, p.Settle.D()) })
	}
	persistent := false
	if err == nil {
		err = l.do("turn persistence mode off", func() (map[string]any, error) {
			on, err := a.GPUs.Persistence(uuid)
			if err != nil || !on {
				return map[string]any{"was_on": false}, err
			}
			persistent = true
			return a.run(ctx, p.PersistenceCommand, withMode(data, 0))
		})
	}
	if err == nil {
		err = l.do("reset", func() (map[string]any, error) { return a.run(ctx, p.Command, data) })
	}
	if err == nil {
		err = l.do("check the GPU answers", func() (map[string]any, error) { return nil, a.answers(ctx, uuid, p.Settle.D()) })
	}
	if persistent { // turned off: on again, whatever the reset did
		// Recorded, not a failure of the ladder: the GPU works without it,
		// and a reboot (the escalation) is no answer to a mode left off.
		// Like the holders' start, done even when the action's time is up.
		if perr := l.do("turn persistence mode on again", func() (map[string]any, error) {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), holderStartSlack)
			defer cancel()
			return a.run(rctx, p.PersistenceCommand, withMode(data, 1))
		}); perr != nil {
			res.Details["warning"] = "persistence mode is still off: " + perr.Error()
		}
	}
	touched, startErr := a.startHolders(ctx, l, stopped, role, req.Verify, p.Dependents)
	res.Touched, res.Details["steps"] = touched, l.steps
	if err != nil {
		again := ""
		if len(stopped) > 0 {
			again = "; its holders were started again"
		}
		return res, fmt.Errorf("GPU %s (%s) recovery: %w%s", req.Target, uuid, errors.Join(err, startErr), again)
	}
	if startErr != nil {
		return res, fmt.Errorf("GPU %s (%s) was reset, but its holders did not come back: %w", req.Target, uuid, startErr)
	}
	return res, nil
}

// stopHolders stops each holder in turn; the first that fails stops the
// ladder. It returns those it stopped, and each as touched.
func (a GPURecover) stopHolders(ctx context.Context, l *ladder, holders []string, role string) ([]string, error) {
	var stopped []string
	err := l.do("stop the holders", func() (map[string]any, error) {
		for _, n := range holders {
			if err := a.Containers.Stop(ctx, n); err != nil {
				return map[string]any{"stopped": stopped}, err
			}
			stopped = append(stopped, n)
		}
		return map[string]any{"stopped": stopped}, nil
	})
	return stopped, err
}

// startHolders starts each stopped holder again and verifies it, then
// restarts the dependents of those that came back, when asked.
func (a GPURecover) startHolders(ctx context.Context, l *ladder, stopped []string, role string, v action.Verify, dependents string) ([]action.Touched, error) {
	if len(stopped) == 0 {
		return nil, nil
	}
	var touched []action.Touched
	err := l.do("start the holders", func() (map[string]any, error) {
		var up []string
		var errs []error
		for _, n := range stopped {
			t := action.Touched{Target: n, Action: "stop_start", Role: role, Started: time.Now()}
			// A holder this ladder stopped is started even when the action's
			// own time is up: left stopped, it would stay down.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.Timeout+v.StableFor+holderStartSlack)
			since, err := a.Containers.Start(sctx, n)
			if err == nil {
				err = a.Containers.Verify(sctx, n, since, verification(v))
			}
			cancel()
			t.Ended, t.Err = time.Now(), err
			touched = append(touched, t)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n, err))
				continue
			}
			up = append(up, n)
		}
		if dependents == DependentsRestart {
			for _, n := range up {
				deps, err := restartDependents(ctx, a.Containers, n, v)
				touched = append(touched, deps...)
				if err != nil {
					errs = append(errs, err)
				}
			}
		}
		return map[string]any{"started": up}, errors.Join(errs...)
	})
	return touched, err
}

// released waits until NVML lists no process on the GPU.
func (a GPURecover) released(ctx context.Context, uuid string, within time.Duration) error {
	var pids []uint32
	err := a.until(ctx, within, func() (bool, error) {
		var err error
		pids, err = a.GPUs.Processes(uuid)
		return err == nil && len(pids) == 0, err
	})
	if err != nil && len(pids) > 0 {
		return fmt.Errorf("still held by pids %v %s after its holders stopped", pids, within)
	}
	return err
}

// answers waits until NVML finds the GPU by UUID and reads it like a
// working GPU (gpuctl.Snapshot.Problems).
func (a GPURecover) answers(ctx context.Context, uuid string, within time.Duration) error {
	var probs []string
	err := a.until(ctx, within, func() (bool, error) {
		snap, err := a.GPUs.Snapshot(uuid)
		if err != nil {
			probs = []string{err.Error()}
			return false, nil
		}
		probs = snap.Problems()
		return len(probs) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("the GPU did not answer NVML with sane readings within %s of its reset: %s", within, strings.Join(probs, "; "))
	}
	return nil
}

// until calls done every Poll until it is true, returns an error, or
// within passes (context.DeadlineExceeded).
func (a GPURecover) until(ctx context.Context, within time.Duration, done func() (bool, error)) error {
	poll := a.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		ok, err := done()
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

func (a GPURecover) run(ctx context.Context, command []string, data map[string]any) (map[string]any, error) {
	return runCommand(ctx, a.Run, command, data)
}

func withMode(data map[string]any, mode int) map[string]any {
	m := maps.Clone(data)
	m["Mode"] = mode
	return m
}

// ladder records the ladder's steps as they run.
type ladder struct{ steps []map[string]any }

// do runs one step and records it: its name, how long it took, what it
// reported and how it failed.
func (l *ladder) do(name string, step func() (map[string]any, error)) error {
	start := time.Now()
	rec, err := step()
	s := map[string]any{"step": name, "seconds": time.Since(start).Seconds()}
	maps.Copy(s, rec)
	if err != nil {
		s["error"] = err.Error()
	}
	l.steps = append(l.steps, s)
	return err
}
