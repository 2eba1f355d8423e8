package actions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/selfheal/selfheal/exporter/gpu/gputest"
	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/gpuctl"
)

// gpu1 is the mock's second GPU, the one the ladder tests recover.
const gpu1 = "GPU-00000000-0000-0000-0000-000000000001"

// standIn records the commands the ladder runs, and whether the holder was
// running at each: nvidia-smi is never run for real.
type standIn struct {
	mu     sync.Mutex
	ran    []string
	fail   string // a command containing this fails
	during func(args []string)
}

func (s *standIn) run(_ context.Context, args []string) ([]byte, error) {
	cmd := strings.Join(args, " ")
	if s.during != nil {
		s.during(args)
	}
	s.mu.Lock()
	s.ran = append(s.ran, cmd)
	s.mu.Unlock()
	if s.fail != "" && strings.Contains(cmd, s.fail) {
		return []byte("Unable to reset GPU " + gpu1 + ": In use by another client"), errors.New("exit status 255")
	}
	return []byte("GPU " + gpu1 + " was successfully reset."), nil
}

func (s *standIn) commands() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.ran, "; ")
}

// ladderGPUs is the H100 mock with change applied to its reading, GPU 1
// held by the process pid for as long as it runs.
func ladderGPUs(t *testing.T, pid int, change func(*gputest.Reading)) (*gputest.Server, *gpuctl.GPUs) {
	t.Helper()
	f, err := gputest.Load("../../exporter/gpu/testdata/h100-nvml_idle.json")
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(&f.Devices[0])
	}
	s := gputest.NewServer(f, 2)
	s.SetProcesses(1, []nvml.ProcessInfo{{Pid: uint32(pid)}})
	s.OnlyLiveProcesses("/proc")
	return s, gpuctl.New(s)
}

// ladderWithOneHolder is the ladder over the mock, GPU 1 held by an
// opted-in container (returned, with the mock), running no command yet.
func ladderWithOneHolder(t *testing.T, change func(*gputest.Reading)) (string, *gputest.Server, GPURecover) {
	t.Helper()
	c, label := fleet(t)
	holder := dockertest.Run(t, dockertest.Spec{Labels: label})
	s, gpus := ladderGPUs(t, dockertest.State(t, holder).Pid, change)
	return holder, s, GPURecover{GPUs: gpus, Containers: c, ProcPath: "/proc", Poll: 20 * time.Millisecond}
}

