package xid

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultKernelLog is where the kernel's log is read: /dev/kmsg, one
// record per read, as journald and dmesg read it.
const DefaultKernelLog = "/dev/kmsg"

// Record is one XID error as the driver logged it.
type Record struct {
	// PCI is the GPU's PCI address, domain:bus:device in lower-case hex
	// ("0000:3b:00"), as the driver names it; see PCIOf for NVML's form.
	PCI     string
	Code    uint64
	Message string // the rest of the line: process, and what happened
}

// The driver's line, after whatever prefix the reader adds (a /dev/kmsg
// record's "level,seq,usec,flags;", dmesg's "[ 12.345678] "):
//
//	NVRM: Xid (PCI:0000:3b:00): 79, pid=2071, name=python3, GPU has fallen off the bus.
var xidLine = regexp.MustCompile(`NVRM: Xid \(PCI:([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+)(?:\.[0-9A-Fa-f]+)?\): (\d+),\s*(.*)$`)

// ParseLine returns the XID error a kernel-log line reports, if it reports
// one.
func ParseLine(line string) (Record, bool) {
	m := xidLine.FindStringSubmatch(strings.TrimRight(line, "\r\n"))
	if m == nil {
		return Record{}, false
	}
	code, err := strconv.ParseUint(m[2], 10, 32)
	if err != nil {
		return Record{}, false
	}
	pci, ok := PCIOf(m[1])
	if !ok {
		return Record{}, false
	}
	return Record{PCI: pci, Code: code, Message: m[3]}, true
}

// PCIOf puts a PCI address in the kernel log's form, domain:bus:device
// ("0000:3b:00"), from either that form or NVML's bus ID
// ("00000000:3B:00.0").
func PCIOf(addr string) (string, bool) {
	addr, _, _ = strings.Cut(strings.ToLower(strings.TrimSpace(addr)), ".")
	parts := strings.Split(addr, ":")
	if len(parts) != 3 {
		return "", false
	}
	var n [3]uint64
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 16, 32)
		if err != nil {
			return "", false
		}
		n[i] = v
	}
	return fmt.Sprintf("%04x:%02x:%02x", n[0], n[1], n[2]), true
}

// KernelLog is the kernel's log, opened at its end.
type KernelLog struct{ f *os.File }

// OpenKernelLog opens the kernel log at path at its end: what was logged
// before is not counted again. path may be /dev/kmsg, or a file another
// process appends to (a copy of the log; a test's fixture), which is read
// as it grows.
func OpenKernelLog(path string) (*KernelLog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kernel log: %w", err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return nil, fmt.Errorf("kernel log %s: %w", path, err)
	}
	return &KernelLog{f: f}, nil
}

// Follow calls found for every XID error logged from now on, until ctx
// ends or the log cannot be read; then it closes the log.
func (l *KernelLog) Follow(ctx context.Context, found func(Record)) error {
	f := l.f
	// The read below blocks on /dev/kmsg until a record comes; closing
	// the file when ctx ends unblocks it.
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer func() {
		if stop() {
			f.Close()
		}
	}()
	buf := make([]byte, 64<<10) // a /dev/kmsg read must hold a whole record
	var partial []byte
	for {
		n, err := f.Read(buf)
		if ctx.Err() != nil {
			return nil
		}
		if n > 0 {
			partial = append(partial, buf[:n]...)
			for {
				i := bytes.IndexByte(partial, '\n')
				if i < 0 {
					break
				}
				if r, ok := ParseLine(string(partial[:i])); ok {
					found(r)
				}
				partial = partial[i+1:]
			}
			if len(partial) > len(buf) {
				partial = partial[:0] // no line is this long: not a log
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, syscall.EPIPE):
			// /dev/kmsg: records were overwritten before this reader got
			// to them; the next read returns the oldest one left.
		case errors.Is(err, io.EOF):
			// A plain file: wait for it to grow.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
		default:
			return fmt.Errorf("kernel log: %w", err)
		}
	}
}
