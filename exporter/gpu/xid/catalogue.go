// Package xid knows NVIDIA's XID errors: which remediation each code
// calls for (the catalogue), how the driver writes them to the kernel log,
// and how one error reported by both NVML and the kernel log is counted
// once. It needs neither cgo nor NVML.
package xid

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Action is the remediation an XID class calls for.
type Action string

// The actions, from the smallest: restart the processes (containers) that
// hold the GPU; reset the GPU; reboot the host; tell people only.
const (
	RestartHolders Action = "restart_holders"
	ResetGPU       Action = "reset_gpu"
	Reboot         Action = "reboot"
	Notify         Action = "notify"
)

// Actions are the actions a catalogue may name, smallest first.
var Actions = []Action{RestartHolders, ResetGPU, Reboot, Notify}

// Catalogue maps an XID code to its action. A code it does not list is
// Notify.
type Catalogue map[uint64]Action

// Action is the action for code.
func (c Catalogue) Action(code uint64) Action {
	if a, ok := c[code]; ok {
		return a
	}
	return Notify
}

// Default is the shipped catalogue, after the resolutions of NVIDIA's XID
// table (docs.nvidia.com/deploy/xid-errors) and NVSentinel's defaults:
//
//   - restart_holders — the application's own fault; the GPU is sound:
//     13 (graphics engine exception), 31 (GPU memory page fault),
//     43 (GPU stopped processing: the channel was reset), 45 (preemptive
//     clean-up after an earlier error), 94 (contained ECC error: only the
//     application that touched the memory is affected);
//   - reset_gpu — the GPU's state is bad until it is reset:
//     48 (double-bit ECC error), 63 (row remap or page retirement
//     recorded: applied at the next reset), 64 (row remap or page
//     retirement failed to record), 74 (NVLink error), 92 (high rate of
//     single-bit ECC errors), 95 (uncontained ECC error), 119 and 120 (GSP
//     timeout and GSP error);
//   - reboot — no reset reaches the GPU: 79 (fallen off the bus);
//   - notify — everything else.
func Default() Catalogue {
	c := Catalogue{}
	for _, code := range []uint64{13, 31, 43, 45, 94} {
		c[code] = RestartHolders
	}
	for _, code := range []uint64{48, 63, 64, 74, 92, 95, 119, 120} {
		c[code] = ResetGPU
	}
	c[79] = Reboot
	return c
}

// Parse reads a catalogue file: for each action, the XID codes that call
// for it, e.g.
//
//	restart_holders: [13, 31, 43]
//	reset_gpu: [48, 95]
//	notify: [92]
//
// The codes it lists replace the defaults' actions for those codes; the
// defaults hold for the rest. A code listed twice, an unknown action or a
// key that is not one is an error.
func Parse(b []byte) (Catalogue, error) {
	var byAction map[string][]uint64
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&byAction); err != nil && !errors.Is(err, io.EOF) { // an empty file keeps the defaults
		return nil, fmt.Errorf("XID catalogue: %w", err)
	}
	c := Default()
	listed := map[uint64]Action{}
	for _, name := range slices.Sorted(maps.Keys(byAction)) {
		a := Action(name)
		if !slices.Contains(Actions, a) {
			return nil, fmt.Errorf("XID catalogue: unknown action %q (want one of %s)", name, joinActions())
		}
		for _, code := range byAction[name] {
			if prev, dup := listed[code]; dup {
				return nil, fmt.Errorf("XID catalogue: XID %d is listed under both %s and %s", code, prev, a)
			}
			listed[code] = a
			c[code] = a
		}
	}
	return c, nil
}

func joinActions() string {
	s := make([]string, len(Actions))
	for i, a := range Actions {
		s[i] = string(a)
	}
	return strings.Join(s, ", ")
}
