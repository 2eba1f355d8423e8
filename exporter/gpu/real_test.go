package gpu

import (
	"encoding/csv"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/selfheal/selfheal/exporter/gpu/gputest"
)

// TestRealGPU runs the collector against the real driver, read-only, and
// checks each value against `nvidia-smi --query-gpu` within a tolerance
// (values that move between the two reads get a wider one). It runs only
// with SELFHEAL_TEST_GPU=1 (`make test-gpu`), and then fails without a GPU.
func TestRealGPU(t *testing.T) {
	if os.Getenv("SELFHEAL_TEST_GPU") != "1" {
		t.Skip("set SELFHEAL_TEST_GPU=1 (make test-gpu) on a machine with an NVIDIA GPU")
	}
	out, err := exec.Command("nvidia-smi", "--query-gpu="+strings.Join(smiFields, ","), "--format=csv,noheader,nounits").Output()
	if err != nil {
		t.Fatalf("nvidia-smi: %v", err)
	}
	rows, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil || len(rows) == 0 {
		t.Fatalf("nvidia-smi output %q: %v", out, err)
	}

	c := New(nvml.New(), quiet(), Options{})
	defer c.shutdown()
	values, info := gather(t, c)
	checkAgainstSMI(t, smiFields, rows, values, info)
}

// smiFields are the nvidia-smi --query-gpu fields compared, in order.
var smiFields = []string{"index", "uuid", "name", "driver_version", "pci.bus_id", "temperature.gpu", "utilization.gpu",
	"memory.total", "memory.used", "power.draw", "power.limit", "clocks.sm", "pstate", "fan.speed",
	"ecc.errors.corrected.volatile.total", "ecc.errors.uncorrected.volatile.total", "clocks_event_reasons.active", "temperature.memory",
	"retired_pages.single_bit_ecc.count", "retired_pages.double_bit.count", "temperature.gpu.tlimit"}

// gather runs one scrape and indexes the values by GPU, then by metric
// name and extra label ("selfheal_gpu_ecc_errors_total/corrected").
func gather(t *testing.T, c *Collector) (map[string]map[string]float64, map[string]map[string]string) {
	t.Helper()
	ch := make(chan prometheus.Metric, 4096)
	if err := c.Update(ch); err != nil {
		t.Fatalf("Update: %v", err)
	}
	close(ch)
	values := map[string]map[string]float64{}
	info := map[string]map[string]string{}
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		labels := map[string]string{}
		for _, l := range pb.Label {
			labels[l.GetName()] = l.GetValue()
		}
		name := metricName(m.Desc().String())
		key := name
		for _, extra := range []string{"threshold", "type", "reason", "cause", "xid"} {
			if v, ok := labels[extra]; ok {
				key += "/" + v
			}
		}
		g := labels["gpu"]
		if values[g] == nil {
			values[g] = map[string]float64{}
		}
		values[g][key] = pb.GetGauge().GetValue() + pb.GetCounter().GetValue()
		if name == "selfheal_gpu_info" {
			info[g] = labels
		}
	}
	return values, info
}

// busID normalises a PCI bus id: nvidia-smi writes an 8-digit domain,
// older NVML fields a 4-digit one.
func busID(s string) string {
	domain, rest, ok := strings.Cut(strings.ToLower(s), ":")
	if !ok {
		return s
	}
	d, err := strconv.ParseUint(domain, 16, 32)
	if err != nil {
		return s
	}
	return strconv.FormatUint(d, 16) + ":" + rest
}

// reporter is the part of testing.T the comparison uses, so a test can
// check that the comparison itself fails when it should.
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

type failures struct{ n int }

func (f *failures) Helper()               {}
func (f *failures) Errorf(string, ...any) { f.n++ }
func (f *failures) Logf(string, ...any)   {}