func stepNames(res action.Result) string {
	steps, _ := res.Details["steps"].([]map[string]any)
	var names []string
	for _, s := range steps {
		n := fmt.Sprint(s["step"])
		if e, ok := s["error"]; ok {
			n += " (failed: " + fmt.Sprint(e) + ")"
		}
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}

// TestGPURecoverLadder: the holder (a real container, its real PID
// holding GPU 1 in the mock) is stopped before the reset and started
// after it; persistence mode, on as on the recorded H100, is turned off
// before the reset and on again after; the reset names the GPU by UUID;
// the holder's dependent is restarted once the holder is back.
func TestGPURecoverLadder(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	holder := dockertest.Run(t, dockertest.Spec{Labels: label, NetworkMode: "bridge"})
	dependent := dockertest.Run(t, dockertest.Spec{Labels: label, NetworkMode: "container:" + holder})
	_, gpus := ladderGPUs(t, dockertest.State(t, holder).Pid, nil)
	before, depBefore := dockertest.State(t, holder).StartedAt, dockertest.State(t, dependent).StartedAt
	stand := &standIn{}
	stand.during = func(args []string) {
		if dockertest.State(t, holder).Running {
			t.Errorf("%s ran while the holder ran", strings.Join(args, " "))
		}
	}
	a := GPURecover{GPUs: gpus, Containers: c, ProcPath: "/proc", Run: stand.run, Poll: 20 * time.Millisecond}
	p := newGPURecoverParams().(*GPURecoverParams)
	p.Dependents = DependentsRestart
	req := action.Request{Target: "1", Params: p, Verify: quickVerify}

	if err := a.Permit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	touches, err := a.Touches(context.Background(), req)
	if err != nil || strings.Join(touches, " ") != holder+" "+dependent {
		t.Fatalf("Touches = %v (%v), want the holder then its dependent", touches, err)
	}
	ev, err := a.Evidence(context.Background(), req)
	if rec, _ := ev.Record.(map[string]any); err != nil || fmt.Sprint(rec["holders"]) != "["+holder+"]" || rec["persistence_mode"] != true {
		t.Errorf("evidence %v (%v)", ev.Record, err)
	}
	res, err := a.Execute(context.Background(), req)
	if err != nil {
		t.Fatalf("%v; steps: %s", err, stepNames(res))
	}
	want := "nvidia-smi -i " + gpu1 + " -pm 0; nvidia-smi --gpu-reset -i " + gpu1 + "; nvidia-smi -i " + gpu1 + " -pm 1"
	if got := stand.commands(); got != want {
		t.Fatalf("ran %q\nwant %q", got, want)
	}
	if got, want := stepNames(res), "stop the holders, wait for the GPU to be free, turn persistence mode off, reset, "+
		"check the GPU answers, turn persistence mode on again, start the holders"; got != want {
		t.Errorf("steps %q\nwant %q", got, want)
	}
	st := dockertest.State(t, holder)
	if !st.Running || st.StartedAt == before {
		t.Fatalf("the holder is not running in a new run: %+v", st)
	}
	if dockertest.State(t, dependent).StartedAt == depBefore {
		t.Error("the holder's dependent was not restarted")
	}
	var got []string
	for _, tc := range res.Touched {
		if tc.Err != nil || tc.Skipped != "" {
			t.Errorf("touched %+v", tc)
		}
		got = append(got, tc.Action+" "+tc.Target)
	}
	if strings.Join(got, ", ") != "stop_start "+holder+", restart "+dependent {
		t.Errorf("touched %v", got)
	}
}

// TestGPURecoverFailedResetStartsHoldersAgain: a reset the driver refuses
// fails the action, so its escalation follows, and leaves the host as it
// was found: holders running again, persistence mode on again.
func TestGPURecoverFailedResetStartsHoldersAgain(t *testing.T) {
	t.Parallel()
	holder, _, a := ladderWithOneHolder(t, nil)
	stand := &standIn{fail: "--gpu-reset"}
	a.Run = stand.run
	res, err := a.Execute(context.Background(), action.Request{Target: "1", Verify: quickVerify})
	if err == nil || !strings.Contains(err.Error(), "In use by another client") || !strings.Contains(err.Error(), "its holders were started again") {
		t.Fatalf("Execute = %v, want the reset's failure", err)
	}
	if !strings.HasSuffix(stand.commands(), "-pm 1") {
		t.Errorf("ran %q: persistence mode not turned on again", stand.commands())
	}
	if res.Details["warning"] != nil {
		t.Errorf("warning %v", res.Details["warning"])
	}
	if !dockertest.State(t, holder).Running {
		t.Error("the holder was left stopped")
	}
	if got := stepNames(res); !strings.Contains(got, "reset (failed") || strings.Contains(got, "check the GPU answers") {
		t.Errorf("steps %q", got)
	}
}

// TestGPURecoverStartsHoldersPastItsTime: a reset that hangs until the
// action's time is up still has the holders started again; persistence
// mode that cannot be turned on again is a warning, not a failure.
func TestGPURecoverStartsHoldersPastItsTime(t *testing.T) {
	t.Parallel()
	holder, _, a := ladderWithOneHolder(t, nil)
	a.Run = func(ctx context.Context, args []string) ([]byte, error) {
		switch strings.Join(args, " ") {
		case "nvidia-smi --gpu-reset -i " + gpu1:
			<-ctx.Done() // hangs past the action's timeout
			return nil, ctx.Err()
		case "nvidia-smi -i " + gpu1 + " -pm 1":
			return []byte("Unable to set persistence mode"), errors.New("exit status 3")
		}
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	res, err := a.Execute(ctx, action.Request{Target: "1", Verify: quickVerify})
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("Execute = %v, want the reset's timeout", err)
	}
	if !dockertest.State(t, holder).Running {
		t.Fatal("the holder was left stopped once the action's time was up")
	}
	if w, _ := res.Details["warning"].(string); !strings.Contains(w, "persistence mode is still off") {
		t.Errorf("warning %q", w)
	}
}

// TestGPURecoverChecksTheGPUAnswers: a GPU that no longer reads a
// temperature after its reset fails the ladder.
func TestGPURecoverChecksTheGPUAnswers(t *testing.T) {
	t.Parallel()
	holder, s, a := ladderWithOneHolder(t, func(r *gputest.Reading) { r.PersistenceMode = 0 })
	stand := &standIn{during: func(args []string) {
		if strings.Contains(strings.Join(args, " "), "--gpu-reset") {
			s.Device(1).GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
		}
	}}
	a.Run = stand.run
	p := newGPURecoverParams().(*GPURecoverParams)
	p.Settle = action.Duration(300 * time.Millisecond)
	_, err := a.Execute(context.Background(), action.Request{Target: "1", Params: p, Verify: quickVerify})
	if err == nil || !strings.Contains(err.Error(), "did not answer NVML with sane readings within 300ms") ||
		!strings.Contains(err.Error(), "no temperature reading") {
		t.Fatalf("Execute = %v", err)
	}
	// Persistence mode was off: it is left off, no command run for it.
	if got := stand.commands(); got != "nvidia-smi --gpu-reset -i "+gpu1 {
		t.Errorf("ran %q", got)
	}
	if !dockertest.State(t, holder).Running {
		t.Error("the holder was left stopped")
	}
}

// TestGPURecoverRefusesHoldersNotOptedIn: a container without the label
// holding the GPU refuses the whole ladder, naming it, before the opted-in
// holder is touched or any command runs.
func TestGPURecoverRefusesHoldersNotOptedIn(t *testing.T) {
	t.Parallel()
	c, label := fleet(t)
	holder := dockertest.Run(t, dockertest.Spec{Labels: label})
	plain := dockertest.Run(t, dockertest.Spec{})
	s, gpus := ladderGPUs(t, 0, nil)
	s.SetProcesses(1, []nvml.ProcessInfo{{Pid: uint32(dockertest.State(t, holder).Pid)}, {Pid: uint32(dockertest.State(t, plain).Pid)}})
	stand := &standIn{}
	a := GPURecover{GPUs: gpus, Containers: c, ProcPath: "/proc", Run: stand.run}
	req := action.Request{Target: "1", Verify: quickVerify}
	before := dockertest.State(t, holder).StartedAt
	err := a.Permit(context.Background(), req)
	var refusal *action.Refusal
	if !errors.As(err, &refusal) || !strings.Contains(err.Error(), "GPU 1 recovery refused, nothing touched") ||
		!strings.Contains(err.Error(), plain) || !strings.Contains(err.Error(), "lacks the opt-in label") {
		t.Fatalf("Permit = %v", err)
	}
	if _, err := a.Execute(context.Background(), req); err == nil {
		t.Fatal("Execute did not refuse")
	}
	if stand.commands() != "" || dockertest.State(t, holder).StartedAt != before {
		t.Fatalf("refused, yet ran %q or touched the opted-in holder", stand.commands())
	}
}

func TestGPURecoverParamsProblems(t *testing.T) {
	t.Parallel()
	p := &GPURecoverParams{Command: nil, PersistenceCommand: []string{"{{ .UUID"}, Settle: 0, Dependents: "all"}
	got := strings.Join(p.Problems(), "\n")
	for _, want := range []string{"command: must not be empty", "persistence_command: template", "settle: must be positive", `dependents: "all"`} {
		if !strings.Contains(got, want) {
			t.Errorf("problems %q lack %q", got, want)
		}
	}
}
