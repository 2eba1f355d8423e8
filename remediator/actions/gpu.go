package actions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/selfheal/selfheal/internal/cgroup"
	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/gpuctl"
)

func init() {
	register("gpu_session_reset", noParams, func(d Deps) action.Executor {
		return GPUSessionReset{GPUs: d.GPUs, Containers: d.Docker, ProcPath: d.ProcPath}
	})
	register("gpu_throttle", func() action.Params { return &GPUThrottleParams{} }, func(d Deps) action.Executor { return GPUThrottle{GPUs: d.GPUs} })
	register("gpu_reset", newGPUResetParams, func(d Deps) action.Executor { return GPUReset{GPUs: d.GPUs} })
}

// GPUThrottleParams are gpu_throttle's parameters.
type GPUThrottleParams struct {
	// PowerLimitRatio is the new power limit as a fraction of the default
	// limit (clamped to what NVML allows).
	PowerLimitRatio float64 `yaml:"power_limit_ratio"`
}

// Problems implements action.Params.
func (p *GPUThrottleParams) Problems() []string {
	if p.PowerLimitRatio <= 0 || p.PowerLimitRatio > 1 {
		return []string{fmt.Sprintf("power_limit_ratio: %v is not in (0, 1]", p.PowerLimitRatio)}
	}
	return nil
}

// DefaultGPUResetCommand resets one GPU, named by its UUID: an index can
// name another GPU once one has fallen off the bus.
var DefaultGPUResetCommand = []string{"nvidia-smi", "--gpu-reset", "-i", "{{ .UUID }}"}

// GPUResetParams are gpu_reset's parameters.
type GPUResetParams struct {
	// Command and its arguments, each a template ({{ .UUID }}, {{ .GPU }}
	// its index, {{ .Target }}).
	Command []string `yaml:"command"`
	// AllGPUs: every GPU of the host that no process holds, rather than
	// the target's (critical recovery).
	AllGPUs bool `yaml:"all"`
}

func newGPUResetParams() action.Params {
	return &GPUResetParams{Command: slices.Clone(DefaultGPUResetCommand)}
}

// Problems implements action.Params.
func (p *GPUResetParams) Problems() []string { return commandProblems(p.Command) }

// GPUs is what the GPU actions need from NVML; *gpuctl.GPUs has it.
type GPUs interface {
	Count() (int, error)
	Device(target string) (gpuctl.Device, int, error)
	Processes(target string) ([]uint32, error)
	UUID(target string) (string, error)
	Persistence(target string) (bool, error)
	Limits(target string) (gpuctl.PowerLimits, error)
	SetLimit(target string, mw uint32) error
	Snapshot(target string) (gpuctl.Snapshot, error)
}

var _ GPUs = (*gpuctl.GPUs)(nil)

// Holders is what the GPU session reset needs from Docker.
type Holders interface {
	Containers
	NameOf(ctx context.Context, id string) (string, error)
}

// GPUSessionReset restarts the containers holding a GPU (target: its index
// or UUID). It refuses, touching nothing, when any holder is not an
// opted-in container — a process on the host, or a container without the
// label — since restarting only some holders would not free the GPU.
type GPUSessionReset struct {
	GPUs       GPUs
	Containers Holders
	// ProcPath is the host's /proc, to map PIDs to containers.
	ProcPath string
}

// GPUThrottle lowers a GPU's power limit to a ratio of its default
// (within NVML's constraints); the engine restores the previous limit when
// the alert resolves or selfheal stops.
type GPUThrottle struct{ GPUs GPUs }

// GPUReset resets a GPU with a command (nvidia-smi --gpu-reset -i N), only
// when no process holds it.
type GPUReset struct {
	GPUs GPUs
	// Run runs a command; nil runs it with os/exec.
	Run func(ctx context.Context, args []string) ([]byte, error)
}

var (
	_ action.Executor = GPUSessionReset{}
	_ action.Witness  = GPUSessionReset{}
	_ action.Witness  = GPUReset{}
	_ action.Toucher  = GPUSessionReset{}
	_ action.Executor = GPUThrottle{}
	_ action.Reverter = GPUThrottle{}
	_ action.Executor = GPUReset{}
)

// Evidence implements action.Witness: the processes holding the GPU, and
// the containers they run in, before they are restarted.
func (a GPUSessionReset) Evidence(ctx context.Context, req action.Request) (action.Evidence, error) {
	return gpuHolders(ctx, a.GPUs, req.Target, func() (any, error) { return a.holders(ctx, req.Target) })
}

// Evidence implements action.Witness: the processes holding the GPU (a
// reset needs none) before it is reset.
func (a GPUReset) Evidence(ctx context.Context, req action.Request) (action.Evidence, error) {
	return gpuHolders(ctx, a.GPUs, req.Target, nil)
}

