package actions

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/selfheal/selfheal/remediator/model"

	"github.com/prometheus/procfs"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/store"
)

func init() {
	register("reboot", newRebootParams, func(d Deps) action.Executor {
		return Reboot{Enabled: d.RebootEnabled, Store: d.Store, Services: d.Docker, BootID: d.BootID, ProcPath: d.ProcPath}
	})
}

// Reboot defaults.
const (
	DefaultRebootWindow  = 6 * time.Hour
	DefaultRebootsPerDay = 3
)

var (
	// DefaultRebootCommand reboots the host through systemd.
	DefaultRebootCommand = []string{"systemctl", "reboot"}
	// DefaultRebootMountpoints is where a reboot can free space: the root
	// filesystem (its /tmp, a runaway journal), not a data volume.
	DefaultRebootMountpoints = []string{"/"}
)

// RebootParams are reboot's parameters.
type RebootParams struct {
	// Command and its arguments, each a template ({{ .Target }}).
	Command []string `yaml:"command"`
	// At most one reboot per Window, and none once MaxPerDay reboots
	// happened in 24 hours (the boot-loop guard).
	Window    action.Duration `yaml:"window"`
	MaxPerDay int             `yaml:"max_per_day"`
	// Mountpoints: for an alert about a filesystem (a mountpoint label),
	// the mount points a reboot can free — temporary files, a journal in
	// RAM. A reboot cannot free a data volume, so any other is refused.
	Mountpoints []string `yaml:"mountpoints"`
}

func newRebootParams() action.Params {
	return &RebootParams{
		Command: slices.Clone(DefaultRebootCommand), Window: action.Duration(DefaultRebootWindow),
		MaxPerDay: DefaultRebootsPerDay, Mountpoints: slices.Clone(DefaultRebootMountpoints),
	}
}

// Problems implements action.Params.
func (p *RebootParams) Problems() []string {
	probs := commandProblems(p.Command)
	if p.MaxPerDay < 1 {
		probs = append(probs, "max_per_day: must be at least 1")
	}
	if p.Window < 0 {
		probs = append(probs, "window: must not be negative")
	}
	for _, m := range p.Mountpoints {
		if !filepath.IsAbs(m) {
			probs = append(probs, fmt.Sprintf("mountpoints: %q is not an absolute path", m))
		}
	}
	return probs
}

// RebootStore is the history the reboot guard reads and writes.
type RebootStore interface {
	RebootHistory(ctx context.Context, since time.Time) (int, time.Time, error)
	StartReboot(ctx context.Context, r store.Reboot, g store.RebootGuard) (int64, error)
	FailReboot(ctx context.Context, id int64, reason string) error
	RebootsToValidate(ctx context.Context) ([]store.Reboot, error)
	RebootHappened(ctx context.Context, r store.Reboot) error
	CompleteReboot(ctx context.Context, r store.Reboot, v store.RebootValidation) error
}

var _ RebootStore = (*store.Store)(nil)

// Running lists the opted-in containers that run now.
type Running interface {
	RunningOptedIn(ctx context.Context) ([]string, error)
}

// Reboot is the guarded reboot. It runs only when Enabled (the
// environment's SELFHEAL_REBOOT_ENABLED=true) and a remediation asks for it;
// the engine never runs it in dry-run. At most one per window, and none
// once max_per_day reboots happened within 24 hours (the boot-loop guard,
// an EMERGENCY). Before the command it saves the running services, key
// metrics and the reason in reboot_events; after the reboot,
// RebootValidator compares.
type Reboot struct {
	Enabled  bool
	Store    RebootStore
	Services Running
	// Run runs the reboot command; nil runs it with os/exec.
	Run func(ctx context.Context, args []string) ([]byte, error)
	// BootID identifies this boot; nil reads /proc/sys/kernel/random/boot_id.
	BootID func() (string, error)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ProcPath is /proc, for the saved metrics.
	ProcPath string
}

var _ action.Executor = Reboot{}

func (a Reboot) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// ReadBootID reads the kernel's boot ID, which changes on every boot.
func ReadBootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b)), err
}

func (a Reboot) bootID() (string, error) {
	if a.BootID != nil {
		return a.BootID()
	}
	return ReadBootID()
}

// Permit implements action.Executor: the guards.
func (a Reboot) Permit(ctx context.Context, req action.Request) error {
	if !a.Enabled {
		return &action.Refusal{Severity: action.Warning, Reason: "reboot refused: reboots are disabled (SELFHEAL_REBOOT_ENABLED is not true)"}
	}
	p := paramsOf[*RebootParams](req, newRebootParams)
	if m, ok := req.Labels["mountpoint"]; ok && !slices.Contains(p.Mountpoints, m) {
		return &action.Refusal{Severity: action.Warning, Reason: fmt.Sprintf(
			"reboot refused: a reboot cannot free %s (rebootable mount points: %s)", m, strings.Join(p.Mountpoints, ", "))}
	}
	now := a.now()
	inDay, last, err := a.Store.RebootHistory(ctx, now.Add(-24*time.Hour))
	if err != nil {
		return err
	}
	if inDay >= p.MaxPerDay {
		return &action.Refusal{Severity: action.Emergency, Reason: fmt.Sprintf(
			"boot-loop guard: %d reboots in the last 24h (limit %d); no more reboots until a person looks", inDay, p.MaxPerDay)}
	}
	if w := p.Window.D(); !last.IsZero() && now.Sub(last) < w {
		return &action.Refusal{Severity: action.Warning, Reason: fmt.Sprintf(
			"reboot refused: the last one was at %s, within the %s window", last.UTC().Format(time.RFC3339), p.Window)}
	}
	return nil
}

