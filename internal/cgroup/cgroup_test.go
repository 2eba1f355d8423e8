package cgroup

import (
	"os"
	"path/filepath"
	"testing"
)

func TestContainerID(t *testing.T) {
	t.Parallel()
	id := "4f1c2c3d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809"
	proc := t.TempDir()
	for pid, cgroup := range map[string]string{
		"10": "0::/system.slice/docker-" + id + ".scope\n",                // cgroup v2, systemd driver
		"11": "12:memory:/docker/" + id + "\n11:cpu:/docker/" + id + "\n", // cgroup v1, cgroupfs driver
		"12": "0::/kubepods/besteffort/pod1/" + id + "\n",                 // nested
		"13": "0::/user.slice/user-1000.slice/session-2.scope\n",          // a host process
		"14": "0::/system.slice/docker-" + id[:60] + ".scope\n",           // not a full ID
	} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "cgroup"), []byte(cgroup), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		pid  uint32
		want string
	}{{10, id}, {11, id}, {12, id}, {13, ""}, {14, ""}} {
		got, ok, err := ContainerID(proc, tc.pid)
		if err != nil || got != tc.want || ok != (tc.want != "") {
			t.Errorf("pid %d: %q %v %v, want %q", tc.pid, got, ok, err, tc.want)
		}
	}
	if _, _, err := ContainerID(proc, 99); err == nil {
		t.Error("a process that does not exist: want an error")
	}
}
