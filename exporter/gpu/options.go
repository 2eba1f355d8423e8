package gpu

import (
	"time"

	"github.com/selfheal/selfheal/exporter/gpu/xid"
)

// DefaultTimeout bounds the NVML calls of a scrape (--collector.gpu.timeout):
// a healthy H100 answers all of them in about a millisecond.
const DefaultTimeout = 2 * time.Second

// Options are the gpu collector's settings.
type Options struct {
	// Timeout bounds the NVML calls of a scrape; zero is DefaultTimeout.
	Timeout time.Duration
	// Catalogue says which action each XID calls for (the action label of
	// selfheal_gpu_xid_errors_total); nil is xid.Default().
	Catalogue xid.Catalogue
	// KernelLog is the kernel log read for the XID errors NVML's events
	// miss (79, a GPU fallen off the bus, among them); empty reads none.
	KernelLog string
	// Container names the container a GPU process runs in ("" for a
	// process on the host, or a container not reported); nil names none.
	Container func(pid uint32) string
}
