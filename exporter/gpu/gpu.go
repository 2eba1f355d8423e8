//go:build cgo

// Package gpu collects NVIDIA GPU metrics through NVML (go-nvml), read-only.
// Names follow the Prometheus guide in base units; the README maps each to
// its dcgm-exporter equivalent. A host without the driver or without GPUs
// gets no GPU series and one log line; a GPU that falls off the bus fails
// the scrape and NVML is initialised again on the next one. Every NVML call
// a scrape makes is bounded by a timeout: a GPU whose call hangs is
// reported by selfheal_gpu_up 0, the scrape answers without it, and it is
// not read again until the call returns. NVML needs cgo:
// a build without it (CGO_ENABLED=0) reports no GPU and says so (nocgo.go).
package gpu

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/selfheal/selfheal/exporter/gpu/xid"
)

// Open returns the driver's NVML, from path when it is set (else the
// driver's libnvidia-ml.so).
func Open(path string) Library {
	var opts []nvml.LibraryOption
	if path != "" {
		opts = append(opts, nvml.WithLibraryPath(path))
	}
	return nvml.New(opts...)
}

// Library is the part of NVML the collector uses. go-nvml's nvml.New()
// (the real driver) and its mock servers both have these methods.
type Library interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	SystemGetDriverVersion() (string, nvml.Return)
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
	EventSetCreate() (nvml.EventSet, nvml.Return)
}

// Device is the part of an NVML device handle the collector reads.
type Device interface {
	GetUUID() (string, nvml.Return)
	GetName() (string, nvml.Return)
	GetPciInfo() (nvml.PciInfo, nvml.Return)
	GetUtilizationRates() (nvml.Utilization, nvml.Return)
	GetMemoryInfo() (nvml.Memory, nvml.Return)
	GetMemoryInfo_v2() (nvml.Memory_v2, nvml.Return)
	GetTemperature(nvml.TemperatureSensors) (uint32, nvml.Return)
	GetTemperatureThreshold(nvml.TemperatureThresholds) (uint32, nvml.Return)
	GetMarginTemperature() (nvml.MarginTemperature, nvml.Return)
	GetPowerUsage() (uint32, nvml.Return)
	GetEnforcedPowerLimit() (uint32, nvml.Return)
	GetTotalEnergyConsumption() (uint64, nvml.Return)
	GetClockInfo(nvml.ClockType) (uint32, nvml.Return)
	GetCurrentClocksEventReasons() (uint64, nvml.Return)
	GetSupportedClocksEventReasons() (uint64, nvml.Return)
	GetTotalEccErrors(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return)
	GetRemappedRows() (int, int, bool, bool, nvml.Return)
	GetRetiredPages(nvml.PageRetirementCause) ([]uint64, nvml.Return)
	GetRetiredPagesPendingStatus() (nvml.EnableState, nvml.Return)
	GetPcieReplayCounter() (int, nvml.Return)
	GetFieldValues([]nvml.FieldValue) nvml.Return
	GetPerformanceState() (nvml.Pstates, nvml.Return)
	GetComputeRunningProcesses() ([]nvml.ProcessInfo, nvml.Return)
	GetFanSpeed() (uint32, nvml.Return)
	GetSupportedEventTypes() (uint64, nvml.Return)
	RegisterEvents(uint64, nvml.EventSet) nvml.Return
}

var _ Device = nvml.Device(nil)

// clockEventReasons names the bits of NVML's clock event (throttle)
// reasons, in dcgm-exporter's spelling.
var clockEventReasons = []struct {
	bit  uint64
	name string
}{
	{nvml.ClocksEventReasonGpuIdle, "gpu_idle"},
	{nvml.ClocksEventReasonApplicationsClocksSetting, "applications_clocks_setting"},
	{nvml.ClocksEventReasonSwPowerCap, "sw_power_cap"},
	{nvml.ClocksThrottleReasonHwSlowdown, "hw_slowdown"},
	{nvml.ClocksEventReasonSyncBoost, "sync_boost"},
	{nvml.ClocksEventReasonSwThermalSlowdown, "sw_thermal_slowdown"},
	{nvml.ClocksThrottleReasonHwThermalSlowdown, "hw_thermal_slowdown"},
	{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, "hw_power_brake_slowdown"},
	{nvml.ClocksEventReasonDisplayClockSetting, "display_clock_setting"},
}

