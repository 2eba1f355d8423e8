//go:build !cgo

package gpuctl

import "errors"

// ErrNoGPUSupport is every GPU call's answer in a build without cgo
// (CGO_ENABLED=0): NVML cannot be loaded without it.
var ErrNoGPUSupport = errors.New("this selfheal was built without GPU support (CGO_ENABLED=0): it cannot reach NVML")

// Supported says that this build cannot act on GPUs.
const Supported = false

// Library stands for NVML, which a build without cgo cannot load.
type Library interface{}

// Device stands for an NVML device.
type Device interface{}

// GPUs answers every call with ErrNoGPUSupport.
type GPUs struct{}

// New returns GPUs that reach no GPU.
func New(Library) *GPUs { return &GPUs{} }

// Open returns GPUs that reach no GPU.
func Open() *GPUs { return &GPUs{} }

// Count reports no GPU: a host without GPU support has none to act on.
func (*GPUs) Count() (int, error) { return 0, nil }

// Device is ErrNoGPUSupport.
func (*GPUs) Device(string) (Device, int, error) { return nil, 0, ErrNoGPUSupport }

// Processes is ErrNoGPUSupport.
func (*GPUs) Processes(string) ([]uint32, error) { return nil, ErrNoGPUSupport }

// Limits is ErrNoGPUSupport.
func (*GPUs) Limits(string) (PowerLimits, error) { return PowerLimits{}, ErrNoGPUSupport }

// Snapshot is ErrNoGPUSupport.
func (*GPUs) Snapshot(string) (Snapshot, error) { return Snapshot{}, ErrNoGPUSupport }

// UUID is ErrNoGPUSupport.
func (*GPUs) UUID(string) (string, error) { return "", ErrNoGPUSupport }

// Persistence is ErrNoGPUSupport.
func (*GPUs) Persistence(string) (bool, error) { return false, ErrNoGPUSupport }

// SetLimit is ErrNoGPUSupport.
func (*GPUs) SetLimit(string, uint32) error { return ErrNoGPUSupport }
