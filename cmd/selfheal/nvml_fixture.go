//go:build selfheal_nvml_fixture && cgo

// Built only for the game days (go build -tags selfheal_nvml_fixture), never
// shipped: NVML is go-nvml's mock of two H100s reading as the fixture file
// SELFHEAL_NVML_FIXTURE says, so the GPU rules fire and the GPU actions act
// on a machine without a GPU. SELFHEAL_NVML_PROCESSES ("0=4242,0=4244,1=4343")
// says which host PIDs hold a compute context on which GPU, for as long as
// they run.
// SELFHEAL_NVML_STATE names a file that keeps the power limits in force
// across processes, as a GPU keeps them across a crash of selfheal, and
// SELFHEAL_NVML_SET_LIMIT_STALL (a duration) makes setting a limit hang
// that long once it is in force.

package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/selfheal/selfheal/exporter/gpu/gputest"
	"github.com/selfheal/selfheal/remediator/server"
)

func nvmlOverride(log *slog.Logger) (server.NVML, error) {
	path := os.Getenv("SELFHEAL_NVML_FIXTURE")
	if path == "" {
		return nil, nil
	}
	f, err := gputest.Load(path)
	if err != nil {
		return nil, err
	}
	s := gputest.NewServer(f, 2)
	procs := map[int][]nvml.ProcessInfo{}
	for _, kv := range strings.FieldsFunc(os.Getenv("SELFHEAL_NVML_PROCESSES"), func(r rune) bool { return r == ',' }) {
		idx, pid, ok := strings.Cut(kv, "=")
		i, err1 := strconv.Atoi(idx)
		p, err2 := strconv.ParseUint(pid, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("SELFHEAL_NVML_PROCESSES: %q is not gpu=pid", kv)
		}
		procs[i] = append(procs[i], nvml.ProcessInfo{Pid: uint32(p)})
	}
	for i, p := range procs {
		s.SetProcesses(i, p)
	}
	s.OnlyLiveProcesses("/proc") // a stopped holder lets go of its GPU
	if state := os.Getenv("SELFHEAL_NVML_STATE"); state != "" {
		if err := s.KeepLimitsIn(state); err != nil {
			return nil, fmt.Errorf("SELFHEAL_NVML_STATE: %w", err)
		}
	}
	if v := os.Getenv("SELFHEAL_NVML_SET_LIMIT_STALL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return nil, fmt.Errorf("SELFHEAL_NVML_SET_LIMIT_STALL: %w", err)
		}
		s.StallSetLimit(d)
	}
	log.Warn("NVML is a mock filled from a fixture (a game-day build)", "fixture", path)
	return s, nil
}
