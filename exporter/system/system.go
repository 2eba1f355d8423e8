// Package system collects host metrics from /proc and /sys: CPU time,
// memory, filesystems, temperatures and load. Names follow node_exporter's
// with the selfheal_ prefix, so dashboards and rules translate one to one.
package system

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// Defaults exclude pseudo and container-internal filesystems, as
// node_exporter does.
const (
	DefaultFSTypesExclude     = `^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs|tmpfs|ramfs)$`
	DefaultMountPointsExclude = `^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`
	defaultStatfsTimeout      = time.Second
	millidegreesPerDegree     = 1000.0
)

// Options locates the host's files; inside a container they are mounted
// under other paths.
type Options struct {
	ProcPath string // default /proc
	SysPath  string // default /sys
	// RootfsPath is where the host's root is mounted; mount points are
	// looked up under it. Default /.
	RootfsPath         string
	FSTypesExclude     string
	MountPointsExclude string
	// Statfs returns size, available and free bytes of a path; nil means
	// the statfs system call. Tests replace it.
	Statfs func(path string) (size, avail uint64, err error)
}

// Collector is the system collector.
type Collector struct {
	proc      procfs.FS
	sysPath   string
	rootfs    string
	fsTypes   *regexp.Regexp
	mounts    *regexp.Regexp
	statfs    func(string) (uint64, uint64, error)
	cpu       *prometheus.Desc
	memTotal  *prometheus.Desc
	memAvail  *prometheus.Desc
	fsSize    *prometheus.Desc
	fsAvail   *prometheus.Desc
	hwmonTemp *prometheus.Desc
	zoneTemp  *prometheus.Desc
	load      [3]*prometheus.Desc
}

// New returns a system collector.
func New(o Options) (*Collector, error) {
	if o.ProcPath == "" {
		o.ProcPath = "/proc"
	}
	if o.SysPath == "" {
		o.SysPath = "/sys"
	}
	if o.RootfsPath == "" {
		o.RootfsPath = "/"
	}
	if o.FSTypesExclude == "" {
		o.FSTypesExclude = DefaultFSTypesExclude
	}
	if o.MountPointsExclude == "" {
		o.MountPointsExclude = DefaultMountPointsExclude
	}
	proc, err := procfs.NewFS(o.ProcPath)
	if err != nil {
		return nil, fmt.Errorf("system collector: %w", err)
	}
	fsTypes, err := regexp.Compile(o.FSTypesExclude)
	if err != nil {
		return nil, fmt.Errorf("filesystem types to exclude: %w", err)
	}
	mounts, err := regexp.Compile(o.MountPointsExclude)
	if err != nil {
		return nil, fmt.Errorf("mount points to exclude: %w", err)
	}
	statfs := o.Statfs
	if statfs == nil {
		statfs = statfsWithTimeout
	}
	fsLabels := []string{"device", "fstype", "mountpoint"}
	return &Collector{
		proc: proc, sysPath: o.SysPath, rootfs: o.RootfsPath, fsTypes: fsTypes, mounts: mounts, statfs: statfs,
		cpu: prometheus.NewDesc("selfheal_cpu_seconds_total",
			"Seconds the CPUs spent in each mode.", []string{"cpu", "mode"}, nil),
		memTotal: prometheus.NewDesc("selfheal_memory_total_bytes",
			"Memory the kernel can use (MemTotal).", nil, nil),
		memAvail: prometheus.NewDesc("selfheal_memory_available_bytes",
			"Memory available to start new work without swapping (MemAvailable).", nil, nil),
		fsSize: prometheus.NewDesc("selfheal_filesystem_size_bytes",
			"Filesystem size.", fsLabels, nil),
		fsAvail: prometheus.NewDesc("selfheal_filesystem_available_bytes",
			"Filesystem space available to unprivileged users.", fsLabels, nil),
		hwmonTemp: prometheus.NewDesc("selfheal_hwmon_temperature_celsius",
			"Temperature reported by a hardware monitoring chip.", []string{"chip", "chip_name", "sensor", "label"}, nil),
		zoneTemp: prometheus.NewDesc("selfheal_thermal_zone_temperature_celsius",
			"Temperature of a thermal zone.", []string{"zone", "type"}, nil),
		load: [3]*prometheus.Desc{
			prometheus.NewDesc("selfheal_load1", "1-minute load average.", nil, nil),
			prometheus.NewDesc("selfheal_load5", "5-minute load average.", nil, nil),
			prometheus.NewDesc("selfheal_load15", "15-minute load average.", nil, nil),
		},
	}, nil
}

// Update implements exporter.Collector. Every part is attempted; the
// errors of those that failed are returned together.
func (c *Collector) Update(ch chan<- prometheus.Metric) error {
	return errors.Join(c.updateCPU(ch), c.updateMemory(ch), c.updateFilesystems(ch),
		c.updateTemperatures(ch), c.updateLoad(ch))
}

