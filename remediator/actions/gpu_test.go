package actions

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/moby/moby/client"

	"github.com/selfheal/selfheal/exporter/gpu/gputest"

	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/gpuctl"
)

// mockGPUs is a go-nvml mock of two H100s reading like the fixture.
func mockGPUs(t *testing.T) (*gputest.Server, *gpuctl.GPUs) {
	t.Helper()
	f, err := gputest.Load("../../exporter/gpu/testdata/h100-nvml_idle.json")
	if err != nil {
		t.Fatal(err)
	}
	s := gputest.NewServer(f, 2)
	return s, gpuctl.New(s)
}

func TestGPUThrottleSetsAndRestoresThePowerLimit(t *testing.T) {
	t.Parallel()
	s, gpus := mockGPUs(t)
	a := GPUThrottle{GPUs: gpus}
	req := action.Request{Target: "1", Params: &GPUThrottleParams{PowerLimitRatio: 0.7}}
	if err := a.Permit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	plan, err := a.PlanRevert(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.PowerLimits[1]) != 0 {
		t.Fatal("planning the revert changed the limit")
	}
	// Undoing a change not made yet (a crash between intent and change)
	// leaves the limit alone.
	asJSON := func(m map[string]any) map[string]any { // the revert data goes through the database as JSON
		return map[string]any{"previous_mw": float64(m["previous_mw"].(uint32)), "applied_mw": float64(m["applied_mw"].(uint32))}
	}
	if err := a.Revert(context.Background(), "1", asJSON(plan)); err != nil || len(s.PowerLimits[1]) != 0 {
		t.Fatalf("revert before the change: %v, limits set %v, want none", err, s.PowerLimits[1])
	}
	if _, err := a.Execute(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if got := s.PowerLimits[1]; len(got) != 1 || got[0] != 490000 {
		t.Fatalf("limits set on GPU 1: %v, want [490000] (0.7 × 700 W)", got)
	}
	if len(s.PowerLimits[0]) != 0 {
		t.Fatal("GPU 0 was touched")
	}
	if err := a.Revert(context.Background(), "1", asJSON(plan)); err != nil {
		t.Fatal(err)
	}
	if got := s.PowerLimits[1]; len(got) != 2 || got[1] != 700000 {
		t.Fatalf("limits set on GPU 1: %v, want [490000 700000]: the previous limit restored", got)
	}

	// Clamped to NVML's constraints (200 W at the least).
	req.Params.(*GPUThrottleParams).PowerLimitRatio = 0.1
	if _, err := a.Execute(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if got := s.PowerLimits[1]; got[len(got)-1] != 200000 {
		t.Fatalf("0.1 × 700 W set %d mW, want the 200000 mW minimum", got[len(got)-1])
	}

	// Someone changed the limit since: theirs stays.
	if err := gpus.SetLimit("1", 650000); err != nil {
		t.Fatal(err)
	}
	if err := a.Revert(context.Background(), "1", map[string]any{"previous_mw": 700000.0, "applied_mw": 200000.0}); err != nil {
		t.Fatal(err)
	}
	if l, _ := gpus.Limits("1"); l.Current != 650000 {
		t.Fatalf("revert overrode a limit set by someone else: %d", l.Current)
	}
}

func TestGPUThrottleAlreadyLowIsANoOp(t *testing.T) {
	t.Parallel()
	s, gpus := mockGPUs(t)
	if err := gpus.SetLimit("0", 300000); err != nil {
		t.Fatal(err)
	}
	a, req := GPUThrottle{GPUs: gpus}, action.Request{Target: "0", Params: &GPUThrottleParams{PowerLimitRatio: 0.7}}
	plan, err := a.PlanRevert(context.Background(), req)
	if err != nil || plan != nil {
		t.Fatalf("PlanRevert = %v, %v: nothing to undo for a limit already below the target", plan, err)
	}
	res, err := a.Execute(context.Background(), req)
	if err != nil || len(s.PowerLimits[0]) != 1 {
		t.Fatalf("%v %v %v: a limit already below the target must be left alone, with nothing to revert", res, err, s.PowerLimits[0])
	}
}

func TestGPUResetRefusedWhileHeld(t *testing.T) {
	t.Parallel()
	s, gpus := mockGPUs(t)
	var ran [][]string
	a := GPUReset{GPUs: gpus, Run: func(_ context.Context, args []string) ([]byte, error) {
		ran = append(ran, args)
		return []byte("GPU reset"), nil
	}}
	req := action.Request{Target: "1", Params: &GPUResetParams{Command: DefaultGPUResetCommand}}
	s.SetProcesses(1, []nvml.ProcessInfo{{Pid: 4242}})
	// The evidence kept before the reset: the holders, and NVML's readings
	// (the H100 fixture's).
	ev, err := a.Evidence(context.Background(), req)
	rec, _ := ev.Record.(map[string]any)
	snap, _ := rec["nvml"].(gpuctl.Snapshot)
	if err != nil || rec["index"] != 1 || fmt.Sprint(rec["pids"]) != "[4242]" || snap.TemperatureC == nil || snap.MemoryTotal == nil || *snap.MemoryTotal == 0 {
		t.Errorf("evidence %v (%v)", ev.Record, err)
	}
	err = a.Permit(context.Background(), req)
	if err == nil || !strings.Contains(err.Error(), "GPU 1 reset refused: 1 process(es) hold it (pids [4242])") {
		t.Fatalf("Permit while held = %v", err)
	}
	if _, err := a.Execute(context.Background(), req); err == nil || len(ran) != 0 {
		t.Fatalf("Execute while held = %v, ran %v", err, ran)
	}
	s.SetProcesses(1, nil)
	if err := a.Permit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Execute(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if len(ran) != 1 || strings.Join(ran[0], " ") != "nvidia-smi --gpu-reset -i "+gpu1 {
		t.Fatalf("ran %v", ran)
	}
}

// fakeProc writes /proc/<pid>/cgroup files: pid → cgroup line.
func fakeProc(t *testing.T, cgroups map[uint32]string) string {
	t.Helper()
	dir := t.TempDir()
	for pid, line := range cgroups {
		p := filepath.Join(dir, strconv.Itoa(int(pid)))
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "cgroup"), []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func containerID(t *testing.T, name string) string {
	t.Helper()
	api, _ := dockertest.Client(t)
	info, err := api.ContainerInspect(context.Background(), name, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return info.Container.ID
}

// TestGPUSessionReset maps the GPU's processes (mock NVML) to real
// containers through cgroup files and restarts the opted-in holder; a holder
// on the host or in a container without the label refuses the whole reset.
func TestGPUSessionReset(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	s, gpus := mockGPUs(t)
	holder := dockertest.Run(t, dockertest.Spec{Labels: label})
	plain := dockertest.Run(t, dockertest.Spec{})
	proc := fakeProc(t, map[uint32]string{
		100: "0::/system.slice/docker-" + containerID(t, holder) + ".scope",
		200: "0::/user.slice/session-1.scope",
		300: "12:memory:/docker/" + containerID(t, plain),
	})
	a := GPUSessionReset{GPUs: gpus, Containers: c, ProcPath: proc}
	req := action.Request{Target: "0", Verify: quickVerify}

	for _, tc := range []struct {
		pids []uint32
		want string
	}{
		{[]uint32{100, 200}, "process 200 runs on the host, not in a container"},
		{[]uint32{100, 300}, "lacks the opt-in label"},
	} {
		var procs []nvml.ProcessInfo
		for _, p := range tc.pids {
			procs = append(procs, nvml.ProcessInfo{Pid: p})
		}
		s.SetProcesses(0, procs)
		before := dockertest.State(t, holder).StartedAt
		err := a.Permit(context.Background(), req)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing touched") {
			t.Fatalf("holders %v: Permit = %v", tc.pids, err)
		}
		if _, err := a.Execute(context.Background(), req); err == nil {
			t.Fatalf("holders %v: Execute did not refuse", tc.pids)
		}
		if dockertest.State(t, holder).StartedAt != before {
			t.Fatalf("holders %v: the opted-in holder was restarted although the reset was refused", tc.pids)
		}
	}

	s.SetProcesses(0, []nvml.ProcessInfo{{Pid: 100}})
	before := dockertest.State(t, holder).StartedAt
	if err := a.Permit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	// The evidence kept before the reset: who held the GPU.
	ev, err := a.Evidence(context.Background(), req)
	if rec, _ := ev.Record.(map[string]any); err != nil || fmt.Sprint(rec["pids"]) != "[100]" || fmt.Sprint(rec["holders"]) != "["+holder+"]" {
		t.Errorf("evidence %v (%v)", ev.Record, err)
	}
	res, err := a.Execute(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if dockertest.State(t, holder).StartedAt == before {
		t.Fatal("the holder was not restarted")
	}
	if names := res.Details["containers"].([]string); len(names) != 1 || names[0] != holder {
		t.Fatalf("details %v", res.Details)
	}
}
