package gpuctl

import (
	"strings"
	"testing"
)

func TestSnapshotProblems(t *testing.T) {
	t.Parallel()
	u32 := func(v uint32) *uint32 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	sane := Snapshot{TemperatureC: u32(31), UtilizationGPU: u32(0), MemoryTotal: u64(85520809984)}
	for _, tc := range []struct {
		name string
		s    Snapshot
		want string
	}{
		{"the recorded H100 at idle", sane, ""},
		{"nothing read", Snapshot{}, "no temperature reading; no memory reading; no utilisation reading"},
		{"a garbage temperature", Snapshot{TemperatureC: u32(255), UtilizationGPU: u32(0), MemoryTotal: u64(1)}, "temperature 255 °C is not one a working GPU reads"},
		{"zero degrees", Snapshot{TemperatureC: u32(0), UtilizationGPU: u32(0), MemoryTotal: u64(1)}, "temperature 0 °C is not one a working GPU reads"},
		{"no memory", Snapshot{TemperatureC: u32(40), UtilizationGPU: u32(3), MemoryTotal: u64(0)}, "no memory reading"},
	} {
		if got := strings.Join(tc.s.Problems(), "; "); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
