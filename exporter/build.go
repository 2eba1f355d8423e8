package exporter

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/selfheal/selfheal/exporter/docker"
	"github.com/selfheal/selfheal/exporter/gpu"
	"github.com/selfheal/selfheal/exporter/gpu/xid"
	"github.com/selfheal/selfheal/exporter/probe"
	"github.com/selfheal/selfheal/exporter/system"
	"github.com/selfheal/selfheal/internal/cgroup"
	"github.com/selfheal/selfheal/remediator/optin"
)

// Collector names, as in --[no-]collector.<name>.
const (
	System = "system"
	GPU    = "gpu"
	Docker = "docker"
	Probe  = "probe"
)

// Flags are the exporter's command-line settings.
type Flags struct {
	Enabled            map[string]*bool
	DockerAll          *bool
	ProcPath           *string
	SysPath            *string
	RootfsPath         *string
	FSTypesExclude     *string
	MountPointsExclude *string
	NVMLLibrary        *string
	GPUTimeout         *time.Duration
	KernelLog          *string
	XIDCatalogue       *string
}

type flagGroup interface {
	Flag(name, help string) *kingpin.FlagClause
}

// collectors is every collector this build has: its name (as in
// --[no-]collector.<name>), its help, and how to build it from the flags.
// A build that returns nil has nothing to collect here (no Docker
// configured, no probes). A new collector is one row here and its package.
var collectors = []struct {
	name, help string
	build      func(f *Flags, d Deps) (Collector, error)
}{
	{System, "CPU, memory, filesystems, temperatures and load from /proc and /sys.", func(f *Flags, _ Deps) (Collector, error) {
		return system.New(system.Options{
			ProcPath: *f.ProcPath, SysPath: *f.SysPath, RootfsPath: *f.RootfsPath,
			FSTypesExclude: *f.FSTypesExclude, MountPointsExclude: *f.MountPointsExclude,
		})
	}},
	{GPU, "NVIDIA GPUs through NVML (no series without a driver).", func(f *Flags, d Deps) (Collector, error) {
		lib := d.NVML
		if lib == nil {
			lib = gpu.Open(*f.NVMLLibrary)
		}
		var catalogue xid.Catalogue
		if *f.XIDCatalogue != "" {
			b, err := os.ReadFile(*f.XIDCatalogue)
			if err != nil {
				return nil, fmt.Errorf("XID catalogue: %w", err)
			}
			if catalogue, err = xid.Parse(b); err != nil {
				return nil, fmt.Errorf("%s: %w", *f.XIDCatalogue, err)
			}
		}
		return gpu.New(lib, d.Logger.With("collector", GPU), gpu.Options{Timeout: *f.GPUTimeout, Catalogue: catalogue, KernelLog: *f.KernelLog,
			Container: d.containerOf}), nil
	}},
	{Docker, "State of opted-in containers from the Docker events stream.", func(f *Flags, d Deps) (Collector, error) {
		if d.DockerAPI == nil {
			return nil, nil
		}
		return docker.New(d.DockerAPI, docker.Options{OptIn: d.OptedIn, All: *f.DockerAll, OnEvent: d.OnDockerEvent}, d.Logger.With("collector", Docker)), nil
	}},
	{Probe, "The HTTP, TCP and PostgreSQL probes in the configuration's exporter.probes.", func(_ *Flags, d Deps) (Collector, error) {
		if len(d.Probes) == 0 {
			return nil, nil
		}
		return probe.New(d.Probes)
	}},
}

// AddFlags defines the exporter's flags on a command.
func AddFlags(g flagGroup) *Flags {
	f := &Flags{Enabled: map[string]*bool{}}
	for _, c := range collectors {
		f.Enabled[c.name] = g.Flag("collector."+c.name, "Enable the "+c.name+" collector: "+c.help).Default("true").Bool()
	}
	f.DockerAll = g.Flag("collector.docker.all", "Report every container, not only those with the opt-in label.").Default("false").Bool()
	f.ProcPath = g.Flag("path.procfs", "procfs mount point.").Default("/proc").String()
	f.SysPath = g.Flag("path.sysfs", "sysfs mount point.").Default("/sys").String()
	f.RootfsPath = g.Flag("path.rootfs", "Where the host's root filesystem is mounted (when running in a container).").Default("/").String()
	f.FSTypesExclude = g.Flag("collector.filesystem.fs-types-exclude", "Filesystem types to leave out (regexp).").Default(system.DefaultFSTypesExclude).String()
	f.MountPointsExclude = g.Flag("collector.filesystem.mount-points-exclude", "Mount points to leave out (regexp).").Default(system.DefaultMountPointsExclude).String()
	f.NVMLLibrary = g.Flag("collector.gpu.nvml-library", "Path of libnvidia-ml.so; empty finds the driver's.").Default("").String()
	f.GPUTimeout = g.Flag("collector.gpu.timeout", "How long a scrape waits for NVML: a GPU that has not answered by then is reported with selfheal_gpu_up 0.").Default(gpu.DefaultTimeout.String()).Duration()
	f.KernelLog = g.Flag("collector.gpu.kernel-log", "Kernel log read for the XID errors NVML does not report (79, a GPU fallen off the bus); empty reads none.").Default(xid.DefaultKernelLog).String()
	f.XIDCatalogue = g.Flag("collector.gpu.xid-catalogue", "YAML file of XID codes by action (restart_holders, reset_gpu, reboot, notify), over the shipped catalogue; empty: the shipped one.").Default("").String()
	return f
}

// Deps are what the collectors need besides flags.
type Deps struct {
	// DockerAPI is nil when Docker is not configured.
	DockerAPI docker.API
	// OptedIn is selfheal's opt-in rule in force: the containers the
	// docker collector reports.
	OptedIn *optin.Current
	// OnDockerEvent, when set, is told of opted-in containers' deaths and
	// failed health checks (selfheal's fast path); it must not block.
	OnDockerEvent func(docker.Event)
	Probes        []probe.Probe
	Logger        *slog.Logger
	// NVML, when set, replaces the driver's library (go-nvml's mock).
	NVML gpu.Library

	// containerOf names the container a process runs in (Build sets it).
	containerOf func(pid uint32) string
}

// Build returns an exporter with the enabled collectors.
func Build(f *Flags, d Deps) (*Exporter, error) {
	cs := map[string]Collector{}
	// The gpu collector names the containers holding a GPU from the
	// processes' cgroups and the docker collector's state, once both are
	// built (before any scrape).
	var containers *docker.Collector
	d.containerOf = func(pid uint32) string {
		if containers == nil {
			return ""
		}
		id, ok, err := cgroup.ContainerID(*f.ProcPath, pid)
		if err != nil || !ok {
			return ""
		}
		name, _ := containers.NameOf(id)
		return name
	}
	for _, c := range collectors {
		if !*f.Enabled[c.name] {
			continue
		}
		col, err := c.build(f, d)
		if err != nil {
			return nil, fmt.Errorf("collector %s: %w", c.name, err)
		}
		if col != nil {
			cs[c.name] = col
		}
	}
	if len(cs) == 0 {
		return nil, fmt.Errorf("every collector is disabled")
	}
	containers, _ = cs[Docker].(*docker.Collector)
	return New(cs, d.Logger), nil
}
