//go:build cgo

package exporter_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/alecthomas/kingpin/v2"

	"github.com/selfheal/selfheal/exporter"
	"github.com/selfheal/selfheal/exporter/gpu/gputest"
	"github.com/selfheal/selfheal/internal/dockertest"
	"github.com/selfheal/selfheal/remediator/optin"
)

// TestXIDCatalogueFlag: a catalogue file is read at start; one that
// cannot be used stops the start, naming the file and what is wrong.
func TestXIDCatalogueFlag(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	bad := filepath.Join(dir, "bad.yml")
	_ = os.WriteFile(good, []byte("notify: [92]\n"), 0o644)
	_ = os.WriteFile(bad, []byte("reset: [48]\n"), 0o644)
	f, err := gputest.Load("gpu/testdata/h100-nvml_idle.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, want string }{
		{good, ""},
		{bad, `bad.yml: XID catalogue: unknown action "reset"`},
		{filepath.Join(dir, "absent.yml"), "XID catalogue: open"},
	} {
		app := kingpin.New("t", "")
		flags := exporter.AddFlags(app)
		if _, err := app.Parse([]string{"--collector.gpu.xid-catalogue=" + tc.file, "--collector.gpu.kernel-log="}); err != nil {
			t.Fatal(err)
		}
		_, err := exporter.Build(flags, exporter.Deps{Logger: slog.New(slog.DiscardHandler), NVML: gputest.NewServer(f, 1)})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.file, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want an error saying %q", tc.file, err, tc.want)
		}
	}
}

// TestGPUProcessesNamedByContainer: selfheal serve's exporter, as Build
// puts it together, names the container a GPU process runs in — a real
// container's process, through its cgroup and the docker collector.
func TestGPUProcessesNamedByContainer(t *testing.T) {
	t.Parallel()
	api, _ := dockertest.Client(t)
	labels, require := dockertest.OptIn()
	name := dockertest.Run(t, dockertest.Spec{Labels: labels})
	pid := dockertest.State(t, name).Pid
	f, err := gputest.Load("gpu/testdata/h100-nvml_idle.json")
	if err != nil {
		t.Fatal(err)
	}
	s := gputest.NewServer(f, 1)
	s.SetProcesses(0, []nvml.ProcessInfo{{Pid: uint32(pid), UsedGpuMemory: 1 << 30}, {Pid: uint32(os.Getpid()), UsedGpuMemory: 1 << 20}})
	app := kingpin.New("t", "")
	flags := exporter.AddFlags(app)
	if _, err := app.Parse([]string{"--collector.gpu.kernel-log=", "--no-collector.system"}); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	e, err := exporter.Build(flags, exporter.Deps{Logger: logger, NVML: s, DockerAPI: api,
		OptedIn: optin.NewCurrent(optin.New(require, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	reg := prometheus.NewRegistry()
	reg.MustRegister(e)
	uuid := f.Devices[0].UUID
	wants := []string{
		`selfheal_gpu_container_processes{container="` + name + `",gpu="0",uuid="` + uuid + `"} 1`,
		`selfheal_gpu_container_memory_used_bytes{container="` + name + `",gpu="0",uuid="` + uuid + `"} 1.073741824e+09`,
		`selfheal_gpu_container_processes{container="",gpu="0",uuid="` + uuid + `"} 1`, // this test, on the host
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var out strings.Builder
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			_, _ = expfmt.MetricFamilyToText(&out, mf)
		}
		missing := ""
		for _, want := range wants {
			if !strings.Contains(out.String(), want+"\n") {
				missing = want
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in:\n%s", missing, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