var thresholds = []struct {
	t    nvml.TemperatureThresholds
	name string
}{
	{nvml.TEMPERATURE_THRESHOLD_SLOWDOWN, "slowdown"},
	{nvml.TEMPERATURE_THRESHOLD_SHUTDOWN, "shutdown"},
	{nvml.TEMPERATURE_THRESHOLD_GPU_MAX, "gpu_max"},
	{nvml.TEMPERATURE_THRESHOLD_MEM_MAX, "memory_max"},
}

// retryInit is how long after a failed NVML initialisation the next one is
// tried; a host without a driver costs one dlopen a minute.
const retryInit = time.Minute

type device struct {
	dev      Device
	index    string
	uuid     string
	name     string
	pciBusID string
}

// Collector is the gpu collector.
type Collector struct {
	lib    Library
	logger *slog.Logger
	now    func() time.Time
	// timeout bounds the NVML calls of one scrape. A call into the driver
	// can hang (a GPU fallen off the bus, a driver in recovery); the scrape
	// then answers without that GPU rather than not at all.
	timeout time.Duration

	// mu guards everything below but xid. No NVML call is made under it.
	mu           sync.Mutex
	ready        bool
	lost         bool // a GPU was lost: initialise again on the next scrape
	lastAttempt  time.Time
	loggedAbsent bool
	driver       string
	devices      []device
	stopWatch    func()
	// preparing is closed when the initialisation (or re-initialisation)
	// under way returns, and prepareErr is what it returned; nil when none
	// is under way. One that hangs is waited for, never started twice.
	preparing  chan struct{}
	prepareErr error
	// reading holds the GPUs (by UUID) whose reads of an earlier scrape
	// have not returned, and since when: they are not read again until
	// they do, and NVML is not shut down under them.
	reading map[string]time.Time

	catalogue xid.Catalogue
	kernelLog *xid.KernelLog // nil: none read
	container func(pid uint32) string
	// xidMu guards xid: the XID errors counted, from NVML's events and the
	// kernel log, each error once (dedup).
	xidMu sync.Mutex
	xid   map[string]map[uint64]uint64 // uuid ("" for a GPU NVML never listed) → XID code → count
	dedup xid.Dedup

	d descs
}

// New returns a gpu collector over lib (Open for the real driver).
func New(lib Library, logger *slog.Logger, o Options) *Collector {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Catalogue == nil {
		o.Catalogue = xid.Default()
	}
	c := &Collector{lib: lib, logger: logger, now: time.Now, timeout: o.Timeout, catalogue: o.Catalogue, container: o.Container,
		xid: map[string]map[uint64]uint64{}, reading: map[string]time.Time{}, d: newDescs()}
	if o.KernelLog != "" {
		// Opened now, at its end; read from Run on.
		log, err := xid.OpenKernelLog(o.KernelLog)
		if err != nil {
			logger.Warn("cannot read the kernel log: XID errors NVML does not report (79, a GPU fallen off the bus, among them) go unseen",
				"err", err, "flag", "--collector.gpu.kernel-log")
		}
		c.kernelLog = log
	}
	return c
}