func (c *Collector) updateCPU(ch chan<- prometheus.Metric) error {
	st, err := c.proc.Stat()
	if err != nil {
		return fmt.Errorf("cpu: %w", err)
	}
	for cpu, s := range st.CPU {
		id := strconv.FormatInt(cpu, 10)
		for _, m := range []struct {
			mode string
			v    float64
		}{
			{"user", s.User}, {"nice", s.Nice}, {"system", s.System}, {"idle", s.Idle},
			{"iowait", s.Iowait}, {"irq", s.IRQ}, {"softirq", s.SoftIRQ}, {"steal", s.Steal},
		} {
			ch <- prometheus.MustNewConstMetric(c.cpu, prometheus.CounterValue, m.v, id, m.mode)
		}
	}
	return nil
}

func (c *Collector) updateMemory(ch chan<- prometheus.Metric) error {
	mi, err := c.proc.Meminfo()
	if err != nil {
		return fmt.Errorf("memory: %w", err)
	}
	if mi.MemTotalBytes == nil || mi.MemAvailableBytes == nil {
		return errors.New("memory: MemTotal or MemAvailable missing from meminfo")
	}
	ch <- prometheus.MustNewConstMetric(c.memTotal, prometheus.GaugeValue, float64(*mi.MemTotalBytes))
	ch <- prometheus.MustNewConstMetric(c.memAvail, prometheus.GaugeValue, float64(*mi.MemAvailableBytes))
	return nil
}

func (c *Collector) updateFilesystems(ch chan<- prometheus.Metric) error {
	mounts, err := c.proc.GetProcMounts(1)
	if err != nil {
		if mounts, err = c.proc.GetMounts(); err != nil {
			return fmt.Errorf("filesystems: %w", err)
		}
	}
	seen := map[string]bool{}
	var errs []error
	for _, m := range mounts {
		if c.fsTypes.MatchString(m.FSType) || c.mounts.MatchString(m.MountPoint) || seen[m.MountPoint] {
			continue
		}
		seen[m.MountPoint] = true
		size, avail, err := c.statfs(filepath.Join(c.rootfs, m.MountPoint))
		if err != nil {
			errs = append(errs, fmt.Errorf("filesystem %s: %w", m.MountPoint, err))
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.fsSize, prometheus.GaugeValue, float64(size), m.Source, m.FSType, m.MountPoint)
		ch <- prometheus.MustNewConstMetric(c.fsAvail, prometheus.GaugeValue, float64(avail), m.Source, m.FSType, m.MountPoint)
	}
	return errors.Join(errs...)
}

var errStatfsTimeout = errors.New("statfs timed out (a hung network filesystem?)")

// statfsWithTimeout keeps a hung mount (NFS, say) from hanging the scrape.
// A statfs that never returns leaves one goroutine behind; the next scrape
// tries again.
func statfsWithTimeout(path string) (uint64, uint64, error) {
	type result struct {
		size, avail uint64
		err         error
	}
	done := make(chan result, 1)
	go func() {
		var s unix.Statfs_t
		if err := unix.Statfs(path, &s); err != nil {
			done <- result{err: err}
			return
		}
		bs := uint64(s.Bsize)
		done <- result{size: s.Blocks * bs, avail: s.Bavail * bs}
	}()
	select {
	case r := <-done:
		return r.size, r.avail, r.err
	case <-time.After(defaultStatfsTimeout):
		return 0, 0, errStatfsTimeout
	}
}

// updateTemperatures reports every readable sensor. Unreadable ones are
// common (ENODATA while a device sleeps) and are left out, not failures.
func (c *Collector) updateTemperatures(ch chan<- prometheus.Metric) error {
	chips, _ := filepath.Glob(filepath.Join(c.sysPath, "class/hwmon/hwmon*"))
	for _, chip := range chips {
		name := readTrimmed(filepath.Join(chip, "name"))
		inputs, _ := filepath.Glob(filepath.Join(chip, "temp*_input"))
		for _, in := range inputs {
			sensor := strings.TrimSuffix(filepath.Base(in), "_input")
			v, err := readInt(in)
			if err != nil {
				continue
			}
			label := readTrimmed(filepath.Join(chip, sensor+"_label"))
			ch <- prometheus.MustNewConstMetric(c.hwmonTemp, prometheus.GaugeValue, float64(v)/millidegreesPerDegree,
				filepath.Base(chip), name, sensor, label)
		}
	}
	zones, _ := filepath.Glob(filepath.Join(c.sysPath, "class/thermal/thermal_zone[0-9]*"))
	for _, z := range zones {
		v, err := readInt(filepath.Join(z, "temp"))
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.zoneTemp, prometheus.GaugeValue, float64(v)/millidegreesPerDegree,
			strings.TrimPrefix(filepath.Base(z), "thermal_zone"), readTrimmed(filepath.Join(z, "type")))
	}
	return nil
}

func (c *Collector) updateLoad(ch chan<- prometheus.Metric) error {
	l, err := c.proc.LoadAvg()
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	for i, v := range []float64{l.Load1, l.Load5, l.Load15} {
		ch <- prometheus.MustNewConstMetric(c.load[i], prometheus.GaugeValue, v)
	}
	return nil
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