func checkAgainstSMI(t reporter, fields []string, rows [][]string, values map[string]map[string]float64, info map[string]map[string]string) {
	t.Helper()
	for _, row := range rows {
		for i := range row {
			row[i] = strings.TrimSpace(row[i])
		}
		smi := map[string]string{}
		for i, f := range fields {
			smi[f] = row[i]
		}
		g := smi["index"]
		got := values[g]
		t.Logf("GPU %s (%s): nvidia-smi %v", g, smi["name"], smi)
		if info[g]["uuid"] != smi["uuid"] || info[g]["name"] != smi["name"] || info[g]["driver_version"] != smi["driver_version"] ||
			busID(info[g]["pci_bus_id"]) != busID(smi["pci.bus_id"]) {
			t.Errorf("GPU %s info %v, nvidia-smi %v", g, info[g], smi)
		}
		num := func(f string) (float64, bool) {
			v, err := strconv.ParseFloat(smi[f], 64)
			return v, err == nil
		}
		for _, cmp := range []struct {
			field, metric string
			scale, tol    float64
		}{
			{"temperature.gpu", "selfheal_gpu_temperature_celsius", 1, 3},
			{"temperature.memory", "selfheal_gpu_memory_temperature_celsius", 1, 3},
			{"temperature.gpu.tlimit", "selfheal_gpu_temperature_margin_celsius", 1, 3},
			{"utilization.gpu", "selfheal_gpu_utilization_ratio", 0.01, 0.3},
			{"memory.total", "selfheal_gpu_memory_total_bytes", 1 << 20, 1 << 20},
			{"memory.used", "selfheal_gpu_memory_used_bytes", 1 << 20, 512 << 20},
			{"power.draw", "selfheal_gpu_power_watts", 1, 50},
			{"power.limit", "selfheal_gpu_power_limit_watts", 1, 1},
			{"clocks.sm", "selfheal_gpu_sm_clock_hertz", 1e6, 500e6},
			{"ecc.errors.corrected.volatile.total", "selfheal_gpu_ecc_errors_total/corrected", 1, 0},
			{"ecc.errors.uncorrected.volatile.total", "selfheal_gpu_ecc_errors_total/uncorrected", 1, 0},
			{"retired_pages.single_bit_ecc.count", "selfheal_gpu_retired_pages/single_bit_ecc", 1, 0},
			{"retired_pages.double_bit.count", "selfheal_gpu_retired_pages/double_bit_ecc", 1, 0},
		} {
			want, ok := num(cmp.field)
			v, have := got[cmp.metric]
			switch {
			case !ok && have:
				t.Errorf("GPU %s: nvidia-smi has no %s (%q) but %s = %v", g, cmp.field, smi[cmp.field], cmp.metric, v)
			case ok && !have:
				t.Errorf("GPU %s: nvidia-smi %s = %v but no %s", g, cmp.field, want, cmp.metric)
			case ok && math.Abs(v-want*cmp.scale) > cmp.tol:
				t.Errorf("GPU %s: %s = %v, nvidia-smi %s = %v (tolerance %v)", g, cmp.metric, v, cmp.field, want*cmp.scale, cmp.tol)
			case ok:
				t.Logf("GPU %s: %s = %v ≈ nvidia-smi %s = %v", g, cmp.metric, v, cmp.field, want*cmp.scale)
			}
		}
		if p := strings.TrimPrefix(smi["pstate"], "P"); p != "" {
			if want, err := strconv.Atoi(p); err == nil && got["selfheal_gpu_performance_state"] != float64(want) {
				t.Errorf("GPU %s: pstate %v, nvidia-smi %s", g, got["selfheal_gpu_performance_state"], smi["pstate"])
			}
		}
		if _, ok := num("fan.speed"); !ok {
			if _, have := got["selfheal_gpu_fan_speed_ratio"]; have {
				t.Errorf("GPU %s: fan speed %q in nvidia-smi, but the series is exposed", g, smi["fan.speed"])
			}
		}
		// Clock event reasons change from one instant to the next: check
		// each reported reason is a 0/1 series.
		for k, v := range got {
			if strings.HasPrefix(k, "selfheal_gpu_clock_event_active/") && v != 0 && v != 1 {
				t.Errorf("GPU %s: %s = %v", g, k, v)
			}
		}
	}
}

// TestSMIComparisonOnFixture checks the comparison TestRealGPU makes, on a
// machine without a GPU: the mock filled from the idle H100 readings
// against the nvidia-smi row the same H100 gave (h100-nvidia-smi-q.xml).
func TestSMIComparisonOnFixture(t *testing.T) {
	f, err := gputest.Load("testdata/h100-nvml_idle.json")
	if err != nil {
		t.Fatal(err)
	}
	f.Devices[0].MemoryTempC = 40 // nvidia-smi -q on that H100; the recorded NVML readings lack it
	margin := int32(50)           // and its T.Limit
	f.Devices[0].MarginC = &margin
	values, info := gather(t, New(gputest.NewServer(f, 1), quiet(), Options{}))
	row := strings.Split("0, GPU-00000000-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 580.159.04, 00000000:00:06.0, 37, 0, 81559, 0, 71.67, 700.00, 345, P0, [N/A], 0, 0, 0x0000000000000001, 40, [N/A], [N/A], 50", ",")
	checkAgainstSMI(t, smiFields, [][]string{row}, values, info)

	// And it does catch a wrong value.
	wrong := append([]string(nil), row...)
	wrong[5] = "55" // temperature
	var caught failures
	checkAgainstSMI(&caught, smiFields, [][]string{wrong}, values, info)
	if caught.n != 1 {
		t.Errorf("a temperature 18 °C off: %d failures reported, want 1", caught.n)
	}
}

// metricName extracts fqName from a Desc's String().
func metricName(desc string) string {
	_, rest, _ := strings.Cut(desc, `fqName: "`)
	name, _, _ := strings.Cut(rest, `"`)
	return name
}
