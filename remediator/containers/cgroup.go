package containers

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// containerIDInCgroup finds a Docker container ID in a cgroup path, in the
// forms Docker uses: cgroupfs "/docker/<id>", systemd "docker-<id>.scope",
// and the same nested under other slices.
var containerIDInCgroup = regexp.MustCompile(`(?:^|/)(?:docker[-/])?([0-9a-f]{64})(?:\.scope)?(?:/|$)`)

// ContainerIDOfPID returns the ID of the Docker container that process pid
// runs in, from procPath/<pid>/cgroup; ok is false for a process on the
// host. procPath is the host's /proc (when selfheal runs in a container,
// it needs the host's PID namespace to see GPU processes at all).
func ContainerIDOfPID(procPath string, pid uint32) (id string, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(procPath, strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return "", false, fmt.Errorf("cgroup of process %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controllers:path
		fields := strings.SplitN(line, ":", 3)
		if len(fields) != 3 {
			continue
		}
		if m := containerIDInCgroup.FindStringSubmatch(fields[2]); m != nil {
			return m[1], true, nil
		}
	}
	return "", false, nil
}
