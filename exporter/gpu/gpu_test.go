package gpu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/selfheal/selfheal/exporter/exportertest"
	"github.com/selfheal/selfheal/exporter/gpu/gputest"
	"github.com/selfheal/selfheal/exporter/gpu/xid"
)

func fixture(t *testing.T, name string) *gputest.Fixture {
	t.Helper()
	f, err := gputest.Load("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestGoldenIdleEightGPUs(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 8)
	exportertest.Compare(t, New(s, quiet(), Options{}), "testdata/gpu_idle_8.prom")
}

func TestGoldenAfterLoad(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_after_load.json"), 1)
	exportertest.Compare(t, New(s, quiet(), Options{}), "testdata/gpu_after_load.prom")
}

func TestNotSupportedLeavesSeriesOut(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 1)
	s.Device(0).GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
	s.Device(0).GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
		return 0, 0, false, false, nvml.ERROR_NOT_SUPPORTED
	}
	c := New(s, quiet(), Options{})
	out := exportertest.Exposition(t, c) // fails the test if Update errs
	for _, absent := range []string{"selfheal_gpu_energy_joules_total", "selfheal_gpu_remapped_rows", "selfheal_gpu_fan_speed_ratio"} {
		if strings.Contains(out, absent) {
			t.Errorf("%s exposed although not supported", absent)
		}
	}
	if !strings.Contains(out, "selfheal_gpu_temperature_celsius{") {
		t.Error("supported series missing")
	}
}

// TestLoadSamples walks the one-per-second samples taken while load
// started: utilisation 0 → 100 %, power 72 W → 696 W, clock reasons idle →
// software power cap.
func TestLoadSamples(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 1)
	c := New(s, quiet(), Options{})
	f, err := os.Open("testdata/h100-nvml_load_samples.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var smp struct {
			TempC   uint32 `json:"temp_c"`
			GPUUtil uint32 `json:"gpu_util"`
			MemUtil uint32 `json:"mem_util"`
			PowerMW uint32 `json:"power_mw"`
			MemUsed uint64 `json:"mem_used"`
			SMMHz   uint32 `json:"sm_mhz"`
			Reasons string `json:"reasons"`
		}
		if err := json.Unmarshal(sc.Bytes(), &smp); err != nil {
			t.Fatal(err)
		}
		d := s.Device(0)
		d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return smp.TempC, nvml.SUCCESS }
		d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: smp.GPUUtil, Memory: smp.MemUtil}, nvml.SUCCESS
		}
		d.GetPowerUsageFunc = func() (uint32, nvml.Return) { return smp.PowerMW, nvml.SUCCESS }
		d.GetClockInfoFunc = func(nvml.ClockType) (uint32, nvml.Return) { return smp.SMMHz, nvml.SUCCESS }
		reasons, _ := strconv.ParseUint(smp.Reasons, 0, 64)
		d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return reasons, nvml.SUCCESS }

		out := exportertest.Exposition(t, c)
		uuid := `gpu="0",uuid="GPU-00000000-0000-0000-0000-000000000000"`
		for _, want := range []string{
			"selfheal_gpu_utilization_ratio{" + uuid + "} " + ftoa(float64(smp.GPUUtil)/100),
			"selfheal_gpu_power_watts{" + uuid + "} " + ftoa(float64(smp.PowerMW)/1000),
			"selfheal_gpu_temperature_celsius{" + uuid + "} " + ftoa(float64(smp.TempC)),
			"selfheal_gpu_sm_clock_hertz{" + uuid + "} " + ftoa(float64(smp.SMMHz)*1e6),
			`selfheal_gpu_clock_event_active{gpu="0",reason="gpu_idle",` + uuid[len(`gpu="0",`):] + `} ` + ftoa(float64(reasons&1)),
			`selfheal_gpu_clock_event_active{gpu="0",reason="sw_power_cap",` + uuid[len(`gpu="0",`):] + `} ` + ftoa(float64(reasons>>2&1)),
		} {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("sample %d: no %q", n, want)
			}
		}
		n++
	}
	if n != 12 {
		t.Fatalf("%d samples, want 12", n)
	}
}

