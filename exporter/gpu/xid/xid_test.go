package xid

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Record
		ok   bool
	}{
		{"4,5122,913001301,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=2071, name=python3, GPU has fallen off the bus.",
			Record{PCI: "0000:3b:00", Code: 79, Message: "pid=2071, name=python3, GPU has fallen off the bus."}, true},
		{"[ 8123.456789] NVRM: Xid (PCI:0000:CB:00): 13, pid='<unknown>', name=<unknown>, Graphics SM Warp Exception",
			Record{PCI: "0000:cb:00", Code: 13, Message: "pid='<unknown>', name=<unknown>, Graphics SM Warp Exception"}, true},
		// Older drivers: no process, a function number.
		{"NVRM: Xid (PCI:0001:18:00.0): 48, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0.",
			Record{PCI: "0001:18:00", Code: 48, Message: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 6, subpartition 0."}, true},
		{"4,5123,913001377,-;NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.", Record{}, false},
		{" DEVICE=+pci:0000:3b:00.0", Record{}, false},
		{"NVRM: Xid (PCI:0000:3b:00): 99999999999, overflow", Record{}, false},
		{"NVRM: Xid (PCI:zz:3b:00): 79, bad address", Record{}, false},
		{"", Record{}, false},
	} {
		got, ok := ParseLine(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseLine(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

// TestPCIOfMatchesNVML: the kernel log's address and NVML's bus ID of one
// GPU come out the same.
func TestPCIOfMatchesNVML(t *testing.T) {
	k, ok1 := PCIOf("0000:3b:00")
	n, ok2 := PCIOf("00000000:3B:00.0")
	if !ok1 || !ok2 || k != n || k != "0000:3b:00" {
		t.Fatalf("PCIOf: %q %v, %q %v", k, ok1, n, ok2)
	}
	for _, bad := range []string{"", "3b:00", "0000:3b:00:00", "0000:xx:00"} {
		if got, ok := PCIOf(bad); ok {
			t.Errorf("PCIOf(%q) = %q, want an error", bad, got)
		}
	}
}

func TestDefaultCatalogue(t *testing.T) {
	c := Default()
	for code, want := range map[uint64]Action{13: RestartHolders, 31: RestartHolders, 43: RestartHolders, 94: RestartHolders,
		48: ResetGPU, 63: ResetGPU, 64: ResetGPU, 74: ResetGPU, 95: ResetGPU, 119: ResetGPU, 120: ResetGPU,
		79: Reboot, 8: Notify, 1000: Notify} {
		if got := c.Action(code); got != want {
			t.Errorf("XID %d: %s, want %s", code, got, want)
		}
	}
}

func TestParseCatalogue(t *testing.T) {
	c, err := Parse([]byte("notify: [92]\nreboot: [95, 140]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Action(92) != Notify || c.Action(95) != Reboot || c.Action(140) != Reboot || c.Action(13) != RestartHolders {
		t.Fatalf("overrides not applied over the defaults: %v", c)
	}
	if c, err := Parse(nil); err != nil || c.Action(79) != Reboot {
		t.Fatalf("an empty file: %v, %v", c, err)
	}
	for in, want := range map[string]string{
		"reset: [48]":                   `unknown action "reset"`,
		"notify: [92]\nreset_gpu: [92]": "XID 92 is listed under both notify and reset_gpu",
		"notify: 92":                    "XID catalogue",
		"notify: [-1]":                  "XID catalogue",
		"- 13":                          "XID catalogue",
	} {
		if _, err := Parse([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error saying %q", in, err, want)
		}
	}
}

func TestDedupCountsEachErrorOnce(t *testing.T) {
	var d Dedup
	t0 := time.Unix(1e9, 0)
	steps := []struct {
		gpu    string
		code   uint64
		source string
		at     time.Duration
		want   bool
	}{
		{"GPU-a", 79, SourceKernelLog, 0, true},
		{"GPU-a", 79, SourceNVML, time.Second, false},         // the same error, from NVML
		{"GPU-a", 79, SourceNVML, 2 * time.Second, true},      // a second error
		{"GPU-b", 79, SourceKernelLog, 2 * time.Second, true}, // another GPU
		{"GPU-a", 79, SourceKernelLog, 3 * time.Second, false},
		{"GPU-a", 48, SourceKernelLog, 3 * time.Second, true}, // another code
		{"GPU-a", 48, SourceNVML, 30 * time.Second, true},     // too late to be that one
		{"GPU-a", 13, SourceNVML, 40 * time.Second, true},
		{"GPU-a", 13, SourceNVML, 40 * time.Second, true}, // one source twice: two errors
	}
	for i, s := range steps {
		if got := d.Count(s.gpu, s.code, s.source, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d (%+v): counted %v", i, s, got)
		}
	}
}

// TestFollowReadsWhatIsLoggedFromNowOn: what the log held before is not
// counted again; what is appended is, continuation lines and other
// messages skipped.
func TestFollowReadsWhatIsLoggedFromNowOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kmsg")
	if err := os.WriteFile(path, []byte("4,1,1,-;NVRM: Xid (PCI:0000:3b:00): 48, logged before selfheal started\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fixture, err := os.ReadFile("testdata/kmsg-xid79.txt")
	if err != nil {
		t.Fatal(err)
	}
	log, err := OpenKernelLog(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []Record
	done := make(chan error, 1)
	go func() {
		done <- log.Follow(ctx, func(r Record) {
			mu.Lock()
			got = append(got, r)
			mu.Unlock()
		})
	}()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Written in two pieces, one cut mid-line.
	cut := len(fixture) - 40
	_, _ = f.Write(fixture[:cut])
	time.Sleep(300 * time.Millisecond)
	_, _ = f.Write(fixture[cut:])
	f.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Follow: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].Code != 79 || got[0].PCI != "0000:3b:00" || got[1].Code != 13 || got[1].PCI != "0000:5e:00" {
		t.Fatalf("records: %+v", got)
	}
}

func TestOpenKernelLogSaysWhyItCannot(t *testing.T) {
	_, err := OpenKernelLog(filepath.Join(t.TempDir(), "absent"))
	if err == nil || !strings.Contains(err.Error(), "kernel log") {
		t.Fatalf("OpenKernelLog of a missing file: %v", err)
	}
}
