package xid

import (
	"sync"
	"time"
)

// Sources of XID errors.
const (
	SourceNVML      = "nvml"
	SourceKernelLog = "kernel_log"
)

// DedupWindow is how close in time one XID code on one GPU, reported by
// NVML's events and by the kernel log, must be to be one error: the driver
// raises both for each error it logs.
const DedupWindow = 5 * time.Second

// Dedup counts each XID error once whichever sources report it.
type Dedup struct {
	mu sync.Mutex
	// pending are the errors one source reported that the other has not
	// yet: by GPU, code and source, the times not yet matched.
	pending map[key][]time.Time
}

type key struct {
	gpu    string
	code   uint64
	source string
}

// Count reports whether an XID error with code on gpu, reported by source
// at the time at, is a new error (true), or one the other source already
// reported within DedupWindow (false, and that report is matched).
func (d *Dedup) Count(gpu string, code uint64, source string, at time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pending == nil {
		d.pending = map[key][]time.Time{}
	}
	other := key{gpu, code, SourceNVML}
	if source == SourceNVML {
		other.source = SourceKernelLog
	}
	times := d.pending[other]
	for len(times) > 0 && at.Sub(times[0]) > DedupWindow {
		times = times[1:] // too old to be this one
	}
	if len(times) > 0 {
		d.pending[other] = times[1:]
		return false
	}
	d.pending[other] = times
	own := key{gpu, code, source}
	mine := d.pending[own]
	for len(mine) > 0 && at.Sub(mine[0]) > DedupWindow {
		mine = mine[1:] // a source alone: nothing will match these now
	}
	d.pending[own] = append(mine, at)
	return true
}