// Run initialises NVML at once, so XID errors are counted from the start,
// follows the kernel log for the XIDs NVML misses, and shuts NVML down
// when ctx ends (waiting at most the timeout for a call that hangs).
func (c *Collector) Run(ctx context.Context) {
	_, _, _ = c.prepared(nil)
	if c.kernelLog != nil {
		go func() {
			if err := c.kernelLog.Follow(ctx, c.kernelXID); err != nil {
				c.logger.Warn("stopped reading the kernel log for XID errors", "err", err)
			}
		}()
	}
	<-ctx.Done()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, _, err := c.prepared(nil); err == nil {
			c.mu.Lock()
			busy := len(c.reading) > 0
			c.mu.Unlock()
			if !busy { // never shut NVML down under a read under way
				c.shutdown()
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(c.timeout):
		c.logger.Warn("NVML did not shut down in time; leaving it", "timeout", c.timeout)
	}
}

// errGPULost marks a scrape that found a GPU gone.
var errGPULost = errors.New("GPU is lost; NVML will be initialised again")

// Update implements exporter.Collector. Every NVML call it makes is bounded
// by the collector's timeout: a GPU whose reads have not returned by then
// is reported with selfheal_gpu_up 0 (and nothing else), as it is while
// those reads are still under way at later scrapes.
func (c *Collector) Update(ch chan<- prometheus.Metric) error {
	deadline := time.NewTimer(c.timeout)
	defer deadline.Stop()
	devices, driver, err := c.prepared(deadline.C)
	if err != nil {
		return err
	}
	if driver != "" { // NVML is initialised: the GPUs it lists, if none
		ch <- prometheus.MustNewConstMetric(c.d.devices, prometheus.GaugeValue, float64(len(devices)))
	}
	type result struct {
		metrics []prometheus.Metric
		err     error
	}
	results := make([]chan result, len(devices)) // nil: not read this scrape
	var errs []error
	c.mu.Lock()
	for i, d := range devices {
		if since, busy := c.reading[d.uuid]; busy {
			errs = append(errs, fmt.Errorf("gpu %s (%s): NVML has not answered for %s", d.index, d.uuid, c.now().Sub(since).Round(time.Second)))
			continue
		}
		c.reading[d.uuid] = c.now()
		out := make(chan result, 1) // never blocks the reader, even if no one waits any more
		results[i] = out
		go func() {
			var got []prometheus.Metric
			err := c.updateDevice(func(m prometheus.Metric) { got = append(got, m) }, d, driver)
			c.mu.Lock()
			delete(c.reading, d.uuid)
			if errors.Is(err, nvml.ERROR_GPU_IS_LOST) {
				c.lost = true
			}
			c.mu.Unlock()
			out <- result{got, err}
		}()
	}
	c.mu.Unlock()
	lost, expired := false, false
	for i, d := range devices {
		up := 0.0
		if out := results[i]; out != nil {
			var r result
			got := false
			select {
			case r = <-out:
				got = true
			default:
				if !expired { // once the time is spent, take only what has come in
					select {
					case r = <-out:
						got = true
					case <-deadline.C:
						expired = true
					}
				}
			}
			switch {
			case !got:
				errs = append(errs, fmt.Errorf("gpu %s (%s): NVML did not answer within %s", d.index, d.uuid, c.timeout))
			case errors.Is(r.err, nvml.ERROR_GPU_IS_LOST):
				errs = append(errs, fmt.Errorf("gpu %s (%s): %w", d.index, d.uuid, r.err))
				lost = true
			default:
				for _, m := range r.metrics {
					ch <- m
				}
				if r.err != nil {
					errs = append(errs, fmt.Errorf("gpu %s (%s): %w", d.index, d.uuid, r.err))
				}
				up = 1
			}
		}
		ch <- prometheus.MustNewConstMetric(c.d.up, prometheus.GaugeValue, up, d.index, d.uuid)
	}
	c.collectXID(ch, devices)
	if lost {
		errs = append(errs, errGPULost)
	}
	return errors.Join(errs...)
}

// collectXID sends the XID errors counted so far. They need no NVML call:
// a GPU that does not answer (79: fallen off the bus) still has them.
func (c *Collector) collectXID(ch chan<- prometheus.Metric, devices []device) {
	index := map[string]string{}
	for _, d := range devices {
		index[d.uuid] = d.index
	}
	c.xidMu.Lock()
	defer c.xidMu.Unlock()
	for uuid, codes := range c.xid {
		for code, n := range codes {
			ch <- prometheus.MustNewConstMetric(c.d.xid, prometheus.CounterValue, float64(n),
				index[uuid], uuid, strconv.FormatUint(code, 10), string(c.catalogue.Action(code)))
		}
	}
}

// prepared returns the GPUs to read, initialising NVML first when it is
// not (or, after a GPU was lost, again) — in the background, waiting for it
// until deadline fires (nil: for as long as it takes). An initialisation
// that has not returned is waited for, not started again.
func (c *Collector) prepared(deadline <-chan time.Time) (devices []device, driver string, err error) {
	c.mu.Lock()
	if c.preparing == nil {
		done := make(chan struct{})
		c.preparing = done
		reinit := c.lost && len(c.reading) == 0 // never shut NVML down under a read under way
		go func() {
			err := c.prepare(reinit)
			c.mu.Lock()
			c.prepareErr, c.preparing = err, nil
			c.mu.Unlock()
			close(done)
		}()
	}
	done := c.preparing
	c.mu.Unlock()
	select {
	case <-done:
	case <-deadline:
		return nil, "", fmt.Errorf("NVML initialisation did not return within %s", c.timeout)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prepareErr != nil || !c.ready {
		return nil, "", c.prepareErr
	}
	return c.devices, c.driver, nil
}

// prepare shuts NVML down first when reinit is set, then makes it ready.
// It runs alone (prepared starts one at a time) and makes its NVML calls
// without holding mu, taking it only to publish what it found: a call that
// hangs holds up this goroutine, never a scrape.
func (c *Collector) prepare(reinit bool) error {
	if reinit {
		c.shutdown()
		c.mu.Lock()
		c.lost = false
		c.mu.Unlock()
		c.lastAttempt = time.Time{}
	}
	return c.ensureReady()
}

// ensureReady initialises NVML and enumerates the GPUs, unless that was
// tried and failed less than retryInit ago. No library or no driver is
// not an error: the collector then reports nothing, and says so once.
// Only prepare calls it.
func (c *Collector) ensureReady() error {
	c.mu.Lock()
	ready := c.ready
	c.mu.Unlock()
	if ready || c.now().Sub(c.lastAttempt) < retryInit {
		return nil
	}
	c.lastAttempt = c.now()
	switch r := c.lib.Init(); r {
	case nvml.SUCCESS:
	case nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED, nvml.ERROR_NO_PERMISSION:
		if !c.loggedAbsent {
			c.logger.Info("no usable NVIDIA driver; the gpu collector reports no GPUs", "nvml", r.Error())
			c.loggedAbsent = true
		}
		return nil
	default:
		return fmt.Errorf("initialise NVML: %w", r)
	}
	devices, driver, err := c.enumerate()
	if err != nil {
		c.lib.Shutdown()
		return err
	}
	if len(devices) == 0 && !c.loggedAbsent {
		c.logger.Info("NVML found no GPUs; the gpu collector reports none")
		c.loggedAbsent = true
	}
	// Every catalogued code starts at 0 on every GPU: a rule's increase()
	// then sees a GPU's first error of a code, not only its second.
	c.xidMu.Lock()
	for _, d := range devices {
		if c.xid[d.uuid] == nil {
			c.xid[d.uuid] = map[uint64]uint64{}
		}
		for code := range c.catalogue {
			if _, counted := c.xid[d.uuid][code]; !counted {
				c.xid[d.uuid][code] = 0
			}
		}
	}
	c.xidMu.Unlock()
	stop := c.watchXID(devices)
	c.mu.Lock()
	c.devices, c.driver, c.ready, c.stopWatch = devices, driver, true, stop
	c.mu.Unlock()
	return nil
}

func (c *Collector) enumerate() ([]device, string, error) {
	driver, r := c.lib.SystemGetDriverVersion()
	if r != nvml.SUCCESS {
		return nil, "", fmt.Errorf("driver version: %w", r)
	}
	n, r := c.lib.DeviceGetCount()
	if r != nvml.SUCCESS {
		return nil, "", fmt.Errorf("count GPUs: %w", r)
	}
	devices := make([]device, 0, n)
	for i := range n {
		h, r := c.lib.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			return nil, "", fmt.Errorf("GPU %d: %w", i, r)
		}
		d := device{dev: h, index: strconv.Itoa(i)}
		if d.uuid, r = h.GetUUID(); r != nvml.SUCCESS {
			return nil, "", fmt.Errorf("GPU %d uuid: %w", i, r)
		}
		d.name, _ = h.GetName()
		if pci, r := h.GetPciInfo(); r == nvml.SUCCESS {
			d.pciBusID = strings.ToLower(cString(pci.BusId[:]))
		}
		devices = append(devices, d)
	}
	return devices, driver, nil
}

// nvlinkErrors are the NVLink error counters, summed over the GPU's
// links, that a scrape reads as field values.
var nvlinkErrors = []struct {
	field uint32
	name  string
}{
	{nvml.FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL, "crc_flit"},
	{nvml.FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL, "crc_data"},
	{nvml.FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL, "replay"},
	{nvml.FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL, "recovery"},
}

// retirementCauses are the causes a retired page is counted by.
var retirementCauses = []struct {
	c    nvml.PageRetirementCause
	name string
}{
	{nvml.PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, "single_bit_ecc"},
	{nvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR, "double_bit_ecc"},
}

// fields are the NVML field values a scrape reads, in one call: the
// memory's temperature (NVML gives it only as a field) and nvlinkErrors.
var fields = func() []uint32 {
	ids := []uint32{nvml.FI_DEV_MEMORY_TEMP}
	for _, e := range nvlinkErrors {
		ids = append(ids, e.field)
	}
	return ids
}()

// fieldValues reads ids in one NVML call and returns those the GPU
// supports, by field ID.
func fieldValues(dev Device, ids []uint32) (map[uint32]float64, error) {
	v := make([]nvml.FieldValue, len(ids))
	for i, id := range ids {
		v[i].FieldId = id
	}
	if _, _, err := read(struct{}{}, dev.GetFieldValues(v)); err != nil {
		return nil, err
	}
	out := map[uint32]float64{}
	var errs []error
	for _, f := range v {
		if _, ok, err := read(struct{}{}, nvml.Return(f.NvmlReturn)); !ok {
			if err != nil {
				errs = append(errs, fmt.Errorf("field %d: %w", f.FieldId, err))
			}
			continue
		}
		b := f.Value
		switch nvml.ValueType(f.ValueType) {
		case nvml.VALUE_TYPE_DOUBLE:
			out[f.FieldId] = math.Float64frombits(binary.LittleEndian.Uint64(b[:]))
		case nvml.VALUE_TYPE_UNSIGNED_INT:
			out[f.FieldId] = float64(binary.LittleEndian.Uint32(b[:]))
		case nvml.VALUE_TYPE_SIGNED_INT:
			out[f.FieldId] = float64(int32(binary.LittleEndian.Uint32(b[:])))
		case nvml.VALUE_TYPE_UNSIGNED_LONG, nvml.VALUE_TYPE_UNSIGNED_LONG_LONG:
			out[f.FieldId] = float64(binary.LittleEndian.Uint64(b[:]))
		case nvml.VALUE_TYPE_SIGNED_LONG_LONG:
			out[f.FieldId] = float64(int64(binary.LittleEndian.Uint64(b[:])))
		default:
			errs = append(errs, fmt.Errorf("field %d: value of type %d", f.FieldId, f.ValueType))
		}
	}
	return out, errors.Join(errs...)
}

// attribute reports the GPU's processes and the memory they hold by the
// container they run in ("" for the host's own).
func (c *Collector) attribute(procs []nvml.ProcessInfo, gauge func(*prometheus.Desc, float64, ...string)) {
	type use struct {
		procs  int
		memory uint64
	}
	by := map[string]*use{}
	for _, p := range procs {
		name := ""
		if c.container != nil {
			name = c.container(p.Pid)
		}
		u := by[name]
		if u == nil {
			u = &use{}
			by[name] = u
		}
		u.procs++
		u.memory += p.UsedGpuMemory
	}
	for name, u := range by {
		gauge(c.d.containerProcs, float64(u.procs), name)
		gauge(c.d.containerMemory, float64(u.memory), name)
	}
}

// kernelXID counts an XID error the kernel log reported, against the GPU
// at its PCI address.
func (c *Collector) kernelXID(r xid.Record) {
	uuid := ""
	c.mu.Lock()
	for _, d := range c.devices {
		if pci, ok := xid.PCIOf(d.pciBusID); ok && pci == r.PCI {
			uuid = d.uuid
		}
	}
	c.mu.Unlock()
	c.countXID(uuid, r.Code, xid.SourceKernelLog, r.PCI)
}

// countXID counts an XID error on the GPU uuid that source reported,
// unless the other source reported it already.
func (c *Collector) countXID(uuid string, code uint64, source, pci string) {
	gpu := uuid
	if gpu == "" {
		gpu = "pci:" + pci
	}
	if !c.dedup.Count(gpu, code, source, c.now()) {
		return
	}
	c.xidMu.Lock()
	if c.xid[uuid] == nil {
		c.xid[uuid] = map[uint64]uint64{}
	}
	c.xid[uuid][code]++
	c.xidMu.Unlock()
	c.logger.Warn("GPU XID error", "uuid", uuid, "pci", pci, "xid", code, "action", c.catalogue.Action(code), "from", source)
}

// shutdown stops the XID watch and shuts NVML down. Its NVML calls are
// made without holding mu.
func (c *Collector) shutdown() {
	c.mu.Lock()
	stop, ready := c.stopWatch, c.ready
	c.stopWatch, c.ready, c.devices = nil, false, nil
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	if ready {
		c.lib.Shutdown()
	}
}

// watchXID counts XID errors from an NVML event set in the background,
// until the returned stop function is called.
func (c *Collector) watchXID(devices []device) func() {
	set, r := c.lib.EventSetCreate()
	if r != nvml.SUCCESS {
		c.logger.Warn("cannot watch XID errors", "nvml", r.Error())
		return nil
	}
	byUUID := map[string]bool{}
	for _, d := range devices {
		if types, r := d.dev.GetSupportedEventTypes(); r == nvml.SUCCESS && types&nvml.EventTypeXidCriticalError == 0 {
			continue
		}
		if r := d.dev.RegisterEvents(nvml.EventTypeXidCriticalError, set); r != nvml.SUCCESS {
			c.logger.Warn("cannot watch XID errors of a GPU", "gpu", d.index, "nvml", r.Error())
			continue
		}
		byUUID[d.uuid] = true
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			default:
			}
			ev, r := set.Wait(500)
			switch {
			case r == nvml.ERROR_TIMEOUT:
				continue
			case r != nvml.SUCCESS:
				c.logger.Warn("XID watch ended", "nvml", r.Error())
				return
			case ev.EventType&nvml.EventTypeXidCriticalError == 0 || ev.Device == nil:
				continue
			}
			uuid, r := ev.Device.GetUUID()
			if r != nvml.SUCCESS || !byUUID[uuid] {
				continue
			}
			c.countXID(uuid, ev.EventData, xid.SourceNVML, "")
		}
	}()
	return func() {
		close(done)
		<-stopped
		set.Free()
	}
}

