package gpuctl

import "math"

// Snapshot is what NVML reads of a GPU at one moment: the evidence kept
// before an action on it. A reading NVML could not give is left out.
type Snapshot struct {
	TemperatureC    *uint32 `json:"temperature_c,omitempty"`
	UtilizationGPU  *uint32 `json:"utilization_gpu_percent,omitempty"`
	UtilizationMem  *uint32 `json:"utilization_memory_percent,omitempty"`
	MemoryUsedBytes *uint64 `json:"memory_used_bytes,omitempty"`
	MemoryTotal     *uint64 `json:"memory_total_bytes,omitempty"`
	PowerMW         *uint32 `json:"power_mw,omitempty"`
}

// PowerLimits are a GPU's power limits, in milliwatts.
type PowerLimits struct {
	Current, Default, Min, Max uint32
}

// Clamp returns ratio × the default limit, within the constraints.
func (l PowerLimits) Clamp(ratio float64) uint32 {
	mw := uint32(math.Round(float64(l.Default) * ratio))
	return max(l.Min, min(l.Max, mw))
}