// gpuHolders is a GPU's evidence: its index, what NVML reads of it now,
// the PIDs holding it and, where containers says, theirs.
func gpuHolders(_ context.Context, gpus GPUs, target string, containers func() (any, error)) (action.Evidence, error) {
	rec := map[string]any{"gpu": target}
	if target == "" {
		return action.Evidence{Record: rec}, nil
	}
	_, idx, err := gpus.Device(target)
	if err != nil {
		return action.Evidence{}, err
	}
	pids, err := gpus.Processes(target)
	if err != nil {
		return action.Evidence{}, err
	}
	rec["index"], rec["pids"] = idx, pids
	if snap, err := gpus.Snapshot(target); err != nil {
		rec["nvml_error"] = err.Error()
	} else {
		rec["nvml"] = snap
	}
	if containers != nil {
		if names, err := containers(); err != nil {
			rec["holders_error"] = err.Error()
		} else {
			rec["holders"] = names
		}
	}
	return action.Evidence{Record: rec}, nil
}

// holders maps the GPU's processes to opted-in containers.
func (a GPUSessionReset) holders(ctx context.Context, target string) ([]string, error) {
	return optedInHolders(ctx, a.GPUs, a.Containers, a.ProcPath, target, "session reset")
}

// optedInHolders maps the processes holding a GPU to the opted-in
// containers they run in, sorted. Any process that is not in one — on the
// host, in a container without the label, one that cannot be mapped —
// refuses what (the GPU action asking) before anything is touched,
// naming each such process.
func optedInHolders(ctx context.Context, gpus GPUs, c Holders, procPath, target, what string) ([]string, error) {
	pids, err := gpus.Processes(target)
	if err != nil {
		return nil, err
	}
	if procPath == "" {
		procPath = "/proc"
	}
	seen := map[string]bool{}
	var refused []string
	for _, pid := range pids {
		id, inContainer, err := cgroup.ContainerID(procPath, pid)
		switch {
		case err != nil:
			refused = append(refused, fmt.Sprintf("process %d: %v", pid, err))
			continue
		case !inContainer:
			refused = append(refused, fmt.Sprintf("process %d runs on the host, not in a container", pid))
			continue
		}
		name, err := c.NameOf(ctx, id)
		if err == nil {
			err = c.Permit(ctx, name)
		}
		if err != nil {
			refused = append(refused, fmt.Sprintf("process %d: %v", pid, err))
			continue
		}
		seen[name] = true
	}
	if len(refused) > 0 {
		return nil, &action.Refusal{Severity: action.Warning, Reason: fmt.Sprintf(
			"GPU %s %s refused, nothing touched: %s", target, what, strings.Join(refused, "; "))}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Available implements action.Availability: the Docker Engine answers.
func (a GPUSessionReset) Available(ctx context.Context) error { return a.Containers.Ping(ctx) }

// Touches implements action.Toucher: the containers holding the GPU.
func (a GPUSessionReset) Touches(ctx context.Context, req action.Request) ([]string, error) {
	return a.holders(ctx, req.Target)
}

// Permit implements action.Executor.
func (a GPUSessionReset) Permit(ctx context.Context, req action.Request) error {
	_, err := a.holders(ctx, req.Target)
	return err
}

// Execute implements action.Executor.
func (a GPUSessionReset) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	names, err := a.holders(ctx, req.Target) // again: holders change
	if err != nil {
		return action.Result{}, err
	}
	res := action.Result{Details: map[string]any{"gpu": req.Target, "containers": names}}
	for _, n := range names {
		since, err := a.Containers.Restart(ctx, n)
		if err == nil {
			err = a.Containers.Verify(ctx, n, since, verification(req.Verify))
		}
		if err != nil {
			return res, fmt.Errorf("GPU %s session reset: %w", req.Target, err)
		}
	}
	return res, nil
}

// Permit implements action.Executor.
func (a GPUThrottle) Permit(_ context.Context, req action.Request) error {
	if _, _, err := a.GPUs.Device(req.Target); err != nil {
		return &action.Refusal{Severity: action.Warning, Reason: fmt.Sprintf("GPU throttle: %v", err)}
	}
	return nil
}

// PlanRevert implements action.Reverter: the limit Execute will apply, and
// the one it will replace; nil when the limit is already at or below the
// target.
func (a GPUThrottle) PlanRevert(_ context.Context, req action.Request) (map[string]any, error) {
	l, want, err := a.limits(req)
	if err != nil || want >= l.Current {
		return nil, err
	}
	return map[string]any{"previous_mw": l.Current, "applied_mw": want}, nil
}

// limits reads the GPU's limits and the one the throttle asks for.
func (a GPUThrottle) limits(req action.Request) (gpuctl.PowerLimits, uint32, error) {
	l, err := a.GPUs.Limits(req.Target)
	if err != nil {
		return l, 0, err
	}
	return l, l.Clamp(paramsOf[*GPUThrottleParams](req, func() action.Params { return &GPUThrottleParams{PowerLimitRatio: 1} }).PowerLimitRatio), nil
}

// Execute implements action.Executor.
func (a GPUThrottle) Execute(_ context.Context, req action.Request) (action.Result, error) {
	l, want, err := a.limits(req)
	if err != nil {
		return action.Result{}, err
	}
	res := action.Result{Details: map[string]any{
		"gpu": req.Target, "previous_mw": l.Current, "limit_mw": want, "default_mw": l.Default,
		"min_mw": l.Min, "max_mw": l.Max,
	}}
	if want >= l.Current {
		res.Details["note"] = "the limit is already at or below the target"
		return res, nil
	}
	return res, a.GPUs.SetLimit(req.Target, want)
}

// Revert implements action.Reverter: it restores the previous limit, unless
// someone changed the limit since (then theirs stays).
func (a GPUThrottle) Revert(_ context.Context, target string, data map[string]any) error {
	prev, ok1 := data["previous_mw"].(float64)
	applied, ok2 := data["applied_mw"].(float64)
	if !ok1 || !ok2 {
		return fmt.Errorf("GPU %s: revert data %v lacks the limits", target, data)
	}
	l, err := a.GPUs.Limits(target)
	if err != nil {
		return err
	}
	if l.Current != uint32(applied) {
		return nil // changed by someone else since: leave it
	}
	return a.GPUs.SetLimit(target, uint32(prev))
}

// runCommand renders command over data and runs it with run (nil: with
// os/exec); it returns what ran and what it printed, for the audit trail.
func runCommand(ctx context.Context, run func(context.Context, []string) ([]byte, error), command []string, data map[string]any) (map[string]any, error) {
	args, err := renderCommand(command, data)
	if err != nil {
		return nil, err
	}
	if run == nil {
		run = func(ctx context.Context, args []string) ([]byte, error) {
			return exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		}
	}
	out, err := run(ctx, args)
	rec := map[string]any{"command": args, "output": string(truncate(out, 2048))}
	if err != nil {
		return rec, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(truncate(out, 512)))
	}
	return rec, nil
}

