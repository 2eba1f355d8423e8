// Package cgroup finds the Docker container a process runs in, from its
// cgroups: what the GPU collector and the GPU actions need to name the
// containers holding a GPU.
package cgroup

import (
	"fmt"
	"regexp"

	"github.com/prometheus/procfs"
)

// containerIDInCgroup finds a Docker container ID in a cgroup path, in the
// forms Docker uses: cgroupfs "/docker/<id>", systemd "docker-<id>.scope",
// and the same nested under other slices.
var containerIDInCgroup = regexp.MustCompile(`(?:^|/)(?:docker[-/])?([0-9a-f]{64})(?:\.scope)?(?:/|$)`)

// ContainerID returns the ID of the Docker container that process pid
// runs in, from procPath/<pid>/cgroup; ok is false for a process on the
// host. procPath is the host's /proc (when selfheal runs in a container,
// it needs the host's PID namespace to see GPU processes at all).
func ContainerID(procPath string, pid uint32) (id string, ok bool, err error) {
	fs, err := procfs.NewFS(procPath)
	if err != nil {
		return "", false, err
	}
	proc, err := fs.Proc(int(pid))
	if err != nil {
		return "", false, fmt.Errorf("cgroup of process %d: %w", pid, err)
	}
	cgroups, err := proc.Cgroups()
	if err != nil {
		return "", false, fmt.Errorf("cgroup of process %d: %w", pid, err)
	}
	for _, cg := range cgroups {
		if m := containerIDInCgroup.FindStringSubmatch(cg.Path); m != nil {
			return m[1], true, nil
		}
	}
	return "", false, nil
}