// ftoa formats a value as the text exposition does.
func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func TestLostGPUFailsAndReinitialises(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 2)
	var inits atomic.Int32
	s.InitFunc = func() nvml.Return { inits.Add(1); return nvml.SUCCESS }
	c := New(s, quiet(), Options{})
	ch := make(chan prometheus.Metric, 1000)
	if err := c.Update(ch); err != nil {
		t.Fatal(err)
	}
	good := s.Device(1).GetUtilizationRatesFunc
	s.Device(1).GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{}, nvml.ERROR_GPU_IS_LOST
	}
	err := c.Update(ch)
	if err == nil || !errors.Is(err, errGPULost) || !strings.Contains(err.Error(), "gpu 1") {
		t.Fatalf("Update with a lost GPU = %v", err)
	}
	s.Device(1).GetUtilizationRatesFunc = good // the GPU is back after a reset
	if err := c.Update(ch); err != nil {
		t.Fatalf("after re-initialising: %v", err)
	}
	if n := inits.Load(); n != 2 {
		t.Fatalf("NVML initialised %d times, want 2", n)
	}
}

// TestGPUCountDrops: a GPU lost and gone from NVML's list after the
// re-initialisation lowers selfheal_gpu_devices (the GPUCountDropped
// alert's signal).
func TestGPUCountDrops(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 2)
	c := New(s, quiet(), Options{})
	if out := exportertest.Exposition(t, c); !strings.Contains(out, "selfheal_gpu_devices 2\n") {
		t.Fatalf("two GPUs:\n%s", out)
	}
	s.Device(1).GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
		return nvml.Utilization{}, nvml.ERROR_GPU_IS_LOST
	}
	s.DeviceGetCountFunc = func() (int, nvml.Return) { return 1, nvml.SUCCESS } // fallen off the bus
	_, _ = scrape(t, c)                                                         // finds the GPU lost
	out, err := scrape(t, c)
	if err != nil || !strings.Contains(out, "selfheal_gpu_devices 1\n") || strings.Contains(out, `gpu="1"`) {
		t.Fatalf("after the GPU was lost (%v):\n%s", err, out)
	}
}

func TestLibraryMissing(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 1)
	s.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }
	var logs bytes.Buffer
	c := New(s, slog.New(slog.NewTextHandler(&logs, nil)), Options{})
	now := time.Now()
	c.now = func() time.Time { return now }
	for i := range 3 {
		now = now.Add(2 * retryInit) // each scrape may try again
		if out := exportertest.Exposition(t, c); out != "" {
			t.Fatalf("scrape %d: series without a library:\n%s", i, out)
		}
	}
	if n := strings.Count(logs.String(), "no usable NVIDIA driver"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, logs.String())
	}
}

func TestNoGPUs(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 1)
	s.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.SUCCESS }
	// Only the count: a host whose GPUs all went reports 0, not nothing.
	want := "# HELP selfheal_gpu_devices GPUs NVML listed at its last initialisation (again after a GPU was lost): fewer than before means a GPU is gone.\n" +
		"# TYPE selfheal_gpu_devices gauge\nselfheal_gpu_devices 0\n"
	if out := exportertest.Exposition(t, New(s, quiet(), Options{})); out != want {
		t.Fatalf("series without GPUs:\n%s", out)
	}
}