// read returns a getter's value, or ok=false when the device does not
// support it (the series is then left out). Other errors are returned.
func read[T any](v T, r nvml.Return) (T, bool, error) {
	switch r {
	case nvml.SUCCESS:
		return v, true, nil
	case nvml.ERROR_NOT_SUPPORTED:
		return v, false, nil
	}
	return v, false, r
}

// updateDevice reads one GPU, passing each series to emit.
func (c *Collector) updateDevice(emit func(prometheus.Metric), d device, driver string) error {
	var errs []error
	gauge := func(desc *prometheus.Desc, v float64, extra ...string) {
		emit(prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, append([]string{d.index, d.uuid}, extra...)...))
	}
	counter := func(desc *prometheus.Desc, v float64, extra ...string) {
		emit(prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, append([]string{d.index, d.uuid}, extra...)...))
	}
	note := func(what string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	dev := d.dev
	emit(prometheus.MustNewConstMetric(c.d.info, prometheus.GaugeValue, 1, d.index, d.uuid, d.name, driver, d.pciBusID))

	if u, ok, err := read(dev.GetUtilizationRates()); ok {
		gauge(c.d.util, float64(u.Gpu)/100)
		gauge(c.d.memUtil, float64(u.Memory)/100)
	} else {
		note("utilisation", err)
	}
	// Version 2 separates what the driver reserves from what processes use,
	// as nvidia-smi shows it; older drivers only have version 1.
	switch m, ok, err := read(dev.GetMemoryInfo_v2()); {
	case ok:
		gauge(c.d.memUsed, float64(m.Used))
		gauge(c.d.memTotal, float64(m.Total))
		gauge(c.d.memReserved, float64(m.Reserved))
	case err == nil:
		if m, ok, err := read(dev.GetMemoryInfo()); ok {
			gauge(c.d.memUsed, float64(m.Used))
			gauge(c.d.memTotal, float64(m.Total))
		} else {
			note("memory", err)
		}
	default:
		note("memory", err)
	}
	if t, ok, err := read(dev.GetTemperature(nvml.TEMPERATURE_GPU)); ok {
		gauge(c.d.temp, float64(t))
	} else {
		note("temperature", err)
	}
	values, err := fieldValues(dev, fields)
	note("field values", err)
	if t, ok := values[nvml.FI_DEV_MEMORY_TEMP]; ok {
		gauge(c.d.memTemp, t)
	}
	for _, e := range nvlinkErrors {
		if n, ok := values[e.field]; ok {
			counter(c.d.nvlinkErrors, n, e.name)
		}
	}
	for _, th := range thresholds {
		if t, ok, err := read(dev.GetTemperatureThreshold(th.t)); ok {
			gauge(c.d.tempThreshold, float64(t), th.name)
		} else {
			note("temperature threshold "+th.name, err)
		}
	}
	// The margin is NVML's since driver 525: an older one lacks the call.
	if m, r := dev.GetMarginTemperature(); r == nvml.SUCCESS {
		gauge(c.d.tempMargin, float64(m.MarginTemperature))
	} else if r != nvml.ERROR_NOT_SUPPORTED && r != nvml.ERROR_FUNCTION_NOT_FOUND {
		note("temperature margin", r)
	}
	if p, ok, err := read(dev.GetPowerUsage()); ok {
		gauge(c.d.power, float64(p)/1000)
	} else {
		note("power", err)
	}
	if p, ok, err := read(dev.GetEnforcedPowerLimit()); ok {
		gauge(c.d.powerLimit, float64(p)/1000)
	} else {
		note("power limit", err)
	}
	if e, ok, err := read(dev.GetTotalEnergyConsumption()); ok {
		counter(c.d.energy, float64(e)/1000)
	} else {
		note("energy", err)
	}
	if f, ok, err := read(dev.GetClockInfo(nvml.CLOCK_SM)); ok {
		gauge(c.d.smClock, float64(f)*1e6)
	} else {
		note("SM clock", err)
	}
	if reasons, ok, err := read(dev.GetCurrentClocksEventReasons()); ok {
		supported, known, _ := read(dev.GetSupportedClocksEventReasons())
		for _, cr := range clockEventReasons {
			if known && supported&cr.bit == 0 {
				continue
			}
			active := 0.0
			if reasons&cr.bit != 0 {
				active = 1
			}
			gauge(c.d.clockEvent, active, cr.name)
		}
	} else {
		note("clock event reasons", err)
	}
	for _, ecc := range []struct {
		t    nvml.MemoryErrorType
		name string
	}{{nvml.MEMORY_ERROR_TYPE_CORRECTED, "corrected"}, {nvml.MEMORY_ERROR_TYPE_UNCORRECTED, "uncorrected"}} {
		if n, ok, err := read(dev.GetTotalEccErrors(ecc.t, nvml.VOLATILE_ECC)); ok {
			counter(c.d.ecc, float64(n), ecc.name)
		} else {
			note("ECC "+ecc.name, err)
		}
	}
	if n, ok, err := read(dev.GetPcieReplayCounter()); ok {
		counter(c.d.pcieReplay, float64(n))
	} else {
		note("PCIe replay counter", err)
	}
	if corr, unc, pending, failed, r := dev.GetRemappedRows(); r == nvml.SUCCESS {
		gauge(c.d.remapped, float64(corr), "correctable")
		gauge(c.d.remapped, float64(unc), "uncorrectable")
		gauge(c.d.remapPending, boolFloat(pending))
		gauge(c.d.remapFailed, boolFloat(failed))
	} else if r != nvml.ERROR_NOT_SUPPORTED {
		note("remapped rows", r)
	}
	// Page retirement is pre-Ampere's answer to bad memory (an A100 or an
	// H100 remaps rows instead, and answers "not supported").
	for _, cause := range retirementCauses {
		if pages, ok, err := read(dev.GetRetiredPages(cause.c)); ok {
			gauge(c.d.retiredPages, float64(len(pages)), cause.name)
		} else {
			note("retired pages "+cause.name, err)
		}
	}
	if st, ok, err := read(dev.GetRetiredPagesPendingStatus()); ok {
		gauge(c.d.retiredPending, boolFloat(st == nvml.FEATURE_ENABLED))
	} else {
		note("retired pages pending", err)
	}
	if ps, ok, err := read(dev.GetPerformanceState()); ok {
		gauge(c.d.pstate, float64(ps))
	} else {
		note("performance state", err)
	}
	if procs, ok, err := read(dev.GetComputeRunningProcesses()); ok {
		gauge(c.d.procs, float64(len(procs)))
		c.attribute(procs, gauge)
	} else {
		note("compute processes", err)
	}
	if f, ok, err := read(dev.GetFanSpeed()); ok {
		gauge(c.d.fan, float64(f)/100)
	} else {
		note("fan speed", err)
	}
	return errors.Join(errs...)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// cString converts NVML's NUL-terminated C string.
func cString(b []int8) string {
	var s strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		s.WriteByte(byte(c))
	}
	return s.String()
}

