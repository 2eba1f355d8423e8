package deploy

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/selfheal/selfheal/remediator/action"
	"github.com/selfheal/selfheal/remediator/actions"
	"github.com/selfheal/selfheal/remediator/policy"
)

// unitFile is a systemd unit's [Service] settings, each key's values in
// order (a key may repeat).
type unitFile struct {
	text    string
	service map[string][]string
}

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{text: string(b), service: map[string][]string{}}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(u.text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			k, v, _ := strings.Cut(line, "=")
			u.service[k] = append(u.service[k], v)
		}
	}
	return u
}

func (u unitFile) last(key string) string {
	v := u.service[key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// writable lists the unit's ReadWritePaths, without systemd's "-".
func (u unitFile) writable() []string {
	var out []string
	for _, v := range u.service["ReadWritePaths"] {
		for _, p := range strings.Fields(v) {
			out = append(out, strings.TrimPrefix(p, "-"))
		}
	}
	return out
}

// TestUnitGrantsWhatTheActionsNeed: for every action the shipped
// configurations use, selfheal.service (with a drop-in it documents,
// where the action needs more than the unit gives) allows it: the paths
// log_cleanup deletes under are writable despite ProtectSystem=strict,
// Docker's socket is reachable, the GPU-changing actions get root, the
// reboot gets polkit's permission. Every action type has an entry, so a
// new one cannot ship without deciding what it needs.
func TestUnitGrantsWhatTheActionsNeed(t *testing.T) {
	unit := readUnit(t, "systemd/selfheal.service")
	gpuRoot := readUnit(t, "systemd/selfheal-gpu-root.conf")
	documents := func(file string) bool { return strings.Contains(unit.text, filepath.Base(file)) }
	docker := func(t *testing.T, _ action.Params) {
		if !slices.Contains(unit.service["SupplementaryGroups"], "docker") || !slices.Contains(unit.writable(), "/var/run/docker.sock") {
			t.Error("needs the docker group and /var/run/docker.sock writable")
		}
	}
	network := func(t *testing.T, _ action.Params) {
		if !strings.Contains(unit.last("RestrictAddressFamilies"), "AF_INET") {
			t.Error("needs AF_INET")
		}
	}
	root := func(t *testing.T, _ action.Params) {
		if unit.last("User") == "root" {
			return
		}
		if gpuRoot.last("User") != "root" || !strings.Contains(gpuRoot.last("CapabilityBoundingSet"), "CAP_SYS_ADMIN") ||
			!documents("selfheal-gpu-root.conf") {
			t.Error("needs root with CAP_SYS_ADMIN: the unit runs as " + unit.last("User") + " and documents no drop-in that grants it")
		}
	}
	needs := map[string]func(*testing.T, action.Params){
		"restart": docker, "stop_start": docker, "hard_restart": docker, "restart_project": docker,
		"docker_prune": docker, "gpu_session_reset": docker,
		"http": network, "vacuum": network,
		"exec": func(t *testing.T, _ action.Params) {
			if !strings.Contains(unit.text, "Programs the exec action runs") {
				t.Error("say in the unit what a program the exec action runs gets of its sandbox")
			}
		},
		"gpu_throttle": root, "gpu_reset": root,
		"gpu_recover": func(t *testing.T, p action.Params) { docker(t, p); root(t, p) },
		"log_cleanup": func(t *testing.T, p action.Params) {
			if unit.last("ProtectSystem") != "strict" {
				return
			}
			for _, r := range p.(*actions.LogCleanupParams).Roots {
				if !slices.ContainsFunc(unit.writable(), func(w string) bool { return r == w || strings.HasPrefix(r, w+"/") }) {
					t.Errorf("root %s is read-only under ProtectSystem=strict: add it to ReadWritePaths", r)
				}
			}
		},
		"reboot": func(t *testing.T, _ action.Params) {
			if unit.last("NoNewPrivileges") == "yes" && (!documents("50-selfheal-reboot.rules") ||
				!strings.Contains(unit.last("RestrictAddressFamilies"), "AF_UNIX")) {
				t.Error("systemctl reboot as an unprivileged user needs the polkit rule, documented, and AF_UNIX for D-Bus")
			}
		},
	}
	for _, name := range action.Types() {
		if needs[name] == nil {
			t.Errorf("action type %s: say what it needs of selfheal.service here", name)
		}
	}
	t.Setenv("SELFHEAL_WEBHOOK_TOKEN", "t")
	configs, _ := filepath.Glob("examples/*/selfheal.yml")
	for _, path := range append([]string{"selfheal.yml"}, configs...) {
		cfg, err := policy.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range cfg.Remediations {
			for _, s := range r.Steps {
				t.Run(path+"/"+r.Name+"/"+s.Type, func(t *testing.T) {
					if f := needs[s.Type]; f != nil {
						f(t, s.Params)
					}
				})
			}
		}
	}
}