// Permit implements action.Executor. With all set, nothing is refused up
// front: each GPU is checked as it comes.
func (a GPUReset) Permit(_ context.Context, req action.Request) error {
	if paramsOf[*GPUResetParams](req, newGPUResetParams).AllGPUs {
		return nil
	}
	return a.idle(req.Target)
}

func (a GPUReset) idle(gpu string) error {
	pids, err := a.GPUs.Processes(gpu)
	if err != nil {
		return &action.Refusal{Severity: action.Warning, Reason: fmt.Sprintf("GPU reset: %v", err)}
	}
	if len(pids) > 0 {
		return &action.Refusal{Severity: action.Warning, Reason: fmt.Sprintf(
			"GPU %s reset refused: %d process(es) hold it (pids %v)", gpu, len(pids), pids)}
	}
	return nil
}

// Execute implements action.Executor.
func (a GPUReset) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	p := paramsOf[*GPUResetParams](req, newGPUResetParams)
	if p.AllGPUs {
		return a.resetIdle(ctx, p.Command)
	}
	return a.reset(ctx, p.Command, req.Target)
}

func (a GPUReset) reset(ctx context.Context, command []string, gpu string) (action.Result, error) {
	if err := a.idle(gpu); err != nil { // a process may have started since
		return action.Result{}, err
	}
	_, index, err := a.GPUs.Device(gpu)
	if err != nil {
		return action.Result{}, err
	}
	uuid, err := a.GPUs.UUID(gpu)
	if err != nil {
		return action.Result{}, err
	}
	rec, err := runCommand(ctx, a.Run, command, map[string]any{"GPU": index, "UUID": uuid, "Target": gpu})
	return action.Result{Details: rec}, err
}

// resetIdle resets every GPU of the host that no process holds, as
// critical recovery does; a held GPU is left alone and reported, and a host
// without GPUs has nothing to do.
func (a GPUReset) resetIdle(ctx context.Context, command []string) (action.Result, error) {
	n, err := a.GPUs.Count()
	if err != nil {
		return action.Result{}, fmt.Errorf("GPU reset: %w", err)
	}
	var reset, held []string
	var errs []error
	for i := range n {
		gpu := strconv.Itoa(i)
		if err := a.idle(gpu); err != nil {
			held = append(held, err.Error())
			continue
		}
		if _, err := a.reset(ctx, command, gpu); err != nil {
			errs = append(errs, err)
			continue
		}
		reset = append(reset, gpu)
	}
	res := action.Result{Details: map[string]any{"gpus": n, "reset": reset, "left_alone": held}}
	if len(errs) > 0 {
		return res, fmt.Errorf("GPU reset: %w", errors.Join(errs...))
	}
	return res, nil
}

// commandProblems checks a configured command: not empty, each argument a
// template that parses.
func commandProblems(command []string) []string {
	if len(command) == 0 {
		return []string{"command: must not be empty"}
	}
	var probs []string
	for _, arg := range command {
		if _, err := template.New("").Parse(arg); err != nil {
			probs = append(probs, fmt.Sprintf("command: %v", err))
		}
	}
	return probs
}

// renderCommand executes each argument as a template over data.
func renderCommand(command []string, data map[string]any) ([]string, error) {
	args := make([]string, len(command))
	for i, c := range command {
		t, err := template.New("arg").Option("missingkey=error").Parse(c)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		if err := t.Execute(&b, data); err != nil {
			return nil, fmt.Errorf("command argument %q: %w", c, err)
		}
		args[i] = b.String()
	}
	return args, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
