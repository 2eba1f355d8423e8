//go:build cgo

// Package gputest builds go-nvml mock servers (mock/dgxh100) that answer
// with the readings of a real NVIDIA H100, taken from the fixtures in
// exporter/gpu/testdata: every getter the exporter uses, "Not Supported"
// where the real device said so.
package gputest

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// Reading is one device of a fixture file (h100-nvml_idle.json).
type Reading struct {
	Name                    string                                       `json:"name"`
	UUID                    string                                       `json:"uuid"`
	PciBusID                string                                       `json:"pci_bus_id"`
	Util                    struct{ Gpu, Memory uint32 }                 `json:"util"`
	MemV1                   struct{ Total, Free, Used uint64 }           `json:"mem_v1"`
	MemV2                   struct{ Total, Reserved, Free, Used uint64 } `json:"mem_v2"`
	TempC                   uint32                                       `json:"temp_c"`
	ThresholdSlowdown       uint32                                       `json:"temp_threshold_slowdown"`
	ThresholdShutdown       uint32                                       `json:"temp_threshold_shutdown"`
	ThresholdGPUMax         uint32                                       `json:"temp_threshold_gpu_max"`
	ThresholdMemMax         uint32                                       `json:"temp_threshold_mem_max"`
	PowerMW                 uint32                                       `json:"power_mw"`
	PowerLimitEnforcedMW    uint32                                       `json:"power_limit_enforced_mw"`
	PowerLimitDefaultMW     uint32                                       `json:"power_limit_default_mw"`
	PowerLimitConstraintsMW [2]uint32                                    `json:"power_limit_constraints_mw"`
	EnergyMJ                uint64                                       `json:"energy_mj"`
	ClockSMMHz              uint32                                       `json:"clock_mhz_sm"`
	ClocksEventReasons      string                                       `json:"clocks_event_reasons"`
	ClocksEventSupported    string                                       `json:"clocks_event_reasons_supported"`
	EventTypesSupported     string                                       `json:"event_types_supported"`
	ECCCorrectedVolatile    uint64                                       `json:"ecc_corrected_volatile"`
	ECCUncorrectedVolatile  uint64                                       `json:"ecc_uncorrected_volatile"`
	RemappedRows            [4]any                                       `json:"remapped_rows"`
	PState                  int32                                        `json:"pstate"`
	PersistenceMode         int                                          `json:"persistence_mode"`
	ComputeProcs            int                                          `json:"compute_procs"`
	FanError                string                                       `json:"fan_pct_error"`
	// PcieReplayCounter is not in the recorded readings (0 there); tests
	// set it.
	PcieReplayCounter int `json:"pcie_replay_counter"`
	// MemoryTempC is not in the recorded readings either (nvidia-smi -q
	// on the same H100 said 40 C); 0 reports it not supported.
	MemoryTempC uint32 `json:"memory_temp_c"`
	// NVLinkErrors are the NVLink error totals by NVML field ID
	// (nvml.FI_DEV_NVLINK_*_ERROR_COUNT_TOTAL); none: a GPU without NVLink,
	// as the recorded H100 (PCIe) is.
	NVLinkErrors map[uint32]uint64 `json:"-"`
	// RetiredPages, when set, are the pages retired for multiple
	// single-bit and for double-bit ECC errors, and whether one is pending,
	// as a GPU before Ampere reports them; unset, page retirement is not
	// supported, as on the recorded H100 (N/A in nvidia-smi -q).
	RetiredPages *RetiredPages `json:"-"`
	// MarginC, when set, is the thermal margin NVML reports (nvidia-smi's
	// T.Limit: 50 C on the recorded H100 at idle, in its nvidia-smi -q);
	// unset, not supported.
	MarginC *int32 `json:"-"`
}

// RetiredPages are a pre-Ampere GPU's retired pages.
type RetiredPages struct {
	SingleBit, DoubleBit int
	Pending              bool
}