// Execute implements action.Executor.
func (a Reboot) Execute(ctx context.Context, req action.Request) (action.Result, error) {
	if !a.Enabled { // never without the switch, whatever called it
		return action.Result{}, fmt.Errorf("reboots are disabled")
	}
	services, err := a.Services.RunningOptedIn(ctx)
	if err != nil {
		return action.Result{}, fmt.Errorf("save the running services: %w", err)
	}
	boot, err := a.bootID()
	if err != nil {
		return action.Result{}, fmt.Errorf("read the boot ID: %w", err)
	}
	pre := map[string]any{"services": services, "metrics": a.metrics(), "remediation": req.Remediation, "target": req.Target}
	// Permit checked the guard for the decision; the start checks it
	// again, atomically with its record, against a reboot started since.
	p := paramsOf[*RebootParams](req, newRebootParams)
	id, err := a.Store.StartReboot(ctx, store.Reboot{ActionID: req.ActionID, Reason: req.Reason, BootID: boot, PreState: pre},
		store.RebootGuard{Window: p.Window.D(), MaxPerDay: p.MaxPerDay})
	if err != nil {
		return action.Result{}, fmt.Errorf("reboot not started: %w", err)
	}
	args, err := renderCommand(p.Command, map[string]any{"Target": req.Target})
	if err == nil {
		var out []byte
		if a.Run != nil {
			out, err = a.Run(ctx, args)
		} else {
			out, err = exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		}
		if err != nil {
			err = fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(truncate(out, 512)))
		}
	}
	res := action.Result{Details: map[string]any{"reboot_event": id, "command": args, "services": services}}
	if err != nil {
		_ = a.Store.FailReboot(context.WithoutCancel(ctx), id, err.Error())
		return res, err
	}
	return res, nil
}

// metrics are the figures saved with a reboot: load, memory, root disk.
func (a Reboot) metrics() map[string]any {
	m := map[string]any{}
	procPath := a.ProcPath
	if procPath == "" {
		procPath = "/proc"
	}
	if fs, err := procfs.NewFS(procPath); err == nil {
		if l, err := fs.LoadAvg(); err == nil {
			m["load1"], m["load5"], m["load15"] = l.Load1, l.Load5, l.Load15
		}
		if mi, err := fs.Meminfo(); err == nil && mi.MemTotalBytes != nil && mi.MemAvailableBytes != nil {
			m["memory_total_bytes"], m["memory_available_bytes"] = *mi.MemTotalBytes, *mi.MemAvailableBytes
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs("/", &st); err == nil {
		m["root_size_bytes"] = st.Blocks * uint64(st.Bsize)
		m["root_available_bytes"] = st.Bavail * uint64(st.Bsize)
	}
	return m
}

// RebootValidator checks, at start, what a reboot left behind.
type RebootValidator struct {
	Store    RebootStore
	Services Running
	BootID   func() (string, error)
	// Delay lets services come up after a reboot before they are counted.
	Delay time.Duration
	Now   func() time.Time
}

// Settle is the first half, run before the engine starts: a reboot that
// happened (the boot ID changed) completes its action and job, so the
// engine does not mark them interrupted. It returns the reboots to check.
func (v RebootValidator) Settle(ctx context.Context) ([]store.Reboot, error) {
	boot := ReadBootID
	if v.BootID != nil {
		boot = v.BootID
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	current, err := boot()
	if err != nil {
		return nil, err
	}
	pending, err := v.Store.RebootsToValidate(ctx)
	if err != nil {
		return nil, err
	}
	var rebooted []store.Reboot
	for _, r := range pending {
		switch {
		case r.BootID != current:
			if err := v.Store.RebootHappened(ctx, r); err != nil {
				return nil, err
			}
			rebooted = append(rebooted, r)
		case now().Sub(r.Started) > 10*time.Minute:
			// Same boot, long after the command: the machine never rebooted.
			if err := v.Store.CompleteReboot(ctx, r, store.RebootValidation{Status: "failed", Severity: model.SeverityCritical,
				Message: fmt.Sprintf("the reboot requested at %s did not happen (same boot)", r.Started.UTC().Format(time.RFC3339))}); err != nil {
				return nil, err
			}
		}
	}
	return rebooted, nil
}

// Validate is the second half, after Delay: are the services that ran
// before the reboot running again?
func (v RebootValidator) Validate(ctx context.Context, rebooted []store.Reboot) error {
	if len(rebooted) == 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(v.Delay):
	}
	running, err := v.Services.RunningOptedIn(ctx)
	if err != nil {
		return err
	}
	now := map[string]bool{}
	for _, s := range running {
		now[s] = true
	}
	for _, r := range rebooted {
		var before, missing []string
		if list, ok := r.PreState["services"].([]any); ok {
			for _, s := range list {
				name, _ := s.(string)
				before = append(before, name)
				if !now[name] {
					missing = append(missing, name)
				}
			}
		}
		val := store.RebootValidation{Status: "validated", Severity: model.SeverityInfo,
			PostState: map[string]any{"services": running, "missing": missing},
			Message:   fmt.Sprintf("after the reboot all %d services that ran before run again", len(before))}
		if len(missing) > 0 {
			val.Status, val.Severity = "validation_failed", model.SeverityCritical
			val.Message = fmt.Sprintf("after the reboot %d of %d services are not running: %s",
				len(missing), len(before), strings.Join(missing, ", "))
		}
		if err := v.Store.CompleteReboot(ctx, r, val); err != nil {
			return err
		}
	}
	return nil
}
