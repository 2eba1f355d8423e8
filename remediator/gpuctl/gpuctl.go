//go:build cgo

// Package gpuctl is selfheal's only way to change NVIDIA GPUs: reading
// which processes hold a GPU, and lowering or restoring its power limit.
// It talks to NVML through a small interface, so tests use go-nvml's mock.
// NVML needs cgo: a build without it (CGO_ENABLED=0, for hosts without
// GPUs) has the same API, every GPU call answering that this build has no
// GPU support (nocgo.go).
package gpuctl

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Library is the part of NVML gpuctl uses; nvml.New() has it.
type Library interface {
	Init() nvml.Return
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
	DeviceGetHandleByUUID(string) (nvml.Device, nvml.Return)
}

// Device is the part of a device handle gpuctl uses.
type Device interface {
	GetIndex() (int, nvml.Return)
	GetComputeRunningProcesses() ([]nvml.ProcessInfo, nvml.Return)
	GetPowerManagementLimit() (uint32, nvml.Return)
	GetPowerManagementDefaultLimit() (uint32, nvml.Return)
	GetPowerManagementLimitConstraints() (uint32, uint32, nvml.Return)
	SetPowerManagementLimit(uint32) nvml.Return
	GetTemperature(nvml.TemperatureSensors) (uint32, nvml.Return)
	GetUtilizationRates() (nvml.Utilization, nvml.Return)
	GetMemoryInfo_v2() (nvml.Memory_v2, nvml.Return)
	GetPowerUsage() (uint32, nvml.Return)
	GetUUID() (string, nvml.Return)
	GetPersistenceMode() (nvml.EnableState, nvml.Return)
}

var _ Device = nvml.Device(nil)

// GPUs controls the GPUs of this host. NVML is initialised on first use.
type GPUs struct {
	lib  Library
	once sync.Once
	err  error
}

// New returns GPUs over lib; nvml.New() for the real driver.
func New(lib Library) *GPUs { return &GPUs{lib: lib} }

// Open returns GPUs over the driver's NVML.
func Open() *GPUs { return New(nvml.New()) }

// Supported says that this build can act on GPUs.
const Supported = true

func (g *GPUs) init() error {
	g.once.Do(func() {
		if r := g.lib.Init(); r != nvml.SUCCESS && r != nvml.ERROR_ALREADY_INITIALIZED {
			g.err = fmt.Errorf("initialise NVML: %w", r)
		}
	})
	return g.err
}

// Count returns how many GPUs the host has. A host without an NVIDIA
// driver has none: that is not an error.
func (g *GPUs) Count() (int, error) {
	if err := g.init(); err != nil {
		if errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND) || errors.Is(err, nvml.ERROR_DRIVER_NOT_LOADED) {
			return 0, nil
		}
		return 0, err
	}
	n, r := g.lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		return 0, fmt.Errorf("count GPUs: %w", r)
	}
	return n, nil
}

// Device finds a GPU by index ("0") or UUID ("GPU-…").
func (g *GPUs) Device(target string) (Device, int, error) {
	if err := g.init(); err != nil {
		return nil, 0, err
	}
	var (
		d nvml.Device
		r nvml.Return
	)
	if i, err := strconv.Atoi(target); err == nil {
		d, r = g.lib.DeviceGetHandleByIndex(i)
	} else {
		d, r = g.lib.DeviceGetHandleByUUID(target)
	}
	if r != nvml.SUCCESS {
		return nil, 0, fmt.Errorf("GPU %q: %w", target, r)
	}
	idx, r := d.GetIndex()
	if r != nvml.SUCCESS {
		return nil, 0, fmt.Errorf("GPU %q index: %w", target, r)
	}
	return d, idx, nil
}

// Processes returns the PIDs holding a compute context on the GPU.
func (g *GPUs) Processes(target string) ([]uint32, error) {
	d, _, err := g.Device(target)
	if err != nil {
		return nil, err
	}
	procs, r := d.GetComputeRunningProcesses()
	if r != nvml.SUCCESS {
		return nil, fmt.Errorf("GPU %s processes: %w", target, r)
	}
	pids := make([]uint32, len(procs))
	for i, p := range procs {
		pids[i] = p.Pid
	}
	return pids, nil
}

// Snapshot reads the GPU's temperature, utilisation, memory and power
// draw, each as far as NVML answers.
func (g *GPUs) Snapshot(target string) (Snapshot, error) {
	d, _, err := g.Device(target)
	if err != nil {
		return Snapshot{}, err
	}
	var s Snapshot
	if t, r := d.GetTemperature(nvml.TEMPERATURE_GPU); r == nvml.SUCCESS {
		s.TemperatureC = &t
	}
	if u, r := d.GetUtilizationRates(); r == nvml.SUCCESS {
		s.UtilizationGPU, s.UtilizationMem = &u.Gpu, &u.Memory
	}
	if m, r := d.GetMemoryInfo_v2(); r == nvml.SUCCESS {
		s.MemoryUsedBytes, s.MemoryTotal = &m.Used, &m.Total
	}
	if p, r := d.GetPowerUsage(); r == nvml.SUCCESS {
		s.PowerMW = &p
	}
	return s, nil
}

// UUID returns the GPU's UUID, the name that survives a reset (an index
// may not).
func (g *GPUs) UUID(target string) (string, error) {
	d, _, err := g.Device(target)
	if err != nil {
		return "", err
	}
	u, r := d.GetUUID()
	if r != nvml.SUCCESS {
		return "", fmt.Errorf("GPU %s UUID: %w", target, r)
	}
	return u, nil
}

// Persistence reports whether the GPU's persistence mode is on: the driver
// then refuses to reset it.
func (g *GPUs) Persistence(target string) (bool, error) {
	d, _, err := g.Device(target)
	if err != nil {
		return false, err
	}
	m, r := d.GetPersistenceMode()
	if r != nvml.SUCCESS {
		return false, fmt.Errorf("GPU %s persistence mode: %w", target, r)
	}
	return m == nvml.FEATURE_ENABLED, nil
}

// Limits reads the GPU's power limits.
func (g *GPUs) Limits(target string) (PowerLimits, error) {
	d, _, err := g.Device(target)
	if err != nil {
		return PowerLimits{}, err
	}
	var l PowerLimits
	var r nvml.Return
	if l.Current, r = d.GetPowerManagementLimit(); r != nvml.SUCCESS {
		return l, fmt.Errorf("GPU %s power limit: %w", target, r)
	}
	if l.Default, r = d.GetPowerManagementDefaultLimit(); r != nvml.SUCCESS {
		return l, fmt.Errorf("GPU %s default power limit: %w", target, r)
	}
	if l.Min, l.Max, r = d.GetPowerManagementLimitConstraints(); r != nvml.SUCCESS {
		return l, fmt.Errorf("GPU %s power limit constraints: %w", target, r)
	}
	return l, nil
}

// SetLimit sets the GPU's power limit (milliwatts), which must be within
// its constraints.
func (g *GPUs) SetLimit(target string, mw uint32) error {
	d, _, err := g.Device(target)
	if err != nil {
		return err
	}
	if r := d.SetPowerManagementLimit(mw); r != nvml.SUCCESS {
		return fmt.Errorf("GPU %s: set power limit to %d mW: %w", target, mw, r)
	}
	return nil
}