func TestXIDErrorsCounted(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 2)
	c := New(s, quiet(), Options{})
	exportertest.Exposition(t, c) // initialises and starts watching
	defer c.shutdown()
	for _, code := range []uint64{79, 79, 48} {
		s.Events.Events <- nvml.EventData{Device: s.Devices[1], EventType: nvml.EventTypeXidCriticalError, EventData: code}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := exportertest.Exposition(t, c)
		if strings.Contains(out, `selfheal_gpu_xid_errors_total{action="reboot",gpu="1",uuid="GPU-00000000-0000-0000-0000-000000000001",xid="79"} 2`) &&
			strings.Contains(out, `xid="48"} 1`) {
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, `gpu="0",uuid="GPU-00000000-0000-0000-0000-000000000000",xid=`) && !strings.HasSuffix(line, "} 0") {
					t.Fatalf("XID counted against the wrong GPU: %s", line)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("XID errors not counted:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hang makes the device's power reading block until the returned release
// is called, counting the calls.
func hang(s *gputest.Server, index int) (calls *atomic.Int32, release func()) {
	calls = &atomic.Int32{}
	blocked := make(chan struct{})
	good := s.Device(index).GetPowerUsageFunc
	s.Device(index).GetPowerUsageFunc = func() (uint32, nvml.Return) {
		calls.Add(1)
		<-blocked
		return good()
	}
	var once sync.Once
	return calls, func() { once.Do(func() { close(blocked) }) }
}

// scrape runs Update in the background and fails the test if it has not
// returned after 10 s: a scrape that waited for a hung NVML call would
// never return.
func scrape(t *testing.T, c *Collector) (string, error) {
	t.Helper()
	type out struct {
		text string
		err  error
	}
	done := make(chan out, 1)
	go func() {
		ch := make(chan prometheus.Metric, 1000)
		err := c.Update(ch)
		close(ch)
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(constCollector(ch))
		var b strings.Builder
		mfs, gerr := reg.Gather()
		if gerr != nil {
			err = errors.Join(err, gerr)
		}
		for _, mf := range mfs {
			if _, werr := expfmt.MetricFamilyToText(&b, mf); werr != nil {
				err = errors.Join(err, werr)
			}
		}
		done <- out{b.String(), err}
	}()
	select {
	case o := <-done:
		return o.text, o.err
	case <-time.After(10 * time.Second):
		t.Fatal("the scrape waited for a hung NVML call")
		return "", nil
	}
}

// constCollector replays the metrics of one Update.
type constCollector chan prometheus.Metric

func (constCollector) Describe(chan<- *prometheus.Desc) {}
func (c constCollector) Collect(ch chan<- prometheus.Metric) {
	for m := range c {
		ch <- m
	}
}

// TestHungGPUIsReportedNotWaitedFor: a GPU whose NVML call hangs costs the
// scrape its timeout, not the scrape itself. It is reported down, with
// nothing else of it; the other GPU is read as usual. While the call still
// hangs the GPU is not read again; once it returns, it is.
func TestHungGPUIsReportedNotWaitedFor(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 2)
	c := New(s, quiet(), Options{Timeout: 300 * time.Millisecond})
	calls, release := hang(s, 1)
	defer release()

	out, err := scrape(t, c)
	if err == nil || !strings.Contains(err.Error(), "gpu 1") || !strings.Contains(err.Error(), "did not answer within 300ms") {
		t.Fatalf("scrape with a hung GPU: err = %v", err)
	}
	for _, want := range []string{
		`selfheal_gpu_up{gpu="0",uuid="GPU-00000000-0000-0000-0000-000000000000"} 1`,
		`selfheal_gpu_up{gpu="1",uuid="GPU-00000000-0000-0000-0000-000000000001"} 0`,
		`selfheal_gpu_temperature_celsius{gpu="0",`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in:\n%s", want, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		// Its XID counts need no NVML call, and are kept.
		if strings.Contains(line, `gpu="1"`) && !strings.HasPrefix(line, "selfheal_gpu_up{") && !strings.HasPrefix(line, "selfheal_gpu_xid_errors_total{") {
			t.Errorf("the hung GPU's half-read series is exposed: %s", line)
		}
	}

	out, err = scrape(t, c)
	if err == nil || !strings.Contains(err.Error(), "NVML has not answered for") {
		t.Fatalf("second scrape while the call hangs: err = %v", err)
	}
	if !strings.Contains(out, `selfheal_gpu_up{gpu="1",uuid="GPU-00000000-0000-0000-0000-000000000001"} 0`) {
		t.Errorf("second scrape: GPU 1 not reported down:\n%s", out)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the hung GPU was read %d times, want once (not again while its call hangs)", n)
	}

	release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err = scrape(t, c)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GPU 1 still not read after its call returned: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out, `selfheal_gpu_up{gpu="1",uuid="GPU-00000000-0000-0000-0000-000000000001"} 1`) ||
		!strings.Contains(out, `selfheal_gpu_temperature_celsius{gpu="1",`) {
		t.Errorf("GPU 1 not back once its call returned:\n%s", out)
	}
}

// TestHungInitialisationIsWaitedForOnce: an NVML initialisation that
// hangs fails each scrape after the timeout, and is never started twice.
func TestHungInitialisationIsWaitedForOnce(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 1)
	var inits atomic.Int32
	blocked := make(chan struct{})
	s.InitFunc = func() nvml.Return { inits.Add(1); <-blocked; return nvml.SUCCESS }
	c := New(s, quiet(), Options{Timeout: 200 * time.Millisecond})
	for i := range 2 {
		if _, err := scrape(t, c); err == nil || !strings.Contains(err.Error(), "initialisation did not return within 200ms") {
			t.Fatalf("scrape %d during a hung initialisation: err = %v", i, err)
		}
	}
	if n := inits.Load(); n != 1 {
		t.Fatalf("NVML initialised %d times while the first hung, want once", n)
	}
	close(blocked)
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := scrape(t, c)
		if err == nil && strings.Contains(out, `selfheal_gpu_up{gpu="0",`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no GPU after the initialisation returned: %v\n%s", err, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKernelLogXIDs: an XID error the kernel log reports is counted
// against the GPU at its PCI address, with its action from the catalogue,
// even while that GPU does not answer NVML; NVML's event for the same
// error does not count it twice. One at an address NVML never listed is
// counted with no GPU. What the log held before selfheal started is not.
func TestKernelLogXIDs(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 2) // GPU 1 is at PCI 0000:19:00
	_, release := hang(s, 1)
	defer release()
	path := filepath.Join(t.TempDir(), "kmsg")
	if err := os.WriteFile(path, []byte("4,1,1,-;NVRM: Xid (PCI:0000:19:00): 48, logged before selfheal started\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := New(s, quiet(), Options{Timeout: 300 * time.Millisecond, KernelLog: path})
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("4,5122,913001301,-;NVRM: Xid (PCI:0000:19:00): 79, pid=2071, name=python3, GPU has fallen off the bus.\n" +
		" SUBSYSTEM=pci\n" +
		"3,5124,913002001,-;NVRM: Xid (PCI:0000:5e:00): 13, pid='<unknown>', name=<unknown>, Graphics SM Warp Exception\n")
	f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { c.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()

	gpu1 := `gpu="1",uuid="GPU-00000000-0000-0000-0000-000000000001"`
	waitScrape(t, c, `selfheal_gpu_xid_errors_total{action="reboot",`+gpu1+`,xid="79"} 1`)
	// The same error from NVML, then another: once the other is counted,
	// the first has been seen too.
	s.Events.Events <- nvml.EventData{Device: s.Devices[1], EventType: nvml.EventTypeXidCriticalError, EventData: 79}
	s.Events.Events <- nvml.EventData{Device: s.Devices[1], EventType: nvml.EventTypeXidCriticalError, EventData: 31}
	out := waitScrape(t, c, `selfheal_gpu_xid_errors_total{action="restart_holders",`+gpu1+`,xid="31"} 1`)
	for _, want := range []string{
		`selfheal_gpu_up{` + gpu1 + `} 0`,
		`selfheal_gpu_xid_errors_total{action="reboot",` + gpu1 + `,xid="79"} 1`,
		`selfheal_gpu_xid_errors_total{action="restart_holders",gpu="",uuid="",xid="13"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in:\n%s", want, out)
		}
	}
	if strings.Contains(out, `xid="48"} 1`) {
		t.Errorf("an XID logged before the start was counted:\n%s", out)
	}
}

// waitScrape scrapes c until its exposition holds want, and returns it.
func waitScrape(t *testing.T, c *Collector, want string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := scrape(t, c)
		if strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in:\n%s", want, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSignalsNotInTheRecordings: signals the recorded H100 readings
// lack. The PCIe replay counter, the memory temperature (a field value)
// and the thermal margin at what nvidia-smi -q gave on that H100 (1
// replay, 40 C, T.Limit 50 C); the
// NVLink error totals (field values) of a GPU with NVLink, which that
// H100, a PCIe card, is not.
func TestSignalsNotInTheRecordings(t *testing.T) {
	f := fixture(t, "h100-nvml_idle.json")
	f.Devices[0].PcieReplayCounter, f.Devices[0].MemoryTempC = 1, 40
	margin := int32(50)
	f.Devices[0].MarginC = &margin
	f.Devices[0].NVLinkErrors = map[uint32]uint64{nvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL: 3, nvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL: 1}
	out := exportertest.Exposition(t, New(gputest.NewServer(f, 1), quiet(), Options{}))
	labels := `{gpu="0",uuid="` + f.Devices[0].UUID + `"}`
	gpu0 := `gpu="0",type="%s",uuid="` + f.Devices[0].UUID + `"`
	for _, want := range []string{"selfheal_gpu_pcie_replay_total" + labels + " 1", "selfheal_gpu_memory_temperature_celsius" + labels + " 40",
		"selfheal_gpu_temperature_margin_celsius" + labels + " 50",
		"selfheal_gpu_nvlink_errors_total{" + fmt.Sprintf(gpu0, "crc_flit") + "} 3", "selfheal_gpu_nvlink_errors_total{" + fmt.Sprintf(gpu0, "recovery") + "} 1"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("no %s in:\n%s", want, out)
		}
	}
}

// TestRetiredPages: a GPU before Ampere reports its retired pages by
// cause and whether one is pending; the recorded H100, which remaps rows
// instead, reports none (its golden files have no such series).
func TestRetiredPages(t *testing.T) {
	f := fixture(t, "h100-nvml_idle.json")
	if out := exportertest.Exposition(t, New(gputest.NewServer(f, 1), quiet(), Options{})); strings.Contains(out, "selfheal_gpu_retired_pages") {
		t.Fatalf("the H100 (page retirement not supported) has retired-page series:\n%s", out)
	}
	f.Devices[0].RetiredPages = &gputest.RetiredPages{SingleBit: 2, DoubleBit: 1, Pending: true}
	out := exportertest.Exposition(t, New(gputest.NewServer(f, 1), quiet(), Options{}))
	uuid := f.Devices[0].UUID
	for _, want := range []string{
		`selfheal_gpu_retired_pages{cause="single_bit_ecc",gpu="0",uuid="` + uuid + `"} 2`,
		`selfheal_gpu_retired_pages{cause="double_bit_ecc",gpu="0",uuid="` + uuid + `"} 1`,
		`selfheal_gpu_retired_pages_pending{gpu="0",uuid="` + uuid + `"} 1`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("no %s in:\n%s", want, out)
		}
	}
}

// TestProcessesByContainer: a GPU's processes and their memory are
// reported by the container each runs in, the host's own under "".
func TestProcessesByContainer(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 2)
	s.SetProcesses(1, []nvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 30 << 30}, {Pid: 101, UsedGpuMemory: 2 << 30}, {Pid: 200, UsedGpuMemory: 1 << 20}})
	c := New(s, quiet(), Options{Container: func(pid uint32) string {
		if pid == 100 || pid == 101 {
			return "llm-service"
		}
		return ""
	}})
	out := exportertest.Exposition(t, c)
	gpu1 := `gpu="1",uuid="GPU-00000000-0000-0000-0000-000000000001"`
	for _, want := range []string{
		`selfheal_gpu_container_processes{container="llm-service",` + gpu1 + `} 2`,
		`selfheal_gpu_container_memory_used_bytes{container="llm-service",` + gpu1 + `} 3.4359738368e+10`,
		`selfheal_gpu_container_processes{container="",` + gpu1 + `} 1`,
		`selfheal_gpu_container_memory_used_bytes{container="",` + gpu1 + `} 1.048576e+06`,
		`selfheal_gpu_compute_processes{` + gpu1 + `} 3`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s in:\n%s", want, out)
		}
	}
	if strings.Contains(out, `selfheal_gpu_container_processes{container="llm-service",gpu="0"`) {
		t.Errorf("GPU 1's processes reported on GPU 0:\n%s", out)
	}
}

// TestCataloguedXIDsStartAtZero: every GPU has a series at 0 for every
// code the catalogue lists, so that a rule's increase() sees the first
// error; a code it does not list has none until it happens.
func TestCataloguedXIDsStartAtZero(t *testing.T) {
	s := gputest.NewServer(fixture(t, "h100-nvml_idle.json"), 1)
	out := exportertest.Exposition(t, New(s, quiet(), Options{Catalogue: xid.Catalogue{43: xid.RestartHolders}}))
	uuid := "GPU-00000000-0000-0000-0000-000000000000"
	want := `selfheal_gpu_xid_errors_total{action="restart_holders",gpu="0",uuid="` + uuid + `",xid="43"} 0`
	if !strings.Contains(out, want+"\n") || strings.Count(out, "selfheal_gpu_xid_errors_total{") != 1 {
		t.Fatalf("want only %s in:\n%s", want, out)
	}
}