// Fixture is a whole fixture file.
type Fixture struct {
	Driver      string    `json:"driver"`
	NVMLVersion string    `json:"nvml_version"`
	CUDADriver  int       `json:"cuda_driver"`
	Devices     []Reading `json:"devices"`
}

// Load reads a fixture file.
func Load(path string) (*Fixture, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f Fixture
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(f.Devices) == 0 {
		return nil, fmt.Errorf("%s: no devices", path)
	}
	return &f, nil
}

// Server is a mock NVML with n GPUs that all read like the fixture's first
// device (with their own index, UUID and bus id), and records the power
// limits set on each.
type Server struct {
	*server.Server
	// Events feeds the event set the collector watches for XID errors.
	Events      *EventSet
	mu          sync.Mutex
	PowerLimits map[int][]uint32 // index → every limit set, in order (mW)
	limit       map[int]uint32
	procs       map[int][]nvml.ProcessInfo
	// state, when set, is a file holding the limits in force, so that
	// they outlive the process as a real GPU's do (KeepLimitsIn).
	state string
	// stall is how long a call that sets a limit hangs after the limit is
	// in force, as a slow driver's would (StallSetLimit).
	stall time.Duration
	// live, when set, is the /proc a listed process must be in to be
	// reported (OnlyLiveProcesses).
	live string
}

// OnlyLiveProcesses makes each GPU report only those of its processes that
// still run (have a directory in procPath), as NVML does: a holder that
// was stopped lets go of the GPU.
func (s *Server) OnlyLiveProcesses(procPath string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.live = procPath
}

// KeepLimitsIn keeps the power limits in force in the file at path: they
// are read from it now, if it exists, and written to it whenever one is
// set — so that a process killed after setting a limit leaves it set for
// the next, as a real GPU would.
func (s *Server) KeepLimitsIn(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = path
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var kept map[int]uint32
	if err := json.Unmarshal(b, &kept); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for i, mw := range kept {
		s.limit[i] = mw
	}
	return nil
}

// StallSetLimit makes every call that sets a power limit hang for d once
// the limit is in force.
func (s *Server) StallSetLimit(d time.Duration) { s.stall = d }

// NewServer returns a mock NVML with n GPUs reading like f.
func NewServer(f *Fixture, n int) *Server {
	s := &Server{
		Server:      dgxh100.NewWithGPUs(gpus.Multiple(n, gpus.H100_SXM5_80GB)...),
		PowerLimits: map[int][]uint32{},
		limit:       map[int]uint32{},
		procs:       map[int][]nvml.ProcessInfo{},
		Events:      NewEventSet(),
	}
	s.EventSetCreateFunc = func() (nvml.EventSet, nvml.Return) { return s.Events, nvml.SUCCESS }
	s.DriverVersion, s.NvmlVersion, s.CudaDriverVersion = f.Driver, f.NVMLVersion, f.CUDADriver
	for i, d := range s.Devices {
		s.configure(d.(*server.Device), i, f.Devices[0])
	}
	return s
}

// Mu guards PowerLimits, for readers while actions run.
func (s *Server) Mu() *sync.Mutex { return &s.mu }

// SetProcesses sets the compute processes GPU index runs.
func (s *Server) SetProcesses(index int, procs []nvml.ProcessInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs[index] = procs
}

// Device returns the mock device at index, to change its answers.
func (s *Server) Device(index int) *server.Device { return s.Devices[index].(*server.Device) }

func hex(s string) uint64 {
	v, _ := strconv.ParseUint(s, 0, 64)
	return v
}

