package gpuctl

import (
	"fmt"
	"math"
)

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

// Problems says what is wrong with a GPU that reads like s: what a GPU
// just reset must read before its holders may have it back. None: it
// answers with a temperature a working GPU has, and with its memory.
func (s Snapshot) Problems() []string {
	var probs []string
	switch t := s.TemperatureC; {
	case t == nil:
		probs = append(probs, "no temperature reading")
	case *t == 0 || *t > maxSaneTemperatureC:
		probs = append(probs, fmt.Sprintf("temperature %d °C is not one a working GPU reads", *t))
	}
	if s.MemoryTotal == nil || *s.MemoryTotal == 0 {
		probs = append(probs, "no memory reading")
	}
	if s.UtilizationGPU == nil {
		probs = append(probs, "no utilisation reading")
	}
	return probs
}

// maxSaneTemperatureC is above every NVIDIA GPU's shutdown temperature
// (an H100 shuts down at 92 °C): a reading above it is garbage.
const maxSaneTemperatureC = 120
