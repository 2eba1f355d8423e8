package system

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/exporter/exportertest"
)

// fakeStatfs answers for the fixture's mount points; the real statfs would
// describe this machine instead.
func fakeStatfs(sizes map[string][2]uint64) func(string) (uint64, uint64, error) {
	return func(p string) (uint64, uint64, error) {
		rel := "/" + strings.TrimPrefix(filepath.ToSlash(p), "/rootfs")
		rel = filepath.Clean(rel)
		s, ok := sizes[rel]
		if !ok {
			return 0, 0, errors.New("no such mount in the fixture")
		}
		return s[0], s[1], nil
	}
}

func fixtureCollector(t *testing.T, statfs func(string) (uint64, uint64, error)) *Collector {
	t.Helper()
	c, err := New(Options{ProcPath: "testdata/proc", SysPath: "testdata/sys", RootfsPath: "/rootfs", Statfs: statfs})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGolden(t *testing.T) {
	c := fixtureCollector(t, fakeStatfs(map[string][2]uint64{
		"/":               {270_000_000_000, 85_000_000_000},
		"/data":           {1_000_000_000_000, 30_000_000_000},
		"/var/lib/docker": {500_000_000_000, 400_000_000_000},
		"/mnt/bind":       {270_000_000_000, 85_000_000_000},
	}))
	exportertest.Compare(t, c, "testdata/system.prom")
}

func TestExcludesPseudoAndContainerFilesystems(t *testing.T) {
	out := exportertest.Exposition(t, fixtureCollector(t, fakeStatfs(map[string][2]uint64{
		"/": {1, 1}, "/data": {1, 1}, "/var/lib/docker": {1, 1}, "/mnt/bind": {1, 1},
	})))
	for _, excluded := range []string{`mountpoint="/proc"`, `mountpoint="/sys"`, `mountpoint="/dev"`, `mountpoint="/run"`,
		`mountpoint="/var/lib/docker/overlay2/abc/merged"`, `mountpoint="/sys/fs/cgroup"`} {
		if strings.Contains(out, excluded) {
			t.Errorf("exposition includes %s", excluded)
		}
	}
}

func TestFailedStatfsFailsTheCollectorButKeepsTheRest(t *testing.T) {
	c := fixtureCollector(t, fakeStatfs(map[string][2]uint64{"/": {1, 1}}))
	ch := make(chan prometheus.Metric, 1000)
	err := c.Update(ch)
	if err == nil || !strings.Contains(err.Error(), "filesystem /data") {
		t.Fatalf("Update = %v, want the /data failure", err)
	}
	if len(ch) < 20 {
		t.Errorf("only %d metrics sent beside the failure", len(ch))
	}
}

func TestRealHost(t *testing.T) {
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := exportertest.Exposition(t, c)
	for _, want := range []string{"selfheal_cpu_seconds_total{", "selfheal_memory_available_bytes ", `selfheal_filesystem_size_bytes{`, "selfheal_load1 "} {
		if !strings.Contains(out, want) {
			t.Errorf("no %s on this host", want)
		}
	}
}

func TestBadExcludeRegexp(t *testing.T) {
	if _, err := New(Options{FSTypesExclude: "("}); err == nil || !strings.HasPrefix(err.Error(), "filesystem types to exclude: ") {
		t.Fatalf("got %v", err)
	}
}