func (s *Server) configure(d *server.Device, i int, r Reading) {
	d.UUID = fmt.Sprintf("GPU-00000000-0000-0000-0000-%012d", i)
	d.PciBusID = fmt.Sprintf("0000:%02x:00.0", 0x18+i)
	if i == 0 {
		d.UUID, d.PciBusID = r.UUID, r.PciBusID
	}
	d.Config.Name = r.Name
	d.MemoryInfo = nvml.Memory{Total: r.MemV1.Total, Free: r.MemV1.Free, Used: r.MemV1.Used}
	s.limit[i] = r.PowerLimitEnforcedMW
	ok := nvml.SUCCESS
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		var p nvml.PciInfo
		for j, c := range []byte(d.PciBusID) {
			p.BusId[j] = int8(c)
		}
		return p, ok
	}
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{Gpu: r.Util.Gpu, Memory: r.Util.Memory}, ok
	}
	d.GetMemoryInfo_v2Func = func() (nvml.Memory_v2, nvml.Return) {
		return nvml.Memory_v2{Total: r.MemV2.Total, Reserved: r.MemV2.Reserved, Free: r.MemV2.Free, Used: r.MemV2.Used}, ok
	}
	d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return r.TempC, ok }
	d.GetTemperatureThresholdFunc = func(t nvml.TemperatureThresholds) (uint32, nvml.Return) {
		switch t {
		case nvml.TEMPERATURE_THRESHOLD_SLOWDOWN:
			return r.ThresholdSlowdown, ok
		case nvml.TEMPERATURE_THRESHOLD_SHUTDOWN:
			return r.ThresholdShutdown, ok
		case nvml.TEMPERATURE_THRESHOLD_GPU_MAX:
			return r.ThresholdGPUMax, ok
		case nvml.TEMPERATURE_THRESHOLD_MEM_MAX:
			return r.ThresholdMemMax, ok
		}
		return 0, nvml.ERROR_NOT_SUPPORTED
	}
	d.GetMarginTemperatureFunc = func() (nvml.MarginTemperature, nvml.Return) {
		if r.MarginC == nil {
			return nvml.MarginTemperature{}, nvml.ERROR_NOT_SUPPORTED
		}
		return nvml.MarginTemperature{MarginTemperature: *r.MarginC}, ok
	}
	d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return r.PowerMW, ok }
	d.GetEnforcedPowerLimitFunc = func() (uint32, nvml.Return) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.limit[i], ok
	}
	d.GetPowerManagementLimitFunc = d.GetEnforcedPowerLimitFunc
	d.GetPowerManagementDefaultLimitFunc = func() (uint32, nvml.Return) { return r.PowerLimitDefaultMW, ok }
	d.GetPowerManagementLimitConstraintsFunc = func() (uint32, uint32, nvml.Return) {
		return r.PowerLimitConstraintsMW[0], r.PowerLimitConstraintsMW[1], ok
	}
	d.SetPowerManagementLimitFunc = func(mw uint32) nvml.Return {
		if mw < r.PowerLimitConstraintsMW[0] || mw > r.PowerLimitConstraintsMW[1] {
			return nvml.ERROR_INVALID_ARGUMENT
		}
		s.mu.Lock()
		s.limit[i] = mw
		s.PowerLimits[i] = append(s.PowerLimits[i], mw)
		var err error
		if s.state != "" {
			// Written whole, then renamed into place: a test reading the
			// file meanwhile sees the old limits or the new, never half.
			b, _ := json.Marshal(s.limit)
			if err = os.WriteFile(s.state+".tmp", b, 0o600); err == nil {
				err = os.Rename(s.state+".tmp", s.state)
			}
		}
		s.mu.Unlock()
		if err != nil {
			return nvml.ERROR_UNKNOWN
		}
		time.Sleep(s.stall)
		return ok
	}
	d.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) { return r.EnergyMJ, ok }
	d.GetClockInfoFunc = func(nvml.ClockType) (uint32, nvml.Return) { return r.ClockSMMHz, ok }
	d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return hex(r.ClocksEventReasons), ok }
	d.GetSupportedClocksEventReasonsFunc = func() (uint64, nvml.Return) { return hex(r.ClocksEventSupported), ok }
	d.GetSupportedEventTypesFunc = func() (uint64, nvml.Return) { return hex(r.EventTypesSupported), ok }
	d.GetTotalEccErrorsFunc = func(t nvml.MemoryErrorType, _ nvml.EccCounterType) (uint64, nvml.Return) {
		if t == nvml.MEMORY_ERROR_TYPE_CORRECTED {
			return r.ECCCorrectedVolatile, ok
		}
		return r.ECCUncorrectedVolatile, ok
	}
	d.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
		corr, _ := r.RemappedRows[0].(float64)
		unc, _ := r.RemappedRows[1].(float64)
		pending, _ := r.RemappedRows[2].(bool)
		failed, _ := r.RemappedRows[3].(bool)
		return int(corr), int(unc), pending, failed, ok
	}
	d.GetPerformanceStateFunc = func() (nvml.Pstates, nvml.Return) { return nvml.Pstates(r.PState), ok }
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		s.mu.Lock()
		defer s.mu.Unlock()
		var procs []nvml.ProcessInfo
		for _, p := range s.procs[i] {
			if s.live != "" {
				if _, err := os.Stat(filepath.Join(s.live, strconv.Itoa(int(p.Pid)))); err != nil {
					continue
				}
			}
			procs = append(procs, p)
		}
		return procs, ok
	}
	d.GetPersistenceModeFunc = func() (nvml.EnableState, nvml.Return) {
		if r.PersistenceMode == 1 {
			return nvml.FEATURE_ENABLED, ok
		}
		return nvml.FEATURE_DISABLED, ok
	}
	d.GetFanSpeedFunc = func() (uint32, nvml.Return) {
		if r.FanError == "Not Supported" {
			return 0, nvml.ERROR_NOT_SUPPORTED
		}
		return 0, nvml.ERROR_UNKNOWN
	}
	d.RegisterEventsFunc = func(uint64, nvml.EventSet) nvml.Return { return ok }
	d.GetPcieReplayCounterFunc = func() (int, nvml.Return) { return r.PcieReplayCounter, ok }
	d.GetRetiredPagesFunc = func(c nvml.PageRetirementCause) ([]uint64, nvml.Return) {
		if r.RetiredPages == nil {
			return nil, nvml.ERROR_NOT_SUPPORTED
		}
		n := r.RetiredPages.SingleBit
		if c == nvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR {
			n = r.RetiredPages.DoubleBit
		}
		return make([]uint64, n), ok
	}
	d.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) {
		switch {
		case r.RetiredPages == nil:
			return 0, nvml.ERROR_NOT_SUPPORTED
		case r.RetiredPages.Pending:
			return nvml.FEATURE_ENABLED, ok
		}
		return nvml.FEATURE_DISABLED, ok
	}
	d.GetFieldValuesFunc = func(v []nvml.FieldValue) nvml.Return {
		for i := range v {
			v[i].NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
			if v[i].FieldId == nvml.FI_DEV_MEMORY_TEMP && r.MemoryTempC > 0 {
				v[i].ValueType, v[i].NvmlReturn = uint32(nvml.VALUE_TYPE_UNSIGNED_INT), uint32(nvml.SUCCESS)
				binary.LittleEndian.PutUint32(v[i].Value[:], r.MemoryTempC)
			}
			if n, ok := r.NVLinkErrors[v[i].FieldId]; ok {
				v[i].ValueType, v[i].NvmlReturn = uint32(nvml.VALUE_TYPE_UNSIGNED_LONG_LONG), uint32(nvml.SUCCESS)
				binary.LittleEndian.PutUint64(v[i].Value[:], n)
			}
		}
		return ok
	}
}

// EventSet is a mock event set fed from a channel; Wait times out when no
// event is queued.
type EventSet struct {
	mock.EventSet
	Events chan nvml.EventData
}

// NewEventSet returns an event set with room for queued events.
func NewEventSet() *EventSet {
	es := &EventSet{Events: make(chan nvml.EventData, 16)}
	es.WaitFunc = func(ms uint32) (nvml.EventData, nvml.Return) {
		select {
		case ev := <-es.Events:
			return ev, nvml.SUCCESS
		default:
		}
		select {
		case ev := <-es.Events:
			return ev, nvml.SUCCESS
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return nvml.EventData{}, nvml.ERROR_TIMEOUT
		}
	}
	es.FreeFunc = func() nvml.Return { return nvml.SUCCESS }
	return es
}
