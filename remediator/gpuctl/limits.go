package gpuctl

import "math"

// PowerLimits are a GPU's power limits, in milliwatts.
type PowerLimits struct {
	Current, Default, Min, Max uint32
}

// Clamp returns ratio × the default limit, within the constraints.
func (l PowerLimits) Clamp(ratio float64) uint32 {
	mw := uint32(math.Round(float64(l.Default) * ratio))
	return max(l.Min, min(l.Max, mw))
}
