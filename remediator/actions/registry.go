package actions

import (
	"net/http"

	"github.com/selfheal/selfheal/remediator/containers"
	"github.com/selfheal/selfheal/remediator/engine"
	"github.com/selfheal/selfheal/remediator/policy"
)

// Deps are what the actions act through.
type Deps struct {
	Docker        *containers.Client
	GPUs          GPUs
	Store         RebootStore
	RebootEnabled bool
	// ProcPath is the host's /proc (default /proc).
	ProcPath   string
	HTTPClient *http.Client
	// BootID overrides the kernel's boot ID (tests).
	BootID func() (string, error)
}

// Registry returns an executor for every action type this build knows.
func Registry(d Deps) map[string]engine.Executor {
	return map[string]engine.Executor{
		policy.ActionRestart:         Restart{Containers: d.Docker},
		policy.ActionStopStart:       StopStart{Containers: d.Docker},
		policy.ActionHTTP:            HTTP{Client: d.HTTPClient},
		policy.ActionHardRestart:     HardRestart{Fleet: d.Docker},
		policy.ActionDockerPrune:     DockerPrune{Fleet: d.Docker},
		policy.ActionLogCleanup:      LogCleanup{ProcPath: d.ProcPath},
		policy.ActionVacuum:          Vacuum{},
		policy.ActionGPUSessionReset: GPUSessionReset{GPUs: d.GPUs, Containers: d.Docker, ProcPath: d.ProcPath},
		policy.ActionGPUThrottle:     GPUThrottle{GPUs: d.GPUs},
		policy.ActionGPUReset:        GPUReset{GPUs: d.GPUs},
		policy.ActionReboot: Reboot{Enabled: d.RebootEnabled, Store: d.Store, Services: d.Docker,
			BootID: d.BootID, ProcPath: d.ProcPath},
	}
}