type descs struct {
	up, info, util, memUtil, memUsed, memTotal, memReserved, temp, tempThreshold, power, powerLimit,
	energy, smClock, clockEvent, ecc, remapped, remapPending, remapFailed, pstate, procs, fan, xid *prometheus.Desc
	devices, pcieReplay, containerProcs, containerMemory, memTemp, nvlinkErrors, retiredPages, retiredPending, tempMargin *prometheus.Desc
}

func newDescs() descs {
	l := []string{"gpu", "uuid"}
	d := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append(append([]string{}, l...), extra...), nil)
	}
	return descs{
		up:          d("selfheal_gpu_up", "Whether the GPU answered NVML within the scrape's timeout (1), or did not, is still answering an earlier scrape, or is lost (0)."),
		info:        d("selfheal_gpu_info", "GPU identity; always 1.", "name", "driver_version", "pci_bus_id"),
		util:        d("selfheal_gpu_utilization_ratio", "Fraction of the last sample period in which a kernel ran on the GPU."),
		memUtil:     d("selfheal_gpu_memory_utilization_ratio", "Fraction of the last sample period in which device memory was read or written."),
		memUsed:     d("selfheal_gpu_memory_used_bytes", "Device memory allocated by processes."),
		memTotal:    d("selfheal_gpu_memory_total_bytes", "Device memory in all."),
		memReserved: d("selfheal_gpu_memory_reserved_bytes", "Device memory reserved by the driver and firmware."),
		temp:        d("selfheal_gpu_temperature_celsius", "GPU core temperature."),
		memTemp:     d("selfheal_gpu_memory_temperature_celsius", "Device memory (HBM) temperature; absent where NVML gives none."),
		tempMargin: d("selfheal_gpu_temperature_margin_celsius",
			"How far the GPU is below the temperature at which the driver starts to slow it (nvidia-smi's T.Limit); negative above it. Absent where NVML gives none."),
		tempThreshold: d("selfheal_gpu_temperature_threshold_celsius", "Temperature at which the GPU slows down, shuts down, or reaches its maximum.", "threshold"),
		power:         d("selfheal_gpu_power_watts", "Power drawn by the board."),
		powerLimit:    d("selfheal_gpu_power_limit_watts", "Power limit the driver enforces now."),
		energy:        d("selfheal_gpu_energy_joules_total", "Energy used since the driver loaded."),
		smClock:       d("selfheal_gpu_sm_clock_hertz", "Streaming multiprocessor clock."),
		clockEvent:    d("selfheal_gpu_clock_event_active", "Whether a reason is holding the clocks down now (1) or not (0).", "reason"),
		ecc:           d("selfheal_gpu_ecc_errors_total", "ECC memory errors since the driver loaded (volatile counters).", "type"),
		nvlinkErrors:  d("selfheal_gpu_nvlink_errors_total", "NVLink errors since the driver loaded, summed over the GPU's links, by type (crc_flit, crc_data, replay, recovery); absent on a GPU without NVLink.", "type"),
		pcieReplay:    d("selfheal_gpu_pcie_replay_total", "PCIe replays (packets the link had to send again) since the driver loaded: a count that keeps rising is a failing link, riser or slot."),
		remapped:      d("selfheal_gpu_remapped_rows", "Memory rows remapped, by the cause.", "cause"),
		remapPending:  d("selfheal_gpu_row_remap_pending", "Whether a row remap waits for a GPU reset (1) or not (0)."),
		remapFailed:   d("selfheal_gpu_row_remap_failed", "Whether a row remap has failed (1) or not (0)."),
		retiredPages:  d("selfheal_gpu_retired_pages", "Device memory pages retired, by the cause (GPUs before Ampere; later ones remap rows).", "cause"),
		retiredPending: d("selfheal_gpu_retired_pages_pending",
			"Whether a retired page waits for a GPU reset or reboot to be taken out of use (1) or not (0)."),
		pstate: d("selfheal_gpu_performance_state", "Performance state: 0 is the highest, 15 the lowest."),
		procs:  d("selfheal_gpu_compute_processes", "Processes with a compute context on the GPU."),
		containerProcs: d("selfheal_gpu_container_processes",
			"Processes with a compute context on the GPU, by the container they run in (empty: the host's own, or a container the docker collector does not report).", "container"),
		containerMemory: d("selfheal_gpu_container_memory_used_bytes",
			"Device memory the GPU's processes hold, by the container they run in (empty as for selfheal_gpu_container_processes).", "container"),
		fan: d("selfheal_gpu_fan_speed_ratio", "Intended fan speed, as a fraction of the maximum."),
		devices: prometheus.NewDesc("selfheal_gpu_devices",
			"GPUs NVML listed at its last initialisation (again after a GPU was lost): fewer than before means a GPU is gone.", nil, nil),
		xid: d("selfheal_gpu_xid_errors_total", "XID errors seen since selfheal started (NVML's events and the kernel log, each error once), by XID code and the action the XID catalogue gives it; gpu and uuid are empty for a GPU NVML never listed.", "xid", "action"),
	}
}
